"""mmcv's compiled ops load and compute correctly on the CPU."""
import torch
from mmcv.ops import RoIAlign, nms
from torchvision.ops import nms as tv_nms
from torchvision.ops import roi_align as tv_roi_align


def _boxes(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * 50
    wh = torch.rand(n, 2, generator=gen) * 30 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_nms_matches_torchvision():
    boxes = _boxes(200, 0)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(1))
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    expected = tv_nms(boxes, scores, 0.5)
    assert 0 < len(keep) < 200
    assert torch.equal(keep.sort().values, expected.sort().values)
    torch.testing.assert_close(dets[:, 4], scores[keep])


def test_roi_align_matches_torchvision():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 3, 16, 16, generator=gen)
    rois = torch.cat([torch.tensor([[0.], [1.], [1.]]),
                      torch.tensor([[1., 1., 9., 12.], [0., 2., 15., 7.],
                                    [3.5, 3.5, 6.5, 8.25]])], dim=1)
    op = RoIAlign((5, 5), spatial_scale=1.0, sampling_ratio=2,
                  aligned=True)
    out = op(feats, rois)
    expected = tv_roi_align(feats, rois, (5, 5), spatial_scale=1.0,
                            sampling_ratio=2, aligned=True)
    assert out.shape == (3, 3, 5, 5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

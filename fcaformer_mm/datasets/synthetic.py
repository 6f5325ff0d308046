"""Small synthetic copies of ADE20K, COCO and ImageNet, on their real layouts.

The generators write datasets that the stock OpenMMLab dataset classes read
as they read the real ones (mmseg ``ADE20KDataset``, mmdet ``CocoDataset``,
mmpretrain ``ImageNet``), so the repository's configs run end to end on them
once their ``data_root`` points at the generated folder.

The data has structure that a small model learns in minutes: every object is
a filled polygon (circle, square, triangle, ...) on a smooth, noisy
background, and its class follows its shape *and* its colour (each shape
comes in more than one colour and each colour in more than one shape, so
neither cue alone is enough). Positions, sizes, rotations and shades are
random. The same ``seed`` gives the same bytes; image ``i`` of a split does
not depend on how many images the split has.

Only numpy and Pillow are needed. Every generator refuses to write into a
non-empty folder unless ``overwrite=True``, and even then replaces only what
an earlier run of a generator wrote there (listed in the manifest
:data:`MANIFEST_NAME`); it never deletes or overwrites anything else.

Example:
    >>> from fcaformer_mm.datasets.synthetic import make_ade20k
    >>> root = make_ade20k('data/ade/ADEChallengeData2016')  # doctest: +SKIP
"""
import abc
import json
import math
import os
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np
from PIL import Image

PathLike = Union[str, os.PathLike]

#: File, written in the dataset root, that lists what a generator wrote.
MANIFEST_NAME = '.fcaformer_mm_synthetic.json'

#: JPEG quality of the generated images.
JPEG_QUALITY = 90

# Base colours (RGB) of the objects; each object gets a random shade of its
# colour, far from the greyish background.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    'red': (205, 40, 40),
    'green': (40, 165, 55),
    'blue': (40, 70, 210),
    'yellow': (225, 200, 35),
    'magenta': (185, 55, 185),
    'cyan': (40, 185, 195),
}

#: ADE20K: PNG label value (1-based; 0 = other, ignored) -> (class name,
#: shape, colour). Label 1 ('wall') is the background. After
#: ``reduce_zero_label`` the training labels are ``value - 1``: wall 0,
#: building 1, sky 2, tree 4, person 12, car 20, and 255 for the 0 pixels.
ADE20K_CLASSES: Dict[int, Tuple[str, Optional[str], Optional[str]]] = {
    1: ('wall', None, None),
    2: ('building', 'square', 'blue'),
    3: ('sky', 'circle', 'blue'),
    5: ('tree', 'triangle', 'green'),
    13: ('person', 'triangle', 'red'),
    21: ('car', 'square', 'red'),
}

#: COCO: the category ids drawn -> (name, shape, colour).
COCO_DRAWN: Dict[int, Tuple[str, str, str]] = {
    1: ('person', 'circle', 'red'),
    3: ('car', 'square', 'blue'),
    6: ('bus', 'circle', 'blue'),
    18: ('dog', 'triangle', 'red'),
}

#: The 80 COCO categories: (id, name, supercategory), as in
#: ``instances_*2017.json`` (names as mmdet's ``CocoDataset``).
COCO_CATEGORIES: List[Tuple[int, str, str]] = [
    (1, 'person', 'person'), (2, 'bicycle', 'vehicle'),
    (3, 'car', 'vehicle'), (4, 'motorcycle', 'vehicle'),
    (5, 'airplane', 'vehicle'), (6, 'bus', 'vehicle'),
    (7, 'train', 'vehicle'), (8, 'truck', 'vehicle'),
    (9, 'boat', 'vehicle'), (10, 'traffic light', 'outdoor'),
    (11, 'fire hydrant', 'outdoor'), (13, 'stop sign', 'outdoor'),
    (14, 'parking meter', 'outdoor'), (15, 'bench', 'outdoor'),
    (16, 'bird', 'animal'), (17, 'cat', 'animal'), (18, 'dog', 'animal'),
    (19, 'horse', 'animal'), (20, 'sheep', 'animal'), (21, 'cow', 'animal'),
    (22, 'elephant', 'animal'), (23, 'bear', 'animal'),
    (24, 'zebra', 'animal'), (25, 'giraffe', 'animal'),
    (27, 'backpack', 'accessory'), (28, 'umbrella', 'accessory'),
    (31, 'handbag', 'accessory'), (32, 'tie', 'accessory'),
    (33, 'suitcase', 'accessory'), (34, 'frisbee', 'sports'),
    (35, 'skis', 'sports'), (36, 'snowboard', 'sports'),
    (37, 'sports ball', 'sports'), (38, 'kite', 'sports'),
    (39, 'baseball bat', 'sports'), (40, 'baseball glove', 'sports'),
    (41, 'skateboard', 'sports'), (42, 'surfboard', 'sports'),
    (43, 'tennis racket', 'sports'), (44, 'bottle', 'kitchen'),
    (46, 'wine glass', 'kitchen'), (47, 'cup', 'kitchen'),
    (48, 'fork', 'kitchen'), (49, 'knife', 'kitchen'),
    (50, 'spoon', 'kitchen'), (51, 'bowl', 'kitchen'),
    (52, 'banana', 'food'), (53, 'apple', 'food'),
    (54, 'sandwich', 'food'), (55, 'orange', 'food'),
    (56, 'broccoli', 'food'), (57, 'carrot', 'food'),
    (58, 'hot dog', 'food'), (59, 'pizza', 'food'), (60, 'donut', 'food'),
    (61, 'cake', 'food'), (62, 'chair', 'furniture'),
    (63, 'couch', 'furniture'), (64, 'potted plant', 'furniture'),
    (65, 'bed', 'furniture'), (67, 'dining table', 'furniture'),
    (70, 'toilet', 'furniture'), (72, 'tv', 'electronic'),
    (73, 'laptop', 'electronic'), (74, 'mouse', 'electronic'),
    (75, 'remote', 'electronic'), (76, 'keyboard', 'electronic'),
    (77, 'cell phone', 'electronic'), (78, 'microwave', 'appliance'),
    (79, 'oven', 'appliance'), (80, 'toaster', 'appliance'),
    (81, 'sink', 'appliance'), (82, 'refrigerator', 'appliance'),
    (84, 'book', 'indoor'), (85, 'clock', 'indoor'), (86, 'vase', 'indoor'),
    (87, 'scissors', 'indoor'), (88, 'teddy bear', 'indoor'),
    (89, 'hair drier', 'indoor'), (90, 'toothbrush', 'indoor'),
]

#: ImageNet: the first classes of ImageNet-1k in its usual (sorted wnid)
#: order, so that label ``i`` is also the real ImageNet-1k label of the wnid,
#: with the pattern drawn for each: (wnid, name, shape, colour).
IMAGENET_CLASSES: List[Tuple[str, str, str, str]] = [
    ('n01440764', 'tench', 'circle', 'red'),
    ('n01443537', 'goldfish', 'circle', 'blue'),
    ('n01484850', 'great white shark', 'square', 'red'),
    ('n01491361', 'tiger shark', 'square', 'blue'),
    ('n01494475', 'hammerhead', 'triangle', 'green'),
    ('n01496331', 'electric ray', 'triangle', 'yellow'),
    ('n01498041', 'stingray', 'diamond', 'green'),
    ('n01514668', 'cock', 'diamond', 'yellow'),
    ('n01514859', 'hen', 'star', 'magenta'),
    ('n01518878', 'ostrich', 'star', 'cyan'),
]

Size = Tuple[int, int]
Polygon = np.ndarray  # (N, 2) float array of (x, y) vertices


# --------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------
def _regular(n: int, phase: float = 0.) -> np.ndarray:
    a = phase + np.arange(n) * (2 * math.pi / n)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _star() -> np.ndarray:
    pts = _regular(10, -math.pi / 2)
    pts[1::2] *= 0.45
    return pts


# Unit shapes: vertices around (0, 0) inside the unit circle, y downwards.
_UNIT_SHAPES: Dict[str, Callable[[], np.ndarray]] = {
    'circle': lambda: _regular(32),
    'square': lambda: _regular(4, math.pi / 4),
    'triangle': lambda: _regular(3, -math.pi / 2),
    'diamond': lambda: _regular(4) * np.array([0.75, 1.0]),
    'star': _star,
    'hexagon': lambda: _regular(6),
}


def shape_polygon(shape: str, cx: float, cy: float, radius: float,
                  angle: float = 0.) -> Polygon:
    """Return the vertices of a shape, rounded to 1/100 pixel.

    Coordinates are continuous image coordinates: pixel ``(x, y)`` covers
    ``[x, x + 1) x [y, y + 1)``, as in COCO.

    Args:
        shape (str): One of ``'circle'``, ``'square'``, ``'triangle'``,
            ``'diamond'``, ``'star'``, ``'hexagon'``.
        cx (float): Centre x.
        cy (float): Centre y.
        radius (float): Radius of the circumscribed circle.
        angle (float): Rotation in radians. Defaults to 0.

    Returns:
        np.ndarray: ``(N, 2)`` array of ``(x, y)`` vertices.
    """
    pts = _UNIT_SHAPES[shape]()
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    return np.round(pts * radius + np.array([cx, cy]), 2)


def polygon_mask(poly: Polygon, height: int, width: int) -> np.ndarray:
    """Rasterise a polygon: the pixels whose centre lies inside it.

    Args:
        poly (np.ndarray): ``(N, 2)`` vertices ``(x, y)``.
        height (int): Image height.
        width (int): Image width.

    Returns:
        np.ndarray: Boolean mask of shape ``(height, width)``.
    """
    mask = np.zeros((height, width), dtype=bool)
    x0 = max(int(math.floor(poly[:, 0].min())) - 1, 0)
    x1 = min(int(math.ceil(poly[:, 0].max())) + 1, width)
    y0 = max(int(math.floor(poly[:, 1].min())) - 1, 0)
    y1 = min(int(math.ceil(poly[:, 1].max())) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return mask
    py, px = np.mgrid[y0:y1, x0:x1] + 0.5
    inside = np.zeros(px.shape, dtype=bool)
    xs, ys = poly[:, 0], poly[:, 1]
    for (xa, ya), (xb, yb) in zip(zip(xs, ys),
                                  zip(np.roll(xs, -1), np.roll(ys, -1))):
        if ya == yb:
            continue
        crosses = (ya > py) != (yb > py)
        x_at = xa + (py - ya) * ((xb - xa) / (yb - ya))
        inside ^= crosses & (px < x_at)
    mask[y0:y1, x0:x1] = inside
    return mask


def polygon_area(poly: Polygon) -> float:
    """Return the area of a simple polygon (shoelace formula).

    Args:
        poly (np.ndarray): ``(N, 2)`` vertices ``(x, y)``.

    Returns:
        float: The area in square pixels.
    """
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
                 / 2)


def _background(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A smooth greyish texture with pixel noise, float (H, W, 3)."""
    h, w = size
    base = np.array([140., 132., 120.]) + rng.uniform(-20, 20, 3)
    img = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):
        coarse = rng.uniform(-18, 18, (5, 5)).astype(np.float32)
        smooth = Image.fromarray(coarse, mode='F').resize(
            (w, h), Image.BILINEAR)
        img[..., c] = base[c] + np.asarray(smooth)
    img += rng.normal(0, 7, (h, w, 1)).astype(np.float32)
    return img


def _paint(img: np.ndarray, mask: np.ndarray, colour: str,
           rng: np.random.Generator) -> None:
    """Fill ``mask`` with a random shade of ``colour`` plus noise."""
    shade = np.array(COLOURS[colour], dtype=np.float32) + rng.uniform(
        -20, 20, 3).astype(np.float32)
    n = int(mask.sum())
    img[mask] = shade + rng.normal(0, 6, (n, 3)).astype(np.float32)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _place(rng: np.random.Generator, size: Size, count: int,
           radius_range: Tuple[float, float]) -> List[Tuple[float, float,
                                                            float]]:
    """Random non-overlapping circles ``(cx, cy, r)`` inside the image."""
    h, w = size
    lo, hi = (f * min(h, w) for f in radius_range)
    placed: List[Tuple[float, float, float]] = []
    for _ in range(count * 30):
        if len(placed) == count:
            break
        r = rng.uniform(lo, hi)
        if 2 * r + 4 > min(h, w):
            continue
        cx = rng.uniform(r + 2, w - r - 2)
        cy = rng.uniform(r + 2, h - r - 2)
        if all(math.hypot(cx - x, cy - y) > r + q + 3
               for x, y, q in placed):
            placed.append((cx, cy, r))
    return placed


def _sample_rng(seed: int, split: int, index: int) -> np.random.Generator:
    # One stream per image: image i does not depend on the split's length.
    return np.random.default_rng([seed, split, index])


def _save_jpeg(img: np.ndarray, path: Path) -> None:
    Image.fromarray(_to_uint8(img), mode='RGB').save(
        path, format='JPEG', quality=JPEG_QUALITY)


def _check_size(size: Sequence[int], minimum: int = 32) -> Size:
    if len(size) != 2 or min(size) < minimum:
        raise ValueError(f'size must be (height, width), each >= {minimum}; '
                         f'got {tuple(size)}')
    return int(size[0]), int(size[1])


def _check_count(name: str, value: int, minimum: int = 0) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, '
                         f'got {value!r}')
    return int(value)


# --------------------------------------------------------------------------
# Safe writing
# --------------------------------------------------------------------------
class _Writer:
    """Prepares a dataset root and records the files written into it.

    Args:
        root (str | os.PathLike): The dataset root.
        dataset (str): The dataset's name, for the manifest.
        owned_dirs (Sequence[str]): Folders (relative to ``root``) whose
            whole content the generator defines.
        owned_files (Sequence[str]): Single files the generator writes.
        overwrite (bool): Whether to replace a dataset that a generator
            wrote earlier.
        params (dict): The generator's arguments, for the manifest.
    """

    def __init__(self, root: PathLike, dataset: str,
                 owned_dirs: Sequence[str], owned_files: Sequence[str],
                 overwrite: bool, params: dict) -> None:
        self.root = Path(root)
        self.dataset = dataset
        self.params = params
        self.files: List[str] = []
        self._prepare(owned_dirs, owned_files, overwrite)

    def _prepare(self, owned_dirs: Sequence[str],
                 owned_files: Sequence[str], overwrite: bool) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise FileExistsError(f'{root} exists and is not a folder')
        if not root.exists() or not any(root.iterdir()):
            return
        if not overwrite:
            raise FileExistsError(
                f'{root} is not empty; nothing was written. Choose an empty '
                'or new folder, or pass overwrite=True (--overwrite on the '
                'command line) to replace a synthetic dataset made there '
                'earlier (only the files it made are replaced).')
        made = set(self._read_manifest())
        present = set()
        for rel in owned_dirs:
            folder = root / rel
            if folder.is_dir():
                for dirpath, _, names in os.walk(folder):
                    for name in names:
                        present.add(Path(dirpath, name).relative_to(
                            root).as_posix())
        present.update(rel for rel in owned_files if (root / rel).exists())
        foreign = sorted(present - made)
        if foreign:
            listed = ', '.join(foreign[:5])
            more = f' and {len(foreign) - 5} more' if len(foreign) > 5 else ''
            raise FileExistsError(
                f'{root} holds files that no synthetic-data generator made '
                f'({listed}{more}), where this generator would write; '
                'nothing was deleted or written. Choose another folder, or '
                'move those files away.')
        # Everything in the way was made by an earlier run: remove it.
        for rel in sorted(made):
            path = root / rel
            if path.is_file() or path.is_symlink():
                path.unlink()
        for rel in owned_dirs:
            for dirpath, _, _ in sorted(os.walk(root / rel), reverse=True):
                if not any(Path(dirpath).iterdir()):
                    Path(dirpath).rmdir()
        (root / MANIFEST_NAME).unlink(missing_ok=True)

    def _read_manifest(self) -> List[str]:
        path = self.root / MANIFEST_NAME
        if not path.is_file():
            return []
        try:
            files = json.loads(path.read_text())['files']
        except (ValueError, KeyError, TypeError):
            return []
        root = self.root.resolve()
        safe = []
        for rel in files:
            # Only paths inside the root: a manifest cannot delete elsewhere.
            if isinstance(rel, str) and (root / rel).resolve().is_relative_to(
                    root) and '..' not in Path(rel).parts:
                safe.append(Path(rel).as_posix())
        return safe

    def path(self, rel: str) -> Path:
        """Return the absolute path of ``rel``, creating its folder."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files.append(Path(rel).as_posix())
        return path

    def finish(self) -> Path:
        """Write the manifest and return the root."""
        manifest = dict(
            generator='fcaformer_mm.datasets.synthetic',
            dataset=self.dataset,
            params=self.params,
            files=sorted(self.files))
        (self.root / MANIFEST_NAME).write_text(
            json.dumps(manifest, indent=1) + '\n')
        return self.root


# --------------------------------------------------------------------------
# The shape every generator shares
# --------------------------------------------------------------------------
class _Split(NamedTuple):
    """One split of a dataset.

    Attributes:
        stream (int): Its random streams (0 training, 1 validation): sample
            ``i`` of the split draws from ``(seed, stream, i)``.
        name (str): Its name in the layout (``'training'``, ``'val2017'``).
        num (int): Its number of images.
    """
    stream: int
    name: str
    num: int


class _Generator(abc.ABC):
    """The part that the three generators share.

    :meth:`write` prepares the root (refusing what no generator wrote),
    writes every sample of the training and the validation split, each
    drawn from its own random stream, then the split's index file where
    the layout has one, and finally the manifest. A subclass names the
    dataset, its splits and the folders and files it owns, and says how one
    sample and one index are written.

    Args:
        size (tuple[int, int]): Image ``(height, width)``, checked.
        seed (int): The dataset seed.
        counts (Sequence[int]): Images of the training and the validation
            split, checked.
        params (dict): The generator's arguments, for the manifest.
    """

    #: The dataset's name in the manifest.
    dataset: str
    #: Names of the training and the validation split in the layout.
    split_names: Tuple[str, str]
    #: Folders (relative to the root) whose whole content the generator
    #: defines.
    owned_dirs: Tuple[str, ...] = ()
    #: Single files that the generator writes.
    owned_files: Tuple[str, ...] = ()

    def __init__(self, size: Size, seed: int, counts: Sequence[int],
                 params: dict) -> None:
        self.size = size
        self.seed = seed
        self.params = params
        self.splits = [
            _Split(stream, name, num)
            for stream, (name, num) in enumerate(zip(self.split_names,
                                                     counts))
        ]

    @abc.abstractmethod
    def write_sample(self, writer: _Writer, split: _Split,
                     index: int) -> Any:
        """Draw sample ``index`` of ``split`` and write its files.

        Returns:
            Any: What the split's index file needs of the sample.
        """

    def write_index(self, writer: _Writer, split: _Split,
                    records: List[Any]) -> None:
        """Write the index file of ``split`` from its samples' records.

        The default writes nothing: the layout's folders are the index.
        """

    def write(self, root: PathLike, overwrite: bool) -> Path:
        """Write the dataset into ``root`` and return ``root``."""
        writer = _Writer(root, self.dataset, self.owned_dirs,
                         self.owned_files, overwrite, self.params)
        for split in self.splits:
            records = [
                self.write_sample(writer, split, i) for i in range(split.num)
            ]
            self.write_index(writer, split, records)
        return writer.finish()


# --------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------
def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def ade20k_sample(seed: int, split: int, index: int,
                  size: Size) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one ADE20K-style sample.

    The background is 'wall' (PNG value 1); one to four shapes of the other
    classes of :data:`ADE20K_CLASSES` are drawn on it; a two-pixel band
    along each shape's outline is 0 ('other', ignored in training), as the
    unlabelled boundaries of real ADE20K annotations.

    Args:
        seed (int): The dataset seed.
        split (int): 0 for training, 1 for validation.
        index (int): The image's index in its split.
        size (tuple[int, int]): ``(height, width)``.

    Returns:
        tuple[np.ndarray, np.ndarray]: The ``uint8`` RGB image ``(H, W, 3)``
        and the ``uint8`` label map ``(H, W)``.
    """
    rng = _sample_rng(seed, split, index)
    h, w = size
    img = _background(rng, size)
    label = np.ones((h, w), dtype=np.uint8)
    values = [v for v, (_, shape, _) in ADE20K_CLASSES.items() if shape]
    count = int(rng.integers(1, 5))
    for cx, cy, r in _place(rng, size, count, (0.1, 0.25)):
        value = int(rng.choice(values))
        _, shape, colour = ADE20K_CLASSES[value]
        poly = shape_polygon(shape, cx, cy, r, rng.uniform(-0.3, 0.3))
        mask = polygon_mask(poly, h, w)
        _paint(img, mask, colour, rng)
        label[mask] = value
        label[_dilate(mask) & _dilate(~mask)] = 0
    return _to_uint8(img), label


class _ADE20K(_Generator):
    """``ADEChallengeData2016``: see :func:`make_ade20k`."""

    dataset = 'ade20k'
    split_names = ('training', 'validation')
    owned_dirs = ('images/training', 'images/validation',
                  'annotations/training', 'annotations/validation')

    def write_sample(self, writer: _Writer, split: _Split,
                     index: int) -> None:
        img, label = ade20k_sample(self.seed, split.stream, index, self.size)
        stem = 'ADE_train' if split.stream == 0 else 'ADE_val'
        name = f'{stem}_{index + 1:08d}'
        _save_jpeg(img, writer.path(f'images/{split.name}/{name}.jpg'))
        Image.fromarray(label, mode='L').save(
            writer.path(f'annotations/{split.name}/{name}.png'))


def make_ade20k(root: PathLike,
                num_train: int = 40,
                num_val: int = 10,
                size: Sequence[int] = (128, 128),
                seed: int = 0,
                overwrite: bool = False) -> Path:
    """Write a small synthetic ADE20K (``ADEChallengeData2016`` layout).

    ::

        root
        ├── images
        │   ├── training/ADE_train_00000001.jpg ...
        │   └── validation/ADE_val_00000001.jpg ...
        └── annotations
            ├── training/ADE_train_00000001.png ...
            └── validation/ADE_val_00000001.png ...

    Annotations are 8-bit ('L') PNGs with the ADE20K values: 0 = other
    (ignored), ``k`` = class ``k - 1`` of the 150 after mmseg's
    ``reduce_zero_label``. See :func:`ade20k_sample` for what is drawn.

    Args:
        root (str | os.PathLike): The dataset root, the folder that configs
            call ``data_root`` (``data/ade/ADEChallengeData2016``).
        num_train (int): Training images. Defaults to 40.
        num_val (int): Validation images. Defaults to 10.
        size (tuple[int, int]): Image ``(height, width)``. Defaults to
            ``(128, 128)``.
        seed (int): Random seed. Defaults to 0.
        overwrite (bool): Replace a synthetic dataset made earlier in
            ``root``. Defaults to False.

    Returns:
        pathlib.Path: ``root``.

    Raises:
        FileExistsError: If ``root`` is not empty and ``overwrite`` is
            False, or holds files that no generator made.
    """
    size = _check_size(size)
    num_train = _check_count('num_train', num_train)
    num_val = _check_count('num_val', num_val)
    return _ADE20K(
        size, seed, (num_train, num_val),
        dict(num_train=num_train, num_val=num_val, size=list(size),
             seed=seed)).write(root, overwrite)


# --------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------
def coco_sample(seed: int, split: int, index: int, size: Size,
                min_instances: int = 1) -> Tuple[np.ndarray, List[dict]]:
    """Draw one COCO-style sample.

    One to four non-overlapping objects of the categories of
    :data:`COCO_DRAWN`, each a filled polygon on a textured background.

    Args:
        seed (int): The dataset seed.
        split (int): 0 for train, 1 for val.
        index (int): The image's index in its split.
        size (tuple[int, int]): ``(height, width)``.
        min_instances (int): The fewest objects to draw. Defaults to 1.

    Returns:
        tuple[np.ndarray, list[dict]]: The ``uint8`` RGB image and, per
        object, ``category_id``, ``segmentation`` (one polygon), ``bbox``
        (x, y, w, h), ``area`` and ``iscrowd`` (0).
    """
    rng = _sample_rng(seed, split, index)
    h, w = size
    img = _background(rng, size)
    cat_ids = sorted(COCO_DRAWN)
    count = max(int(rng.integers(1, 5)), min_instances)
    anns = []
    for cx, cy, r in _place(rng, size, count, (0.1, 0.22)):
        cat_id = int(rng.choice(cat_ids))
        _, shape, colour = COCO_DRAWN[cat_id]
        poly = shape_polygon(shape, cx, cy, r, rng.uniform(-0.3, 0.3))
        _paint(img, polygon_mask(poly, h, w), colour, rng)
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        anns.append(dict(
            category_id=cat_id,
            segmentation=[[round(float(v), 2) for v in poly.ravel()]],
            area=round(polygon_area(poly), 2),
            bbox=[round(float(x0), 2), round(float(y0), 2),
                  round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            iscrowd=0))
    return _to_uint8(img), anns


class _COCO(_Generator):
    """COCO 2017 instances: see :func:`make_coco`."""

    dataset = 'coco'
    split_names = ('train2017', 'val2017')
    owned_dirs = ('train2017', 'val2017')
    owned_files = ('annotations/instances_train2017.json',
                   'annotations/instances_val2017.json')
    #: The id of the first image of each split.
    first_ids = (1, 100001)

    def write_sample(self, writer: _Writer, split: _Split,
                     index: int) -> Tuple[dict, List[dict]]:
        img_id = self.first_ids[split.stream] + index
        file_name = f'{img_id:012d}.jpg'
        img, anns = coco_sample(self.seed, split.stream, index, self.size,
                                min_instances=3 if index < 2 else 1)
        _save_jpeg(img, writer.path(f'{split.name}/{file_name}'))
        image = dict(id=img_id, file_name=file_name, height=self.size[0],
                     width=self.size[1], license=1)
        return image, anns

    def write_index(self, writer: _Writer, split: _Split,
                    records: List[Tuple[dict, List[dict]]]) -> None:
        images, annotations = [], []
        for image, anns in records:
            images.append(image)
            for ann in anns:
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=image['id'],
                         **ann))
        content = dict(
            info=dict(description='fcaformer_mm synthetic COCO-style data',
                      version='1.0', year=2017,
                      contributor='fcaformer_mm', date_created='2017/09/01'),
            licenses=[dict(id=1, name='CC0 1.0', url='')],
            images=images,
            annotations=annotations,
            categories=[dict(id=i, name=n, supercategory=s)
                        for i, n, s in COCO_CATEGORIES])
        writer.path(f'annotations/instances_{split.name}.json').write_text(
            json.dumps(content, separators=(',', ':')))


def make_coco(root: PathLike,
              num_train: int = 16,
              num_val: int = 8,
              size: Sequence[int] = (128, 160),
              seed: int = 0,
              overwrite: bool = False) -> Path:
    """Write a small synthetic COCO 2017 (instances).

    ::

        root
        ├── annotations
        │   ├── instances_train2017.json
        │   └── instances_val2017.json
        ├── train2017/000000000001.jpg ...
        └── val2017/000000100001.jpg ...

    The json files have the real format: ``images``, ``annotations``
    (polygon ``segmentation``, ``bbox`` x y w h, ``area``, ``iscrowd``) and
    all 80 ``categories`` with their real ids, so mmdet maps them to the
    usual 80 labels; objects of four categories are drawn (see
    :data:`COCO_DRAWN`). Every image has at least one object (mmdet's
    ``filter_empty_gt`` keeps them all); the first two of each split have
    at least three.

    Args:
        root (str | os.PathLike): The dataset root (``data/coco``).
        num_train (int): Training images. Defaults to 16.
        num_val (int): Validation images. Defaults to 8.
        size (tuple[int, int]): Image ``(height, width)``. Defaults to
            ``(128, 160)``.
        seed (int): Random seed. Defaults to 0.
        overwrite (bool): Replace a synthetic dataset made earlier in
            ``root``. Defaults to False.

    Returns:
        pathlib.Path: ``root``.

    Raises:
        FileExistsError: If ``root`` is not empty and ``overwrite`` is
            False, or holds files that no generator made.
    """
    size = _check_size(size)
    num_train = _check_count('num_train', num_train)
    num_val = _check_count('num_val', num_val)
    return _COCO(
        size, seed, (num_train, num_val),
        dict(num_train=num_train, num_val=num_val, size=list(size),
             seed=seed)).write(root, overwrite)


# --------------------------------------------------------------------------
# ImageNet
# --------------------------------------------------------------------------
def imagenet_sample(seed: int, split: int, index: int, label: int,
                    size: Size) -> np.ndarray:
    """Draw one ImageNet-style sample of class ``label``.

    One large shape of the class's shape and colour
    (:data:`IMAGENET_CLASSES`) at a random place, size and rotation.

    Args:
        seed (int): The dataset seed.
        split (int): 0 for train, 1 for val.
        index (int): The image's index in its split.
        label (int): The class index.
        size (tuple[int, int]): ``(height, width)``.

    Returns:
        np.ndarray: The ``uint8`` RGB image ``(H, W, 3)``.
    """
    rng = _sample_rng(seed, split, index)
    h, w = size
    img = _background(rng, size)
    _, _, shape, colour = IMAGENET_CLASSES[label]
    (cx, cy, r), = _place(rng, size, 1, (0.2, 0.4))
    poly = shape_polygon(shape, cx, cy, r, rng.uniform(-0.3, 0.3))
    _paint(img, polygon_mask(poly, h, w), colour, rng)
    return _to_uint8(img)


class _ImageNet(_Generator):
    """ImageNet-1k folders and meta lists: see :func:`make_imagenet`.

    Args as :class:`_Generator`, with ``num_classes``, ``per_class`` (the
    training and validation images per class) and ``with_meta`` instead of
    ``counts``.
    """

    dataset = 'imagenet'
    split_names = ('train', 'val')
    owned_dirs = ('train', 'val')
    owned_files = ('meta/train.txt', 'meta/val.txt')

    def __init__(self, size: Size, seed: int, num_classes: int,
                 per_class: Tuple[int, int], with_meta: bool,
                 params: dict) -> None:
        super().__init__(size, seed, [num_classes * n for n in per_class],
                         params)
        self.per_class = per_class
        self.with_meta = with_meta

    def write_sample(self, writer: _Writer, split: _Split,
                     index: int) -> str:
        # The split's images, class by class: image j of class ``label``.
        label, j = divmod(index, self.per_class[split.stream])
        wnid = IMAGENET_CLASSES[label][0]
        if split.stream == 0:
            file_name = f'{wnid}/{wnid}_{j + 1}.JPEG'
        else:
            file_name = f'{wnid}/ILSVRC2012_val_{index + 1:08d}.JPEG'
        img = imagenet_sample(self.seed, split.stream, index, label,
                              self.size)
        _save_jpeg(img, writer.path(f'{split.name}/{file_name}'))
        return f'{file_name} {label}\n'

    def write_index(self, writer: _Writer, split: _Split,
                    records: List[str]) -> None:
        if self.with_meta:
            writer.path(f'meta/{split.name}.txt').write_text(''.join(records))


def make_imagenet(root: PathLike,
                  num_classes: int = 4,
                  num_train_per_class: int = 16,
                  num_val_per_class: int = 4,
                  size: Sequence[int] = (64, 64),
                  seed: int = 0,
                  with_meta: bool = True,
                  overwrite: bool = False) -> Path:
    """Write a small synthetic ImageNet-1k.

    ::

        root
        ├── train/n01440764/n01440764_1.JPEG ...
        ├── val/n01440764/ILSVRC2012_val_00000001.JPEG ...
        └── meta (with_meta)
            ├── train.txt   "n01440764/n01440764_1.JPEG 0"
            └── val.txt

    The classes are the first ``num_classes`` of ImageNet-1k, so their
    labels (0, 1, ...) are also their real ImageNet-1k labels and mmpretrain's
    ``ImageNet`` names them right. With ``meta/*.txt`` (the default) the
    stock ``ImageNet`` dataset reads the data as it is; without it, it reads
    the class folders and expects 1000 of them unless the config sets
    ``metainfo=dict(classes=[...])``.

    Args:
        root (str | os.PathLike): The dataset root (``data/imagenet``).
        num_classes (int): Number of classes, 1 to 10. Defaults to 4.
        num_train_per_class (int): Training images per class.
            Defaults to 16.
        num_val_per_class (int): Validation images per class. Defaults to 4.
        size (tuple[int, int]): Image ``(height, width)``. Defaults to
            ``(64, 64)``.
        seed (int): Random seed. Defaults to 0.
        with_meta (bool): Also write ``meta/train.txt`` and ``meta/val.txt``.
            Defaults to True.
        overwrite (bool): Replace a synthetic dataset made earlier in
            ``root``. Defaults to False.

    Returns:
        pathlib.Path: ``root``.

    Raises:
        FileExistsError: If ``root`` is not empty and ``overwrite`` is
            False, or holds files that no generator made.
    """
    size = _check_size(size)
    if not 1 <= num_classes <= len(IMAGENET_CLASSES):
        raise ValueError(f'num_classes must be 1 to '
                         f'{len(IMAGENET_CLASSES)}, got {num_classes}')
    num_train = _check_count('num_train_per_class', num_train_per_class)
    num_val = _check_count('num_val_per_class', num_val_per_class)
    return _ImageNet(
        size, seed, num_classes, (num_train, num_val), with_meta,
        dict(num_classes=num_classes, num_train_per_class=num_train,
             num_val_per_class=num_val, size=list(size), seed=seed,
             with_meta=with_meta)).write(root, overwrite)


#: The generators by dataset name.
GENERATORS: Dict[str, Callable[..., Path]] = dict(
    ade20k=make_ade20k, coco=make_coco, imagenet=make_imagenet)

_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def cfg_options(dataset: str, root: PathLike,
                num_classes: Optional[int] = None) -> List[str]:
    """The ``--cfg-options`` that train and test a config on a generated
    dataset.

    Every dataloader reads ``root``; COCO's evaluators read its validation
    annotations. For ImageNet with ``num_classes``, the classifier is also
    made that wide: the head, and the data preprocessor whose
    ``num_classes`` sizes the one-hot targets of Mixup / CutMix and label
    smoothing; below five classes the evaluators report top-1 only.

    Args:
        dataset (str): ``'ade20k'``, ``'coco'`` or ``'imagenet'``.
        root (str | Path): The dataset root.
        num_classes (int, optional): ImageNet only: the head's classes.
            Defaults to None (the 1000-class head, which fits the labels
            as they are).

    Returns:
        list[str]: ``key=value`` pairs, to follow ``--cfg-options``.

    Raises:
        ValueError: For an unknown dataset, or ``num_classes`` outside
            ImageNet.
    """
    if dataset not in GENERATORS:
        raise ValueError(f'Unknown dataset {dataset!r}; choose from '
                         f'{sorted(GENERATORS)}.')
    if num_classes is not None and dataset != 'imagenet':
        raise ValueError('num_classes applies to imagenet only.')
    root = str(root)
    options = [f'{k}.dataset.data_root={root}' for k in _LOADERS]
    if dataset == 'coco':
        ann = os.path.join(root, 'annotations', 'instances_val2017.json')
        options += [f'{k}.ann_file={ann}'
                    for k in ('val_evaluator', 'test_evaluator')]
    if num_classes is not None:
        options += [f'model.head.num_classes={num_classes}',
                    f'data_preprocessor.num_classes={num_classes}']
        if num_classes < 5:
            options += ['val_evaluator.topk=1', 'test_evaluator.topk=1']
    return options


__all__ = [
    'make_ade20k', 'make_coco', 'make_imagenet', 'GENERATORS', 'cfg_options',
    'ADE20K_CLASSES', 'COCO_CATEGORIES', 'COCO_DRAWN', 'IMAGENET_CLASSES',
    'MANIFEST_NAME', 'shape_polygon', 'polygon_mask', 'polygon_area'
]

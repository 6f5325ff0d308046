"""The package's allow-list holds inside its own loads only, loads change
no class attribute, and each URL has its own download."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from fcaformer_mm import compat

from .forge import CASES


def test_plain_torch_load_is_unchanged_by_the_package(real_checkpoint,
                                                      tmp_path):
    """In a fresh process: plain ``torch.load`` answers three files alike
    before ``import fcaformer_mm``, after it, and after a package load."""
    void = CASES['void_dtype_hidden_object_field'][0](tmp_path, tmp_path,
                                                      tmp_path)
    numeric = tmp_path / 'numeric.pth'
    torch.save({'a': np.arange(3.)}, numeric)
    files = [str(real_checkpoint), str(void), str(numeric)]
    script = textwrap.dedent(f'''
        import json, pickle, torch
        files = {files!r}
        def outcomes():
            result = []
            for path in files:
                try:
                    torch.load(path, weights_only=True)
                    result.append('loaded')
                except pickle.UnpicklingError:
                    result.append('refused')
            return result
        before = outcomes()
        import fcaformer_mm
        from fcaformer_mm import compat
        after_import = outcomes()
        compat.load_checkpoint_file(files[0])
        after_load = outcomes()
        allowed = [g[1] if isinstance(g, tuple) else
                   f'{{g.__module__}}.{{g.__qualname__}}'
                   for g in torch.serialization.get_safe_globals()]
        print(json.dumps(dict(before=before, after_import=after_import,
                              after_load=after_load, allowed=allowed,
                              ours=compat.safe_global_names())))
        ''')
    proc = subprocess.run([sys.executable, '-c', script],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['before'] == ['refused'] * 3
    assert report['after_import'] == report['before']
    assert report['after_load'] == report['before']
    assert not set(report['allowed']) & set(report['ours'])


def test_checkpoint_globals_restores_the_allow_list():
    mine = (np.ndarray, 'numpy.ndarray')  # shadowed inside, back after
    torch.serialization.add_safe_globals([mine])
    try:
        before = set(torch.serialization.get_safe_globals())
        with compat.checkpoint_globals() as names:
            inside = torch.serialization.get_safe_globals()
            assert mine not in inside and 'numpy.ndarray' in names
        assert set(torch.serialization.get_safe_globals()) == before
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(list(before - {mine}))


def test_loading_leaves_history_buffer_class_alone(real_checkpoint,
                                                   tmp_path):
    HistoryBuffer()  # the class's default statistics
    before = dict(HistoryBuffer._statistics_methods)
    forged = CASES['history_buffer_rebinds_mean'][0](tmp_path, tmp_path,
                                                     real_checkpoint)
    buffer = compat.load_checkpoint_file(str(forged))['meta']['x']
    assert HistoryBuffer._statistics_methods == before
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean
    assert buffer.statistics('mean') == 1.0
    real = compat.load_checkpoint_file(str(real_checkpoint))
    loss = real['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2
    assert HistoryBuffer._statistics_methods == before


def _weights(value: float) -> dict:
    return {'state_dict': {'w': torch.full((2, ), value)}}


def test_each_url_gets_its_own_download(file_server):
    root = file_server.root
    for folder, value in (('a', 1.), ('b', 2.)):
        (root / folder).mkdir()
        torch.save(_weights(value), root / folder / 'model.pth')
    torch.save(_weights(3.), root / 'model.pth')

    def load(name: str) -> float:
        ckpt = CheckpointLoader.load_checkpoint(file_server.url(name))
        return float(ckpt['state_dict']['w'][0])

    assert load('a/model.pth') == 1.
    assert load('b/model.pth') == 2.
    assert load('model.pth') == 3.
    torch.save(_weights(4.), root / 'model.pth')  # a new version...
    assert load('model.pth?v=2') == 4.  # ...under a new URL
    assert load('model.pth') == 3.  # the first URL keeps its download
    paths = {compat.download_cache_path(file_server.url(name)) for name in
             ('a/model.pth', 'b/model.pth', 'model.pth', 'model.pth?v=2')}
    assert len(paths) == 4
    assert all(p.endswith('.pth') and '/model.' in p for p in paths)

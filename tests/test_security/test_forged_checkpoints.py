"""A corpus of forged checkpoints, each loaded in its own process: the
result is a clean CheckpointError or correct data, never a signal, never
code run, never a class attribute changed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .forge import CASES, mutations

LOAD_EACH = Path(__file__).with_name('load_each.py')
MUTANTS = 40
#: HistoryBuffer's statistics as the class defines them.
STATISTICS = {
    name: f'mmengine.logging.history_buffer.HistoryBuffer.{name}'
    for name in ('min', 'max', 'current', 'mean')
}


def _run(args: list, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def corpus(real_checkpoint, tmp_path_factory) -> dict:
    """Every case of :data:`forge.CASES` and :data:`MUTANTS` mutations of
    the real checkpoint, loaded by ``load_each.py``: name -> (report,
    marker)."""
    root = tmp_path_factory.mktemp('corpus')
    files = {}
    for name, (write, _) in CASES.items():
        folder = root / name
        folder.mkdir()
        marker = folder / 'code_ran'
        files[name] = (write(folder, marker, real_checkpoint), marker)
    mutant_dir = root / 'mutants'
    mutant_dir.mkdir()
    for path in mutations(real_checkpoint, mutant_dir, MUTANTS, seed=0):
        files[path.stem] = (path, mutant_dir / 'code_ran')
    out = root / 'results.json'
    proc = _run([LOAD_EACH, out] + [path for path, _ in files.values()])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    return {name: (results[str(path)], marker)
            for name, (path, marker) in files.items()}


def _check_clean(report: dict, marker: Path) -> None:
    assert report['returncode'] == 0, report  # < 0: killed by a signal
    assert report['outcome'] != 'other', report
    assert report['statistics'] == STATISTICS, report
    assert not marker.exists(), 'the checkpoint ran code'


@pytest.mark.parametrize('name', sorted(CASES))
def test_forged_case(corpus, name):
    report, marker = corpus[name]
    _check_clean(report, marker)
    expected = CASES[name][1]
    if expected == 'error':
        assert report['outcome'].endswith('CheckpointError'), report
    else:
        assert report['outcome'] == expected, report


@pytest.mark.parametrize('index', range(MUTANTS))
def test_mutated_real_checkpoint(corpus, index):
    report, marker = corpus[f'mutant_{index:03d}']
    _check_clean(report, marker)
    assert (report['outcome'] == 'data'
            or report['outcome'].endswith('CheckpointError')), report


def test_corpus_refusals_name_the_problem(corpus):
    assert 'numpy dtype' in corpus['object_array_short_list'][0]['message']
    void = corpus['void_dtype_hidden_object_field'][0]['message']
    assert "'V8'" in void and 'plain numeric' in void
    flags = corpus['float_dtype_forged_object_flags'][0]['message']
    assert 'forged dtype' in flags
    assert '`posix.system`' in corpus['os_system'][0]['message']
    assert 'cut short' in corpus['truncated_50'][0]['message']


def test_the_mutations_reach_the_loader(corpus):
    """Mutants reach the unpickler, not only the zip reader: some load or
    are refused by the allow-list (which ones depends on the bytes of the
    real checkpoint, which hold times and so differ between runs)."""
    outcomes = [corpus[f'mutant_{i:03d}'][0]['outcome']
                for i in range(MUTANTS)]
    assert any(o in ('data', 'UnsafeCheckpointError') for o in outcomes)
    assert any(o.endswith('CheckpointError') for o in outcomes)


def test_real_checkpoint_loads_in_the_corpus_driver(real_checkpoint,
                                                    tmp_path):
    out = tmp_path / 'results.json'
    proc = _run([LOAD_EACH, out, real_checkpoint])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())[str(real_checkpoint)]
    assert report['returncode'] == 0 and report['outcome'] == 'data', report
    assert 'HistoryBuffer' in report['repr']


def test_numpy_allow_list_of_real_globals_would_crash(tmp_path):
    """Why the stand-ins: with numpy's own ``_reconstruct`` and ``dtype``
    allowed, the first case of the corpus kills the process."""
    marker = tmp_path / 'code_ran'
    path = CASES['object_array_short_list'][0](tmp_path, marker, tmp_path)
    script = textwrap.dedent(f'''
        import numpy as np, torch
        core = getattr(np, '_core', None) or np.core
        allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype,
                   np.dtypes.ObjectDType]
        with torch.serialization.safe_globals(allowed):
            print(repr(torch.load({str(path)!r}, weights_only=True)))
        ''')
    proc = _run(['-c', script])
    assert proc.returncode < 0, (proc.returncode, proc.stdout, proc.stderr)

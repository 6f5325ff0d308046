"""Tests of tools/analysis_tools/gpu_table.sh, the prepared GPU table.

No GPU here: the script runs on the CPU with tiny settings through its
environment variables; what it measures on a GPU is the same two benchmark
runs. Nothing asserts on timings.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / 'tools' / 'analysis_tools' / 'gpu_table.sh'


def run_script(out: Path, **env) -> subprocess.CompletedProcess:
    settings = dict(
        DEVICE='cpu', PRECISIONS='fp32', SIZE='32 32', BATCH='2',
        TRAIN_BATCH='2', WARMUP='0', REPEATS='1', TRAIN_REPEATS='1',
        PYTHON=sys.executable, OMP_NUM_THREADS='1')
    settings.update(env)
    return subprocess.run(['bash', str(SCRIPT), str(out)],
                          env={**os.environ, **settings}, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def test_both_parts_write_their_tables(tmp_path):
    out = tmp_path / 'gpu'
    proc = run_script(out, MODELS='fcaformer-l1 convnext-t')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    inference = json.loads((out / 'inference.json').read_text())
    assert inference['meta']['table'] == 'edge'
    assert inference['meta']['batch'] == 2
    assert set(inference['times']) == {'latency/fp32', 'throughput/fp32'}
    for key, batch in (('latency/fp32', 1), ('throughput/fp32', 2)):
        entries = inference['times'][key]
        assert list(entries) == ['fcaformer-l1', 'convnext-t']
        assert all(e['batch'] == batch for e in entries.values())

    train = json.loads((out / 'train.json').read_text())
    assert list(train['times']) == ['train/fp32']
    assert list(train['times']['train/fp32']) == ['fcaformer-l1',
                                                  'convnext-t']
    assert [(r['model'], r['batch']) for r in train['memory']] == [
        ('fcaformer-l1', 2), ('convnext-t', 2)]
    assert all(r['peak_mib'] > 0 for r in train['memory'])
    # Each part's printed table is kept beside its JSON.
    assert 'throughput (fp32)' in (out / 'inference.txt').read_text()
    assert 'classifier/fcaformer-l1' in (out / 'train.txt').read_text()


def test_a_failing_part_is_reported_and_the_next_still_runs(tmp_path):
    out = tmp_path / 'gpu'
    proc = run_script(out, MODELS='fcaformer-l9')
    assert proc.returncode == 1
    assert '== inference failed (exit 2' in proc.stdout
    assert '== train failed (exit 2' in proc.stdout
    assert '== failed parts: inference train' in proc.stdout
    assert 'unknown model' in (out / 'train.txt').read_text()

"""Tests of fcaformer_mm.analysis.rss: the peak resident memory of a block."""
from __future__ import annotations

import torch

from fcaformer_mm.analysis.rss import peak_rss_rise, status_kib


def test_peak_rise_counts_memory_freed_inside_the_block():
    with peak_rss_rise() as mem:
        # 128 MiB, written, then freed: only the peak still shows it.
        big = torch.ones(32 * 2**20)
        del big
    assert mem['method'] == 'vmhwm'
    assert mem['rise_mib'] >= 120
    assert mem['peak_mib'] >= mem['before_mib'] + 120
    assert mem['after_mib'] <= mem['peak_mib']


def test_peak_is_reset_before_the_block():
    big = torch.ones(32 * 2**20)
    del big  # an earlier peak of 128 MiB
    with peak_rss_rise() as mem:
        small = torch.ones(2 * 2**20)  # 8 MiB
    del small
    assert mem['rise_mib'] < 64
    assert status_kib('VmRSS') > 0

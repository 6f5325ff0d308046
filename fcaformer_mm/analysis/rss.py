"""Peak resident memory of this process, from ``/proc/self`` (Linux).

What the benchmark calls memory on the CPU: the rise of the peak resident
set size (``VmHWM``) over the resident set size (``VmRSS``) just before the
measured work, with the peak first reset to the current size through
``/proc/self/clear_refs``. Measured in a fresh process, it holds everything
the work makes the process touch: weights, activations, workspace of the
kernels, the allocator's caches.

Example:
    >>> from fcaformer_mm.analysis.rss import peak_rss_rise
    >>> with peak_rss_rise() as mem:
    ...     data = b'x' * 2**26  # 64 MiB, written
    >>> mem['rise_mib'] >= 64
    True
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator

__all__ = ['status_kib', 'release_free_heap', 'reset_peak_rss',
           'peak_rss_rise']


def status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``...).

    Raises:
        RuntimeError: If the field is not there (not Linux).
    """
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status: the resident '
                       'memory is measured on Linux only.')


def release_free_heap() -> None:
    """Collect garbage and give freed heap memory back to the system
    (glibc's ``malloc_trim``), so that the resident set holds live memory
    only."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current resident set size.

    Returns:
        bool: False where ``/proc/self/clear_refs`` cannot be written (the
        peak then still holds earlier peaks of the process).
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return False
    return True


@contextlib.contextmanager
def peak_rss_rise() -> Iterator[dict]:
    """Measure the peak resident memory that a ``with`` block adds.

    Yields a dict that is filled when the block ends:

    - ``rise_mib``: peak RSS during the block minus RSS before it;
    - ``before_mib``, ``peak_mib``, ``after_mib``: RSS before, peak RSS,
      RSS after (MiB);
    - ``method``: ``'vmhwm'`` (peak reset before the block), or
      ``'vmhwm_no_reset'`` where the reset is not allowed: then ``rise_mib``
      is a lower bound, and 0 if the block stayed under an earlier peak.
    """
    result: dict = {}
    release_free_heap()
    before = status_kib('VmRSS')
    reset = reset_peak_rss()
    try:
        yield result
    finally:
        peak = status_kib('VmHWM')
        result.update(
            rise_mib=max(peak - before, 0) / 1024,
            before_mib=before / 1024,
            peak_mib=peak / 1024,
            after_mib=status_kib('VmRSS') / 1024,
            method='vmhwm' if reset else 'vmhwm_no_reset')

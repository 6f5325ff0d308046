"""Load each checkpoint named on the command line in its own process.

Usage: ``python load_each.py OUT.json CKPT [CKPT ...]``. The package is
imported once; each checkpoint is then loaded by a forked child with
``fcaformer_mm.compat.load_checkpoint_file`` and its result printed with
``repr`` (which reads every value, as a forged dtype's pointers would be
read). ``OUT.json`` maps each path to ``returncode`` (negative: killed by
that signal), ``outcome`` (``'data'``, the CheckpointError subclass, or
``'other'`` for any other exception) and the class attribute
``HistoryBuffer._statistics_methods`` after the load.
"""
from __future__ import annotations

import json
import os
import sys


def _load_one(path: str) -> dict:
    from mmengine.logging import HistoryBuffer

    from fcaformer_mm import compat
    try:
        checkpoint = compat.load_checkpoint_file(path, 'cpu')
        result = {'outcome': 'data', 'repr': repr(checkpoint)[:2000]}
    except compat.CheckpointError as err:
        result = {'outcome': type(err).__name__, 'message': str(err)[:2000]}
    except BaseException as err:  # noqa: BLE001  (reported, then failed)
        result = {'outcome': 'other',
                  'message': f'{type(err).__name__}: {err}'[:2000]}
    result['statistics'] = {
        name: f'{method.__module__}.{method.__qualname__}'
        for name, method in HistoryBuffer._statistics_methods.items()
    }
    return result


def main(out: str, paths: list[str]) -> None:
    from mmengine.logging import HistoryBuffer

    import fcaformer_mm  # noqa: F401  (the package's loaders)
    HistoryBuffer()  # the class's default statistics, as a Runner has them
    results = {}
    for path in paths:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: load, report, leave without cleanup
            os.close(read_end)
            os.write(write_end, json.dumps(_load_one(path)).encode())
            os._exit(0)
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 1 << 16):
            chunks.append(chunk)
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        report = json.loads(b''.join(chunks) or b'{}')
        report['returncode'] = os.waitstatus_to_exitcode(status)
        results[path] = report
    with open(out, 'w') as f:
        json.dump(results, f, indent=1)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2:])

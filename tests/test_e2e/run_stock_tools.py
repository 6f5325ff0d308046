"""Run several stock tools of the installed OpenMMLab wheels in one Python
process: the tests' way to pay one interpreter start-up and one import of
torch and the codebases for many tool runs.

Usage::

    python run_stock_tools.py JOBS.json RESULTS.json

``JOBS.json`` is a list of jobs, each ``{"tool": PATH, "args": [...],
"log": PATH}``. Each job runs as ``python TOOL ARGS`` would run it: the tool
file is executed as ``__main__`` (:func:`runpy.run_path`) with ``sys.argv``
set, and the process's file descriptors 1 and 2 go to the job's log (so
that loggers made by earlier jobs write there too). ``RESULTS.json`` gets
one exit status per job, written after every job: 0, the code of a
``SystemExit``, or 1 for an exception (its traceback is in the log).

Only for the codebases' own tools (``<package>/.mim/tools``): the
repository's tools are run as commands of their own.
"""
from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _output_to(log: Path):
    """Send file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``)
    to ``log`` inside the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, 'wb') as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def run_job(tool: str, args: list[str], log: Path) -> int:
    """Run one tool as ``__main__``; return its exit status."""
    argv = sys.argv
    sys.argv = [tool] + [str(a) for a in args]
    try:
        with _output_to(log):
            try:
                runpy.run_path(tool, run_name='__main__')
            except SystemExit as err:
                if _exit_status(err.code) and not isinstance(err.code, int):
                    print(err.code, file=sys.stderr)
                return _exit_status(err.code)
            except Exception:  # the test shows the log
                traceback.print_exc()
                return 1
            return 0
    finally:
        sys.argv = argv


def main() -> None:
    jobs_file, results_file = map(Path, sys.argv[1:3])
    results = []
    for job in json.loads(jobs_file.read_text()):
        results.append(run_job(job['tool'], job['args'], Path(job['log'])))
        results_file.write_text(json.dumps(results))


if __name__ == '__main__':
    main()

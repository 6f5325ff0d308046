#!/usr/bin/env python3
"""Install fcaformer_mm and the OpenMMLab 2.0 stack into this interpreter.

Usage::

    python3 tools/install.py            # the stack + fcaformer_mm (editable)
    python3 tools/install.py --tests    # the same + the test requirements
    python3 tools/install.py --dry-run  # say what would be done, do nothing

The script is idempotent and keeps what already works:

1. torch / torchvision: kept when both import and torchvision's C ops load.
   With no torch, the package registry's torch 2.13.0 + torchvision 0.28.0
   are installed. With a torch but no working torchvision, the torchvision
   release that matches that torch is added; only a torch 2.13.0 CPU-only
   build (for which no torchvision exists) is replaced.
2. mmcv: kept when ``mmcv.ops`` loads and its version is in the range the
   codebases accept (>= 2.0.0rc4, < 2.2.0). Otherwise mmcv 2.1.0 is built
   from source with its ops (no wheels exist for current torch; about 10
   minutes on 2 CPU cores, far longer with CUDA ops). pip caches the wheel,
   so later runs take seconds.
3. mmengine, mmpretrain, mmsegmentation, mmdetection, OpenMIM and
   fcaformer_mm itself (editable), at the tested versions of
   ``requirements/*.txt``, with the installed torch, torchvision and mmcv
   pinned so pip cannot replace them.
4. Links that let OpenMIM (``mim search``, ``mim list``) read the editable
   install: ``<site-packages>/fcaformer_mm`` to the clone's package (listed
   in its RECORD, so ``pip uninstall`` removes it) and
   ``fcaformer_mm/.mim/{configs,tools,model-index.yml}`` in the clone.

Only the standard library is used, so it runs on a bare interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / 'requirements'
LOG_DIR = ROOT / 'work_dirs' / 'install_logs'

TORCH_VERSION = '2.13.0'
TORCHVISION_VERSION = '0.28.0'
MMCV_VERSION = '2.1.0'
MMCV_MIN, MMCV_MAX = (2, 0, 0), (2, 2, 0)  # mmdet 3.3.0 / mmseg 1.2.2 bounds

PROBE = r'''
import json, sys
r = {"python": sys.version.split()[0], "venv": sys.prefix != sys.base_prefix}
try:
    import torch
    r["torch"] = torch.__version__
    r["cuda_available"] = torch.cuda.is_available()
except Exception as e:
    r["torch_error"] = f"{type(e).__name__}: {e}"
if "torch" in r:
    try:
        import torchvision
        from torchvision.ops import nms
        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        r["torchvision"] = torchvision.__version__
    except Exception as e:
        r["torchvision_error"] = f"{type(e).__name__}: {e}"
    try:
        import mmcv
        r["mmcv"] = mmcv.__version__
        from mmcv.ops import nms as mmcv_nms
        mmcv_nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        r["mmcv_ops"] = True
    except Exception as e:
        r["mmcv_error"] = f"{type(e).__name__}: {e}"
from importlib import metadata
r["dist"] = {}
for name in ("torch", "torchvision", "mmcv"):
    try:
        r["dist"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print("PROBE" + json.dumps(r))
'''


class StepFailed(RuntimeError):
    """A step failed; the message says what and what to do."""


def say(msg: str) -> None:
    print(f'[install] {msg}', flush=True)


def probe() -> dict:
    """Import torch, torchvision and mmcv in a fresh interpreter."""
    out = subprocess.run([sys.executable, '-c', PROBE],
                         capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith('PROBE'):
            return json.loads(line[len('PROBE'):])
    raise StepFailed('could not probe the interpreter '
                     f'{sys.executable}:\n{out.stderr[-2000:]}')


#: Where pip put the fcaformer_mm distribution: site-packages, its RECORD,
#: and the folder of an editable install.
DIST_PROBE = r'''
import json, importlib.metadata as md
from urllib.parse import unquote, urlparse
d = md.distribution("fcaformer_mm")
url = json.loads(d.read_text("direct_url.json") or "{}")
editable = url.get("dir_info", {}).get("editable")
record = [f for f in d.files if f.name == "RECORD" and
          f.parent.name.endswith(".dist-info")][0]
print(json.dumps({
    "site": str(d.locate_file("")),
    "record": str(d.locate_file(record)),
    "editable_dir": unquote(urlparse(url["url"]).path) if editable else None,
}))
'''


def _link(path: Path, target: Path) -> None:
    """Make ``path`` a symbolic link to ``target``, unless it is one."""
    if path.is_symlink() and os.readlink(path) == str(target):
        return
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        raise StepFailed(f'{path} exists and is not a link; move it away '
                         'and run this script again.')
    path.symlink_to(target, target_is_directory=not target.suffix)


def version_tuple(version: str) -> tuple[int, ...]:
    """``'2.1.0rc1+cu121'`` -> ``(2, 1, 0)``."""
    nums = re.findall(r'\d+', version.split('+')[0])[:3]
    return tuple(int(n) for n in nums)


class Installer:
    """Runs the steps and records what was done and why."""

    def __init__(self, dry_run: bool, jobs: int) -> None:
        self.dry_run = dry_run
        self.jobs = jobs
        self.summary: list[str] = []
        if not dry_run:
            LOG_DIR.mkdir(parents=True, exist_ok=True)

    def record(self, what: str) -> None:
        self.summary.append(what)
        say(what)

    def pip(self, args: list[str], log_name: str, *, env: dict | None = None,
            progress: bool = False, why: str = '') -> None:
        """Run ``python -m pip ARGS``, logging to a file.

        Raises:
            StepFailed: pip failed; the message shows the end of the log.
        """
        cmd = [sys.executable, '-m', 'pip', *args]
        log = LOG_DIR / f'{log_name}.log'
        say(f'$ {shlex.join(cmd)}')
        if self.dry_run:
            return
        start = time.time()
        last_shown = start
        with open(log, 'w') as fh, subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, env={**os.environ, **(env or {})}) as proc:
            for line in proc.stdout:
                fh.write(line)
                now = time.time()
                if progress:
                    match = re.search(r'\[(\d+)/(\d+)\]', line)
                    if match and now - last_shown > 15:
                        last_shown = now
                        say(f'  compiling mmcv ops: {match[1]}/{match[2]} '
                            f'files, {now - start:.0f} s elapsed')
                    elif now - last_shown > 60:
                        last_shown = now
                        say(f'  still working, {now - start:.0f} s elapsed '
                            f'(log: {log})')
            code = proc.wait()
        if code != 0:
            tail = ''.join(log.read_text().splitlines(True)[-30:])
            raise StepFailed(
                f'pip failed ({why or log_name}); the end of its log '
                f'({log}):\n{tail}')
        say(f'  done in {time.time() - start:.0f} s (log: {log})')

    # ------------------------------------------------------------ steps
    def torch_step(self, state: dict) -> None:
        torch_spec = [f'torch=={TORCH_VERSION},!={TORCH_VERSION}+cpu',
                      f'torchvision=={TORCHVISION_VERSION}']
        if 'torch' in state and 'torchvision' in state:
            self.record(f'torch {state["torch"]} and torchvision '
                        f'{state["torchvision"]} import: kept')
            return
        if 'torch' not in state:
            self.record(f'torch missing ({state.get("torch_error")}): '
                        f'installing torch {TORCH_VERSION} + torchvision '
                        f'{TORCHVISION_VERSION} from the package registry '
                        '(about 5 GB with its CUDA libraries; they also '
                        'run on CPU)')
            self.pip(['install', *torch_spec], 'torch',
                     why='installing torch and torchvision')
            return
        torch_v = state['torch']
        base = version_tuple(torch_v)
        reason = state.get('torchvision_error', 'not installed')
        if base[0] >= 2 and len(base) == 3:
            matching = f'0.{base[1] + 15}.{base[2]}'
            self.record(f'torch {torch_v} works but torchvision does not '
                        f'({reason}): adding torchvision {matching}, the '
                        'release built for this torch, without touching '
                        'torch')
            try:
                self.pip(['install', '--no-deps', f'torchvision=={matching}'],
                         'torchvision', why='adding the matching torchvision')
                ok = self.dry_run or 'torchvision' in probe()
            except StepFailed:
                ok = False
            if ok:
                return
        if torch_v.split('+')[0] == TORCH_VERSION and (
                '+' not in torch_v or torch_v.endswith('+cpu')):
            self.record(f'torch {torch_v} is a build with no torchvision '
                        f'release: replacing it by the registry\'s torch '
                        f'{TORCH_VERSION} + torchvision {TORCHVISION_VERSION} '
                        '(same version; it also runs on CPU)')
            self.pip(['install', *torch_spec], 'torch',
                     why='replacing the CPU-only torch')
            return
        raise StepFailed(
            f'torch {torch_v} is installed but torchvision cannot be '
            f'imported ({reason}) and no matching torchvision could be '
            'installed. Your torch was kept. Install the torchvision built '
            'for your torch (see https://pytorch.org/get-started/), or use a '
            f'fresh virtual environment, then run this script again.')

    def mmcv_step(self, state: dict) -> None:
        if state.get('mmcv_ops'):
            v = version_tuple(state['mmcv'])
            if MMCV_MIN <= v < MMCV_MAX:
                self.record(f'mmcv {state["mmcv"]} with ops loads: kept')
                return
            raise StepFailed(
                f'mmcv {state["mmcv"]} is installed, but mmdetection 3.3.0 '
                'and mmsegmentation 1.2.2 accept only mmcv >= 2.0.0rc4, '
                '< 2.2.0. It was kept. Install mmcv 2.1.0 (for example '
                f'`{sys.executable} -m pip uninstall mmcv` and run this '
                'script again to build it), or use a fresh virtual '
                'environment.')
        if 'mmcv' in state:
            reason = (f'mmcv {state["mmcv"]} is installed without working '
                      f'ops ({state.get("mmcv_error")})')
            extra = ['--force-reinstall', '--no-deps']
        else:
            reason = 'mmcv is not installed'
            extra = []
        if state.get('cuda_available'):
            duration = 'CPU and CUDA ops: this can take 30 minutes or more'
        else:
            duration = 'CPU ops: about 10 minutes on 2 cores'
        self.record(
            f'{reason}: building mmcv {MMCV_VERSION} with ops from source '
            f'({duration}; pip caches the built wheel for later runs)')
        self.pip(['install', '-c', str(REQ / 'constraints.txt'),
                  '-r', str(REQ / 'build.txt')], 'build_tools',
                 why='installing the tools that build mmcv')
        self.pip(['install', '-v', '--no-build-isolation', *extra,
                  '-c', str(REQ / 'constraints.txt'),
                  f'mmcv=={MMCV_VERSION}'], 'mmcv',
                 env={'MMCV_WITH_OPS': '1', 'MAX_JOBS': str(self.jobs)},
                 progress=True, why='building mmcv with ops')
        if not self.dry_run and not probe().get('mmcv_ops'):
            raise StepFailed('mmcv was built, but `mmcv.ops` still does not '
                             f'load: {probe().get("mmcv_error")}. See '
                             f'{LOG_DIR / "mmcv.log"}.')

    def package_step(self, state: dict, tests: bool) -> None:
        extras = 'all,tests' if tests else 'all'
        self.record('installing mmengine, mmpretrain, mmsegmentation, '
                    'mmdetection, OpenMIM and fcaformer_mm (editable, extras '
                    f'[{extras}]), with torch, torchvision and mmcv pinned '
                    'to the installed builds')
        # The distributions' own versions: ``torch.__version__`` can carry a
        # local label (+cu130) that the installed metadata does not.
        pins = [f'{name}=={version}'
                for name, version in state.get('dist', {}).items()]
        with tempfile.NamedTemporaryFile(
                'w', suffix='.txt', prefix='installed-pins-',
                delete=False) as fh:
            fh.write('\n'.join(pins) + '\n')
        try:
            self.pip(['install', '-c', str(REQ / 'constraints.txt'),
                      '-c', fh.name, '-e', f'{ROOT}[{extras}]'], 'package',
                     why='installing the codebases and fcaformer_mm')
        finally:
            os.unlink(fh.name)

    def openmim_step(self) -> None:
        """Let OpenMIM read the editable install.

        OpenMIM (``mim search``, ``mim list``) reads a package's model index
        at ``<site-packages>/fcaformer_mm/.mim/model-index.yml``, where an
        OpenMMLab wheel puts it. An editable install leaves the package in
        the clone, so, as OpenMMLab's setup scripts do for a development
        install, links are made:

        - ``fcaformer_mm/.mim/{configs,tools,model-index.yml}`` in the clone,
          to the clone's own (git ignores the folder);
        - ``<site-packages>/fcaformer_mm``, to the clone's package, listed
          in the distribution's ``RECORD`` so that ``pip uninstall
          fcaformer_mm`` removes it with the rest.

        A file or folder that is not such a link is never replaced.
        """
        mim_dir = ROOT / 'fcaformer_mm' / '.mim'
        if self.dry_run:
            self.record(f'linking {mim_dir} and site-packages/fcaformer_mm '
                        'to the clone, so that OpenMIM reads the editable '
                        'install')
            return
        # Not from the clone: there the clone's own egg-info would answer.
        out = subprocess.run([sys.executable, '-c', DIST_PROBE],
                             capture_output=True, text=True,
                             cwd=tempfile.gettempdir())
        if out.returncode != 0:
            raise StepFailed('fcaformer_mm was installed but its '
                             f'distribution cannot be read:\n{out.stderr}')
        dist = json.loads(out.stdout)
        if dist['editable_dir'] != str(ROOT):
            self.record('fcaformer_mm is not an editable install of this '
                        f'clone ({dist["editable_dir"]}): no links made')
            return
        mim_dir.mkdir(exist_ok=True)
        for name in ('configs', 'tools', 'model-index.yml'):
            _link(mim_dir / name, Path('..', '..', name))
        site_link = Path(dist['site']) / 'fcaformer_mm'
        target = ROOT / 'fcaformer_mm'
        if os.path.lexists(site_link) and not (
                site_link.is_symlink()
                and site_link.resolve() == target.resolve()):
            if not site_link.is_symlink():
                self.record(f'{site_link} exists and is not a link: kept; '
                            '`mim search fcaformer_mm` reads it, not this '
                            'clone')
                return
            site_link.unlink()  # a link to another clone
        if not os.path.lexists(site_link):
            site_link.symlink_to(target, target_is_directory=True)
        record = Path(dist['record'])
        entry = 'fcaformer_mm,,'
        if entry not in record.read_text().splitlines():
            with open(record, 'a') as fh:
                fh.write(entry + '\n')
        self.record(f'linked {site_link} -> {target} and {mim_dir}: '
                    '`mim search fcaformer_mm` and `mim list` read this clone')

    def verify_step(self) -> None:
        if self.dry_run:
            return
        out = subprocess.run(
            [sys.executable, '-c',
             'import fcaformer_mm, mmseg, mmdet, mmpretrain.models; '
             'print(fcaformer_mm.HOST_REGISTRATION)'],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise StepFailed('the install finished but the stack does not '
                             f'import:\n{out.stderr[-3000:]}')
        self.record(f'import check passed: {out.stdout.strip()}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tests', action='store_true',
                        help='also install the test requirements')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the plan without installing anything')
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1,
                        help='parallel compile jobs for mmcv (default: all '
                        'cores)')
    args = parser.parse_args()

    start = time.time()
    installer = Installer(args.dry_run, args.jobs)
    try:
        state = probe()
        where = ('a virtual environment' if state['venv'] else
                 'NOT a virtual environment: installing into it anyway')
        say(f'python {state["python"]} at {sys.executable} ({where})')
        if sys.version_info < (3, 9):
            raise StepFailed('Python >= 3.9 is needed.')
        installer.torch_step(state)
        state = probe() if not args.dry_run else state
        installer.mmcv_step(state)
        state = probe() if not args.dry_run else state
        installer.package_step(state, args.tests)
        installer.openmim_step()
        installer.verify_step()
    except StepFailed as exc:
        print(f'\n[install] FAILED: {exc}', file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print('\n[install] interrupted; run it again to continue.',
              file=sys.stderr)
        return 130
    if args.dry_run:
        say(f'dry run, {time.time() - start:.0f} s: nothing was installed '
            'or changed. What a real run would do:')
    else:
        say(f'finished in {time.time() - start:.0f} s. What was done:')
    for item in installer.summary:
        print(f'  - {item}')
    if args.dry_run:
        say('run it again without --dry-run to do it.')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""A wheel built from the repository carries the configs, tools and model
index under ``fcaformer_mm/.mim``, the layout of the OpenMMLab wheels; once
installed (here into a folder put on ``PYTHONPATH``), the package finds its
configs there, and OpenMIM's ``mim search`` and ``mim list`` see it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
#: What setup.py needs to build (the repository without tests and data).
SOURCES = ('setup.py', 'README.md', 'MANIFEST.in', 'pyproject.toml',
           'model-index.yml', 'requirements', 'fcaformer_mm', 'configs',
           'tools')
TIMEOUT = 600


def _run(cmd: list, cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def _repo_files(folder: str) -> set[str]:
    return {
        str(p.relative_to(REPO)) for p in (REPO / folder).rglob('*')
        if p.is_file() and '__pycache__' not in p.parts
        and p.suffix != '.pyc'
    }


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` of a copy of the
    repository's sources (the clone itself is left as it is)."""
    tmp = tmp_path_factory.mktemp('build')
    src = tmp / 'src'
    src.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info',
                                    '.mim')
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
          '--no-build-isolation', '--no-index', '-w', tmp / 'dist', src],
         cwd=tmp)
    (found, ) = (tmp / 'dist').glob('fcaformer_mm-*.whl')
    return found


def test_wheel_carries_configs_tools_and_model_index(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    mim = 'fcaformer_mm/.mim/'
    assert f'{mim}model-index.yml' in names
    for folder in ('configs', 'tools'):
        expected = {mim + f for f in _repo_files(folder)}
        assert expected and expected <= names, sorted(expected - names)
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
    assert not [n for n in names if n.startswith('tests/')]


def test_model_index_of_the_wheel_lists_every_config(wheel):
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    mim = 'fcaformer_mm/.mim/'
    index = yaml.safe_load(archive.read(f'{mim}model-index.yml'))
    listed = []
    for metafile in index['Import']:
        meta = yaml.safe_load(archive.read(mim + metafile))
        for model in meta['Models']:
            assert mim + model['Config'] in names
            listed.append(model['Config'])
    configs = sorted(
        n[len(mim):] for n in names
        if n.startswith(f'{mim}configs/') and n.endswith('.py')
        and '/_base_/' not in n)
    assert sorted(listed) == configs


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory) -> dict:
    """The wheel installed into a folder of its own (no dependencies: they
    are those of this environment), first on ``PYTHONPATH``."""
    target = tmp_path_factory.mktemp('site')
    _run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
          '--target', target, wheel], cwd=target)
    env = dict(os.environ)
    env['PYTHONPATH'] = str(target)
    env.setdefault('PYTHONWARNINGS', 'ignore')
    return dict(env=env, target=target)


def test_installed_package_reads_its_own_configs(installed):
    target = installed['target']
    out = _run([
        sys.executable, '-c',
        'import fcaformer_mm.apis as a; print(a.resource_root()); '
        'print(a.get_config_path("mask_rcnn_fcaformer_l2_fpn_3x_coco")); '
        'print(len(a.list_models()))'
    ], cwd=target, env=installed['env'])
    root, config, count = out.strip().splitlines()[-3:]
    assert Path(root) == target / 'fcaformer_mm' / '.mim'
    assert Path(config) == (target / 'fcaformer_mm' / '.mim' / 'configs' /
                            'mask_rcnn_fcaformer_l2_fpn_3x_coco.py')
    assert int(count) == len(list((REPO / 'configs').rglob('*.py'))) - len(
        list((REPO / 'configs' / '_base_').glob('*.py')))


def test_mim_search_and_list(installed):
    pytest.importorskip('mim')
    out = _run([sys.executable, '-m', 'mim', 'search', 'fcaformer_mm'],
               cwd=installed['target'], env=installed['env'])
    configs = [
        line.split(':', 1)[1].strip() for line in out.splitlines()
        if line.startswith('config id:')
    ]
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    names = [
        m['Name'] for f in index['Import']
        for m in yaml.safe_load((REPO / f).read_text())['Models']
    ]
    assert sorted(configs) == sorted(names)
    for field in ('task', 'training_data', 'parameters', 'flops',
                  'macs_nn-only', 'config', 'imagenet-1k/top_1_accuracy',
                  'ade20k/miou(ms+flip)', 'coco/box_ap', 'coco/mask_ap'):
        assert f'\n{field} ' in out, field

    out = _run([sys.executable, '-m', 'mim', 'list'],
               cwd=installed['target'], env=installed['env'])
    rows = [line.split() for line in out.splitlines()]
    assert any(r[:1] == ['fcaformer-mm'] for r in rows), out


def test_suite_keeps_only_failed_tests_temporary_directories(pytestconfig):
    """A full run writes several GiB under pytest's temporary directory;
    with pytest's default (every test's directory of the last three runs
    kept) repeated runs fill a small disk. The suite keeps only what failed
    tests wrote, of the last run."""
    assert pytestconfig.getini('tmp_path_retention_policy') == 'failed'
    assert int(pytestconfig.getini('tmp_path_retention_count')) <= 1


def test_mim_reads_the_editable_install(tmp_path):
    """README command 1 (``tools/install.py``) installs the package
    editable and links what OpenMIM reads; ``mim search`` and ``mim list``
    then see this clone from any working directory."""
    pytest.importorskip('mim')
    import sysconfig
    from importlib import metadata

    # Command 1 installs the extras [all], which hold OpenMIM.
    assert any(r.startswith('openmim') and 'extra == "all"' in r
               for r in metadata.requires('fcaformer_mm')), metadata.requires(
                   'fcaformer_mm')
    site_link = Path(sysconfig.get_paths()['purelib']) / 'fcaformer_mm'
    assert site_link.is_symlink() and site_link.resolve() == (
        REPO / 'fcaformer_mm'), (
            f'{site_link} is not a link to this clone: install with '
            '`python3 tools/install.py --tests` (README command 2)')
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = _run([sys.executable, '-m', 'mim', 'search', 'fcaformer_mm'],
               cwd=tmp_path, env=env)
    configs = {line.split(':', 1)[1].strip() for line in out.splitlines()
               if line.startswith('config id:')}
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    names = {m['Name'] for f in index['Import']
             for m in yaml.safe_load((REPO / f).read_text())['Models']}
    assert configs == names
    out = _run([sys.executable, '-m', 'mim', 'list'], cwd=tmp_path, env=env)
    row = next(r.split() for r in out.splitlines()
               if r.startswith('fcaformer-mm '))
    assert row[1] == metadata.version('fcaformer_mm')
    # The package, its configs and tools are read from the clone.
    out = _run([sys.executable, '-c', 'import fcaformer_mm.apis as a; '
                'print(a.resource_root())'], cwd=tmp_path, env=env)
    assert Path(out.split()[-1]) == REPO

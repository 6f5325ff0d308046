"""The product never imports the laboratory: importing fcaformer_mm and
every module of its core leaves fcaformer_mm.analysis out of sys.modules."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fcaformer_mm

PACKAGE = Path(fcaformer_mm.__file__).parent

IMPORT_CORE = '''
import importlib, json, pkgutil, sys
import fcaformer_mm

def walk(package):
    # pkgutil.walk_packages would import fcaformer_mm.analysis to list it.
    for info in pkgutil.iter_modules(package.__path__,
                                     package.__name__ + '.'):
        if info.name == 'fcaformer_mm.analysis':
            continue
        module = importlib.import_module(info.name)
        yield info.name
        if info.ispkg:
            yield from walk(module)

core = sorted(walk(fcaformer_mm))
print(json.dumps(dict(
    core=core,
    analysis=sorted(m for m in sys.modules
                    if m.startswith('fcaformer_mm.analysis')))))
'''


def test_core_imports_no_analysis_module():
    proc = subprocess.run([sys.executable, '-c', IMPORT_CORE],
                          capture_output=True, text=True, timeout=600,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    subpackages = {name.split('.')[1] for name in result['core']}
    assert {'apis', 'datasets', 'deployment', 'engine', 'models', 'utils',
            'visualization', 'compat', 'hosts', 'registry'} <= subpackages
    assert result['analysis'] == []


def test_no_core_source_names_the_analysis_package():
    """Lazy imports inside functions would escape the test above."""
    offenders = [
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob('*.py')
        if path.parent.name != 'analysis' and (
            'fcaformer_mm.analysis' in (text := path.read_text())
            or 'from ..analysis' in text or 'from .analysis' in text)
    ]
    assert offenders == []

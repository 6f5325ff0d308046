"""fcaformer_mm registers into its own scope and every installed host."""
import itertools
import json
import subprocess
import sys

import pytest
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

import fcaformer_mm
from fcaformer_mm import hosts
from fcaformer_mm.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

HOST_SCOPES = tuple(hosts.HOSTS)
OWN_MODULES = [('MODELS', 'FcaFormer'),
               ('OPTIM_WRAPPER_CONSTRUCTORS',
                'FcaFormerLayerDecayOptimWrapperConstructor')]


def test_own_scope_holds_the_modules():
    assert MODELS.scope == OPTIM_WRAPPER_CONSTRUCTORS.scope == 'fcaformer_mm'
    assert 'FcaFormer' in MODELS.module_dict
    assert ('FcaFormerLayerDecayOptimWrapperConstructor'
            in OPTIM_WRAPPER_CONSTRUCTORS.module_dict)
    assert fcaformer_mm.__version__ == fcaformer_mm.version.__version__


@pytest.mark.parametrize('scope', HOST_SCOPES)
@pytest.mark.parametrize('attr,name', OWN_MODULES)
def test_modules_registered_in_host(scope, attr, name):
    assert fcaformer_mm.HOST_REGISTRATION[scope] == 'registered'
    host = __import__(hosts.HOSTS[scope], fromlist=[attr])
    ours = getattr(fcaformer_mm.registry, attr).module_dict[name]
    assert getattr(host, attr).module_dict[name] is ours
    assert scope in hosts.scopes_holding(name, attr)


@pytest.mark.parametrize('scope',
                         ('mmengine', 'fcaformer_mm') + HOST_SCOPES)
def test_prefixed_name_resolves_from_any_scope(scope):
    with DefaultScope.overwrite_default_scope(scope):
        assert (ROOT_MODELS.get('fcaformer_mm.FcaFormer')
                is MODELS.module_dict['FcaFormer'])


@pytest.mark.parametrize('scope', HOST_SCOPES)
def test_bare_name_builds_in_host_scope(scope):
    registry = __import__(hosts.HOSTS[scope], fromlist=['MODELS']).MODELS
    # A scoped override, so no later test inherits this default scope.
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type='FcaFormer', arch='l1'))
    assert type(model) is MODELS.module_dict['FcaFormer']


def test_register_in_hosts_is_idempotent():
    assert hosts.register_in_hosts() == fcaformer_mm.HOST_REGISTRATION


_SUBSET_SCRIPT = r'''
import importlib.abc, json, sys
blocked = set(sys.argv[1].split(',')) - {''}

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in blocked:
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None

sys.meta_path.insert(0, Hide())
import fcaformer_mm
from mmengine.registry import DefaultScope, MODELS
built = {}
for scope, status in fcaformer_mm.HOST_REGISTRATION.items():
    if status == 'registered':
        reg = importlib.import_module(f'{scope}.registry').MODELS
        built[scope] = 'FcaFormer' in reg.module_dict
with DefaultScope.overwrite_default_scope('mmengine'):
    built['prefixed'] = MODELS.get('fcaformer_mm.FcaFormer') is not None
loaded = sorted(m for m in blocked if m in sys.modules)
print(json.dumps(dict(status=fcaformer_mm.HOST_REGISTRATION, built=built,
                      loaded=loaded)))
'''

SUBSETS = [c for r in range(len(HOST_SCOPES) + 1)
           for c in itertools.combinations(HOST_SCOPES, r)]


@pytest.mark.parametrize('present', SUBSETS,
                         ids=lambda s: '+'.join(s) or 'none')
def test_import_with_any_subset_of_hosts(present):
    """Hide the other hosts from the import system, then import."""
    blocked = [s for s in HOST_SCOPES if s not in present]
    out = subprocess.run(
        [sys.executable, '-c', _SUBSET_SCRIPT, ','.join(blocked)],
        capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for scope in HOST_SCOPES:
        expected = 'registered' if scope in present else 'not installed'
        assert result['status'][scope] == expected
    assert result['built'] == {**{s: True for s in present},
                               'prefixed': True}
    assert result['loaded'] == []

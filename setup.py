"""Setup script of fcaformer_mm."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> list[str]:
    """Requirement lines of ``requirements/<name>.txt``, comments dropped."""
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [ln.split('#')[0].strip() for ln in lines
            if ln.split('#')[0].strip()]


def get_version() -> str:
    """Read ``__version__`` without importing the package."""
    scope: dict = {}
    exec((HERE / 'fcaformer_mm' / 'version.py').read_text(), scope)
    return scope['__version__']


extras = {name: read_requirements(name)
          for name in ('cls', 'seg', 'det', 'tests')}
extras['all'] = extras['cls'] + extras['seg'] + extras['det']

setup(
    name='fcaformer_mm',
    version=get_version(),
    description='FcaFormer (ICCV 2023) for the OpenMMLab 2.0 stack: '
    'mmpretrain, mmsegmentation and mmdetection',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    keywords='computer vision, vision transformer, OpenMMLab, FcaFormer',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'demo')),
    include_package_data=True,
    python_requires='>=3.9',
    install_requires=read_requirements('runtime'),
    extras_require=extras,
    license='Apache License 2.0',
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)

"""Setup script of fcaformer_mm.

Besides the Python package, a built distribution carries the repository's
``configs/``, ``tools/`` and ``model-index.yml`` under ``fcaformer_mm/.mim``,
the layout of the OpenMMLab codebases' wheels: OpenMIM (``mim search``,
``mim list``), :mod:`fcaformer_mm.apis` and mmpretrain's model hub find the
configs there once the package is installed without the clone. They are
copied into the build directory (never into the source tree), so an
editable install keeps reading them from the clone itself.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
#: What goes into ``fcaformer_mm/.mim`` of a built distribution.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


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


class BuildPyWithMim(build_py):
    """``build_py`` that also copies :data:`MIM_FILES` to
    ``<build_lib>/fcaformer_mm/.mim`` (Python caches left out)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the package is read from the clone
            return
        target = Path(self.build_lib) / 'fcaformer_mm' / '.mim'
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        ignore = shutil.ignore_patterns('__pycache__', '*.py[cod]')
        for name in MIM_FILES:
            src = HERE / name
            if not src.exists():
                raise FileNotFoundError(
                    f'{src} is missing: a distribution of fcaformer_mm must '
                    f'carry {", ".join(MIM_FILES)}. Build from a complete '
                    'clone or sdist.')
            if src.is_dir():
                shutil.copytree(src, target / name, ignore=ignore)
            else:
                shutil.copy2(src, target / name)


extras = {name: read_requirements(name)
          for name in ('cls', 'seg', 'det', 'mim', 'tests')}
extras['all'] = extras['cls'] + extras['seg'] + extras['det'] + extras['mim']

setup(
    name='fcaformer_mm',
    version=get_version(),
    description='FcaFormer (ICCV 2023) for the OpenMMLab 2.0 stack: '
    'mmpretrain, mmsegmentation and mmdetection',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    keywords='computer vision, vision transformer, OpenMMLab, FcaFormer',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'tests.*',
                                    'demo')),
    include_package_data=True,
    cmdclass={'build_py': BuildPyWithMim},
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

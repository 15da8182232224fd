"""Find user code named ``package.module:object`` in a scenario: its folder first, then the Python path.

A scenario names code of its own in two places: a model factory
(``model.factory``, `fedsim.learn.zoo`) and a method plugin (``methods.<label>.kind``,
`fedsim.learn.plugins`). Both are found the same way, by `import_target`:

1. the scenario file's folder, when the module's top-level name is there
   (``<folder>/<top>.py`` or a package ``<folder>/<top>/``): that folder is put
   first on ``sys.path`` while the module is imported, and taken off afterwards;
2. the Python path (``PYTHONPATH``, the current directory for ``python -m``,
   installed packages).

So ``fedsim scenario examples/custom_model/scenario.yaml`` finds
``custom_mlp.py`` beside the scenario from any working directory, without
``PYTHONPATH``. A module is imported once per process (``sys.modules``): two
scenarios in one process whose folders hold different modules of the same name
get the first one imported (name them apart).

Imports nothing heavy (no torch): validation imports this module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def in_folder(base_dir: Path | None, module_name: str) -> bool:
    """True when ``module_name``'s top-level module or package is in ``base_dir``."""
    if base_dir is None:
        return False
    top = module_name.split(".")[0]
    return (base_dir / f"{top}.py").is_file() or (base_dir / top).is_dir()


@contextmanager
def search_first(base_dir: Path | None, module_name: str) -> Iterator[None]:
    """``base_dir`` first on ``sys.path`` while importing ``module_name``, when
    its top-level module or package is there (`in_folder`); restored afterwards."""
    if not in_folder(base_dir, module_name):
        yield
        return
    entry = str(base_dir)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def where_looked(base_dir: Path | None) -> str:
    """Where `import_target` looks, for messages."""
    folder = f"the scenario's folder {base_dir}, then " if base_dir is not None else ""
    return f"{folder}the Python path (PYTHONPATH, installed packages)"


def import_target(target: str, base_dir: Path | None = None) -> object:
    """The object ``target`` (``"package.module:object"``, ``object`` possibly
    dotted) names, its module imported from ``base_dir`` first (module docstring).

    Raises:
        ValueError: the module cannot be imported (its error quoted, and where it
            was looked for), or has no such attribute; each names the module.
    """
    module_name, _, attr = target.partition(":")
    try:
        with search_first(base_dir, module_name):
            obj: object = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code
        raise ValueError(f"cannot import module {module_name!r} of {target!r} ({type(exc).__name__}: "
                         f"{exc}); looked in {where_looked(base_dir)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


__all__ = ["import_target", "in_folder", "search_first", "where_looked"]

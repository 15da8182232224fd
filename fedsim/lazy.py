"""Lazy package exports (PEP 562): a package names what it exports and the
module that defines each name; the module is imported on first access.

This keeps ``import fedsim.config`` (and so ``fedsim validate``) free of torch
and simpy: a package's ``__init__`` imports nothing heavy until a name is used
(tests/test_import_light.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from importlib import import_module
from typing import Any

__all__ = ["exports"]


def exports(namespace: MutableMapping[str, Any], table: Mapping[str, str]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names load lazily.

    Args:
        namespace: the package's ``globals()``; a loaded name is stored there,
            so later accesses skip ``__getattr__``.
        table: exported name -> defining module, relative to the package
            (``"datasets"``) or absolute (``"fedsim.report.pages"``).

    Use in a package's ``__init__``::

        __getattr__, __dir__ = lazy.exports(globals(), _EXPORTS)
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = module if module.startswith("fedsim.") else f"{package}.{module}"
        value = getattr(import_module(target), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__

"""Lazy exports: a package's public names, imported from their home modules on first use.

``import dualex`` and the command line stay light (no torch) because the packages whose names
pull torch in (the root, ``dualex.train``, ``dualex.search``, ``dualex.concepts``) resolve them
here, through :pep:`562` module ``__getattr__``. Standard library only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import each name of ``homes`` on first use.

    Args:
        package: The package's ``__name__``.
        homes: Public name → the module that defines it (``{"Index": "dualex.search.index"}``).

    Returns:
        The module-level ``__getattr__`` (an unknown name raises ``AttributeError``; a resolved
        one is cached on the package) and ``__dir__`` (the package's names and the lazy ones).
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return __getattr__, __dir__

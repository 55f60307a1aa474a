"""Public names of a package, imported on first use (so that `avatar --help` imports no torch or diffusers)."""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], object]]:
    """(`__all__`, a module `__getattr__`) for `package` whose public `name` lives in submodule `exports[name]`."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(exports), __getattr__

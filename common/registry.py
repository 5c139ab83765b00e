"""The one name → object registry with module discovery that upstreams (``upstream/registry.py``) and tasks
(``tasks/registry.py``) use: a new upstream or task is one file with a decorated definition and nothing else to edit.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects registered under names; the modules of ``package`` are imported once, on the first full lookup.

    kind: what the objects are, for messages ("upstream", "task"). package / package_dir: the package whose modules
    register themselves on import; skip: its modules that hold nothing to register.
    """

    def __init__(self, kind: str, package: str, package_dir: str | Path, skip: set[str]):
        self.kind, self.package, self.package_dir, self.skip = kind, package, Path(package_dir), skip
        self.items: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a second, different object under the same name is a ``ValueError``."""
        if name in self.items and self.items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice "
                             f"({self.items[name].__module__} and {obj.__module__})")
        self.items[name] = obj
        return obj

    def discover(self) -> None:
        """Import every module of the package once (except ``skip`` and private ones), so their decorators run."""
        if self._discovered:
            return
        self._discovered = True
        for info in pkgutil.iter_modules([str(self.package_dir)]):
            if self.is_module(info.name):
                importlib.import_module(f"{self.package}.{info.name}")

    def is_module(self, name: str) -> bool:
        """Whether ``name`` is a module (or subpackage) of the package that may register something."""
        return (name.isidentifier() and name not in self.skip and not name.startswith("_") and
                ((self.package_dir / f"{name}.py").is_file() or (self.package_dir / name / "__init__.py").is_file()))

    def names(self) -> list[str]:
        self.discover()
        return sorted(self.items)

"""Registries that import nothing: a name → object table filled from the top on first use.

The map methods (:data:`napari_correlax.maps.methods.METHODS`) and the checkpoint formats
(:data:`napari_correlax.models.checkpoint.CHECKPOINT_FORMATS`) are kept in a :class:`Registry`. The
modules that define them sit low in the package (``maps``, ``models``) and never import
what fills them: the first time a registry is read, it imports
:mod:`napari_correlax.builtin`, the one module at the top of the package that knows every
built-in map method and checkpoint format (GMIC's included) and registers them in order.
Anything registered later (a plugin, a test) is added after the built-ins.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TypeVar

from .errors import CorrelaxError

__all__ = ["BUILTIN_MODULE", "Registry"]

#: The module that registers the built-in entries when a registry is first read.
BUILTIN_MODULE = "napari_correlax.builtin"

_T = TypeVar("_T")


class Registry(Mapping[str, _T]):
    """An ordered name → entry table, filled with the built-ins when first read.

    ``what`` names an entry in error messages (``"map method"``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, _T] = {}
        self._filled = False

    def _fill(self) -> None:
        if not self._filled:
            self._filled = True  # set first: the built-in module registers while importing
            try:
                importlib.import_module(BUILTIN_MODULE)
            except BaseException:
                self._filled = False  # try again on the next read rather than stay empty
                raise

    def register(self, name: str, entry: _T) -> None:
        """Add (or replace) ``name``; the built-ins are registered first."""
        self._fill()
        self._entries[name] = entry

    def pop(self, name: str) -> _T:
        """Remove ``name`` and return its entry (KeyError when absent)."""
        self._fill()
        return self._entries.pop(name)

    def get_known(self, name: str) -> _T:
        """The entry ``name``, or CorrelaxError naming the known ones."""
        self._fill()
        try:
            return self._entries[name]
        except KeyError:
            raise CorrelaxError(
                f"unknown {self.what} {name!r}; choose one of {', '.join(self._entries)}"
            ) from None

    def __getitem__(self, name: str) -> _T:
        self._fill()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._fill()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{self.what} registry: {', '.join(self)}>"

"""Command-line options made from a settings dataclass (:mod:`napari_correlax.train.settings`).

:func:`add_options` adds one option per field that carries :func:`~napari_correlax.train.
settings.option` metadata (flag, help, type, choices, group), with the field's default;
:func:`settings_from_args` builds the settings back from the parsed options. The
defaults, help texts and value checks therefore live only with the settings.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..train.settings import cli_fields, default_of, flag_of

__all__ = ["add_options", "settings_from_args"]


def _dest(path: tuple[str, ...]) -> str:
    return "__".join(path)


def _arguments(f: dataclasses.Field, path: tuple[str, ...]) -> dict[str, Any]:
    """``add_argument`` keywords of one field."""
    meta, default = f.metadata, default_of(f)
    kw: dict[str, Any] = {"dest": _dest(path), "default": default, "help": meta["help"]}
    if isinstance(default, bool):
        return kw | {"action": "store_true"}
    if isinstance(default, tuple):
        kw |= {"nargs": len(default), "type": meta["type"] or type(default[0])}
    elif isinstance(default, list):
        kw |= {"nargs": "+", "type": meta["type"] or str}
    else:
        kw["type"] = meta["type"] or type(default)
    if meta["choices"]:
        kw["choices"] = meta["choices"]
    if meta["metavar"]:
        kw["metavar"] = (tuple(meta["metavar"]) if isinstance(meta["metavar"], (list, tuple))
                         else meta["metavar"])
    return kw


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add an option for every command-line field of the settings class ``cls``; fields
    of a ``group`` go to an argument group of that name (created once, in order)."""
    groups: dict[str, Any] = {}
    for path, f in cli_fields(cls):
        name = f.metadata["group"]
        target: Any = parser
        if name:
            if name not in groups:
                groups[name] = parser.add_argument_group(name)
            target = groups[name]
        target.add_argument(flag_of(f), *f.metadata["aliases"], **_arguments(f, path))


def settings_from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """The settings of ``cls`` that the parsed options ``args`` name (``given``: values of
    fields without an option, such as ``data`` and ``out``)."""
    values: dict[str, Any] = dict(given)
    nested: dict[str, dict[str, Any]] = {}
    for path, f in cli_fields(cls):
        value = getattr(args, _dest(path))
        if isinstance(value, list) and isinstance(default_of(f), tuple):
            value = tuple(value)
        if len(path) == 1:
            values[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1]] = value
    outer = {f.name: f for f in dataclasses.fields(cls)}
    for name, inner in nested.items():
        values[name] = dataclasses.replace(default_of(outer[name]), **inner)
    return cls(**values)

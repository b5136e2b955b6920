"""Dagster run config built from the core dataclasses: one source of truth for option names,
types and defaults."""

from __future__ import annotations

import dataclasses
import typing

import dagster as dg
import pydantic


def config_from_dataclass(name: str, source: type, doc: str, **extra) -> type[dg.Config]:
    """A `dg.Config` class with `source`'s fields (and `extra` ones: name=(type, default))."""
    hints = typing.get_type_hints(source)
    fields = {f.name: _config_field(hints[f.name], f.default) for f in dataclasses.fields(source)}
    return pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields, **extra)


def _config_field(hint, default):
    # Dagster config has lists, not tuples: a `tuple[T, ...]` field becomes `list[T]`
    # (the dataclass takes it back with `tuple(...)`).
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]], list(default)
    return hint, default

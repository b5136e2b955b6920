"""Dagster run config and resources built from the core settings dataclasses, so each setting is
declared once: its name, type and default in core (and its `metadata={"doc": ...}`, shown in the
launchpad), read back in the asset as the typed dataclass with `config.settings(Kind)`.

    SnippetRunConfig = run_config(SnippetConfig)        # a dg.Config with SnippetConfig's fields
    settings = config.settings(SnippetConfig)           # -> SnippetConfig, typed

Resources are built the same way on a base class that holds their behaviour
(`resource_with_settings`).
"""

from __future__ import annotations

import dataclasses
import typing

import dagster as dg
import pydantic

S = typing.TypeVar("S")


class SettingsMixin:
    """Turns a generated config or resource back into the core dataclass it was built from."""

    def settings(self, kind: type[S]) -> S:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
        hints = typing.get_type_hints(kind)
        return kind(**{name: tuple(v) if _is_tuple(hints[name]) and v is not None else v for name, v in values.items()})


class SettingsConfig(dg.Config, SettingsMixin):
    """Base of the run configs built by `run_config`."""


def run_config(kind: type, doc: str | None = None, exclude: tuple[str, ...] = ()) -> type[SettingsConfig]:
    """A `dg.Config` class with the fields of the dataclass `kind` (minus `exclude`)."""
    return pydantic.create_model(
        f"{kind.__name__}RunConfig", __base__=SettingsConfig, __doc__=doc or kind.__doc__, **_fields(kind, exclude)
    )


R = typing.TypeVar("R", bound=dg.ConfigurableResource)


def resource_with_settings(base: type[R], kind: type, exclude: tuple[str, ...] = ()) -> type[R]:
    """`base` (a ConfigurableResource that also derives SettingsMixin) with the fields of `kind`."""
    return pydantic.create_model(
        base.__name__, __base__=base, __doc__=base.__doc__, __module__=base.__module__, **_fields(kind, exclude)
    )


def _fields(kind: type, exclude: tuple[str, ...]) -> dict:
    hints = typing.get_type_hints(kind)
    out = {}
    for f in dataclasses.fields(kind):
        if f.name in exclude:
            continue
        hint, default = hints[f.name], f.default
        if _is_tuple(hint):  # Dagster config has lists, not tuples
            hint, default = list[typing.get_args(hint)[0]], list(default)
        out[f.name] = (hint, pydantic.Field(default=default, description=f.metadata.get("doc")))
    return out


def _is_tuple(hint) -> bool:
    return typing.get_origin(hint) is tuple

"""Configs as JSON: nested dataclasses to dicts and back, flat field names, and a run's identity
(the config without the settings a resumed run may change).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from eqxrl.core.checks import ConfigError
from eqxrl.run.settings import VOLATILE_FIELDS


def json_normal(value: Any) -> Any:
    """A value of a (nested) dataclass config as JSON would hold it: dataclasses become dicts,
    tuples lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: json_normal(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [json_normal(v) for v in value]
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-normal dict of a (nested) dataclass config; tuples become lists."""
    return json_normal(config)


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Rebuild a (nested) dataclass config from `to_dict`'s output; unknown keys are errors."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where} has fields {unknown} that {cls.__name__} does not know.")
    kwargs = {}
    for name, value in values.items():
        kind = _dataclass_in(hints[name])
        if kind is not None and isinstance(value, dict):
            kwargs[name] = from_dict(kind, value, f"{where}.{name}")
        else:
            kwargs[name] = _tuples(value)
    return cls(**kwargs)


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples they were (nested ones too, as in `grid`)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass inside a type hint such as `Annotated[OnlineRun, ...]`, if any."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def flat_fields(config: Any, prefix: str = "") -> dict[str, Any]:
    """`{field: value}` of a nested config with nested names joined by dots (`run.seed`)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= flat_fields(value, f"{prefix}{f.name}.")
        else:
            out[prefix + f.name] = value
    return out


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default (its factory called), or `dataclasses.MISSING`."""
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


def defaults(cls: type) -> dict[str, Any]:
    """The default of every (nested) field of a config class, as `flat_fields` names them."""
    out = {}
    for f in dataclasses.fields(cls):
        default = field_default(f)
        if dataclasses.is_dataclass(default):
            out |= {f"{f.name}.{k}": v for k, v in flat_fields(default).items()}
        else:
            out[f.name] = default
    return out


def identity(config: Any) -> dict[str, Any]:
    """The config as a JSON dict without the settings a resumed run may change."""
    values = to_dict(config)
    run = values.get("run", {})
    return values | {"run": {k: v for k, v in run.items() if k not in VOLATILE_FIELDS}}


def field_defaults(config: Any) -> dict[str, Any]:
    """The JSON-normal default of each top-level field of a config that has one (what a
    checkpoint written before the field existed is taken to have used)."""
    pairs = ((f.name, field_default(f)) for f in dataclasses.fields(config))
    return {name: json_normal(d) for name, d in pairs if d is not dataclasses.MISSING}

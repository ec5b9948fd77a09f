"""Swept hyperparameters: marked once in a `Config`, carried into `init` as array leaves.

A field that people sweep (a learning rate, the discount, τ, ...) is marked where it is
declared, and keeps its docstring for `--help`:

    discount: Swept[float] = 0.99
    \"\"\"discount factor γ\"\"\"

`init(key, spec, config, hyper)` reads such values from `hyper` (a `Hyper` of float32/int32
scalars), never from `config`, and puts them into the state (learning rates into the optimiser
state, the rest as array leaves). A run of several agents builds one `Hyper` per agent, stacks
them, and vmaps `init` over the stack, so a grid over marked fields is one compiled program and
the config itself is never traced. A field that is not marked cannot take several values.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Shaped

T = TypeVar("T")


class _SweptMarker:
    def __repr__(self) -> str:
        return "SWEPT"


SWEPT = _SweptMarker()
"""The `Annotated` metadata that marks a config field as sweepable."""

Swept = Annotated[T, SWEPT]
"""`Swept[float]`: a config field that a grid may give several values (see module docstring)."""


def swept_fields(config_class: type) -> tuple[str, ...]:
    """The names of the fields of `config_class` marked `Swept`, in declaration order."""
    hints = typing.get_type_hints(config_class, include_extras=True)
    return tuple(f.name for f in dataclasses.fields(config_class)
                 if any(m is SWEPT for m in getattr(hints[f.name], "__metadata__", ())))


def value_dtype(value: Any) -> Any:
    """The dtype a swept value is carried in: int32 for ints, float32 otherwise."""
    return jnp.int32 if isinstance(value, int) and not isinstance(value, bool) else jnp.float32


class Hyper(eqx.Module):
    """One agent's swept hyperparameters as scalar arrays: `hyper.discount`.

    Under the loops' vmap over agents each value is that agent's (its grid point's).
    """

    values: dict[str, Shaped[Array, ""]]

    def __getattr__(self, name: str) -> Shaped[Array, ""]:
        if name.startswith("__") or name == "values":
            raise AttributeError(name)
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(
                f"{name!r} is not a swept hyperparameter (those are {sorted(self.values)}); "
                "mark its Config field Swept[...] to read it from `hyper`.") from None


def hyper_of(config: Any, values: Mapping[str, float | int] | None = None) -> Hyper:
    """The `Hyper` of `config`'s marked fields: their values in `config`, or in `values` (one
    grid point) where it has them."""
    values = values or {}
    swept = swept_fields(type(config))
    unknown = sorted(set(values) - set(swept))
    if unknown:
        raise ValueError(
            f"hyper_of: {unknown} are not swept hyperparameters of {type(config).__name__}, so "
            f"their values would be ignored; the swept ones are {list(swept)} (a field is swept "
            "where its Config marks it eqxrl.Swept).")
    return Hyper({name: jnp.asarray(values.get(name, getattr(config, name)),
                                    value_dtype(getattr(config, name)))
                  for name in swept_fields(type(config))})

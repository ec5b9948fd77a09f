"""Config checks with errors that name the flag, the value and the fix (`ConfigError`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A setting that cannot be honoured; the message names the flag. The command line prints
    it as `error: ...` (exit code 2) instead of a traceback."""


def flag(name: str) -> str:
    """The command-line flag of a config field: `actor_lr` -> `--actor-lr`."""
    return "--" + name.replace("_", "-")


def fail(name: str, expected: str, value: Any, hint: str = "") -> None:
    """Raise the error for a field whose value is not allowed.

    Args:
        name: the config field; the message names its flag.
        expected: what the value must be, as a phrase (`">= 1"`, `"distinct seeds"`).
        value: the value given.
        hint: a sentence on how to fix it, appended to the message.

    Raises:
        ConfigError: always, as `--flag must be <expected>, got <value>. <hint>`.
    """
    hint = " " + hint if hint else ""
    raise ConfigError(f"{flag(name)} must be {expected}, got {value!r}.{hint}")


def at_least(config: Any, minimum: int, *names: str) -> None:
    """Require each named integer field to be >= `minimum`."""
    for name in names:
        if not getattr(config, name) >= minimum:
            fail(name, f">= {minimum}", getattr(config, name))


def positive(config: Any, *names: str) -> None:
    """Require each named field to be finite and > 0 (learning rates, temperatures)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            fail(name, "a finite number > 0", value)


def non_negative(config: Any, *names: str) -> None:
    """Require each named field to be finite and >= 0 (weights, noise scales)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            fail(name, "a finite number >= 0", value)


def within(
    config: Any, name: str, low: int | float, high: int | float, *, open_low: bool = False,
    open_high: bool = False,
) -> None:
    """Require a field to lie in the interval from `low` to `high` (closed unless told)."""
    value = getattr(config, name)
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (math.isfinite(value) and above and below):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        fail(name, f"in {interval}", value)


def ordered(config: Any, lower: str, upper: str) -> None:
    """Require `config.lower <= config.upper` (for example log-std clips)."""
    a, b = getattr(config, lower), getattr(config, upper)
    if not (math.isfinite(a) and math.isfinite(b) and a <= b):
        raise ConfigError(f"{flag(lower)} ({a}) must be finite and <= {flag(upper)} ({b}).")


def layer_sizes(config: Any, name: str = "hidden_dims") -> None:
    """Require a non-empty tuple of positive layer sizes."""
    sizes: Sequence[int] = getattr(config, name)
    if not sizes or min(sizes) < 1:
        fail(name, "one or more positive layer sizes", sizes)


def changed_flags(config: Any, *names: str) -> list[str]:
    """The flags of the named fields (default: every field) of a dataclass config whose values
    differ from their defaults: what the user set."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changed = []
    for name in names or tuple(fields):
        f = fields[name]
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if getattr(config, name) != default:
            changed.append(flag(name))
    return changed


def only_with(config: Any, enabled: bool, switch: str, *names: str) -> None:
    """Refuse the named fields, changed from their defaults, that take effect only with
    `switch` (a flag such as '--cql-lagrange') when it is off: nothing is ignored silently."""
    if enabled:
        return
    changed = changed_flags(config, *names)
    if changed:
        them = "them" if len(changed) > 1 else "it"
        raise ConfigError(
            f"{', '.join(changed)} take(s) effect only with {switch}, which this run does not "
            f"have: add {switch}, or drop {them}.")

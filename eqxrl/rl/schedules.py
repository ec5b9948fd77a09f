""""Do this every k updates" inside a compiled update, without computing the skipped work."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

T = TypeVar("T")


AGENTS = "agents"  # the axis name of the loops' vmap over agents (`eqxrl.run.agents`)


def every(period: int | Int[Array, ""], step: Int[Array, ""], fn: Callable[..., T], keep: T,
          *args: Any, skip_first: bool = False) -> T:
    """`fn(*args)` when `step % period == 0` (and `step > 0` with `skip_first`), else `keep` (a
    tree laid out like fn's result).

    Only the branch taken runs (`lax.cond`), so skipped updates cost nothing. Under a plain
    `vmap` with a batched `step`, JAX turns the cond into a select and evaluates both branches;
    under the loops' vmap over agents (axis name `AGENTS`), whose agents all take the same
    number of updates, the condition is taken over the agents so the cond stays a cond.
    """
    due = step % period == 0
    if skip_first:
        due = due & (step > 0)
    with contextlib.suppress(NameError):  # NameError: not inside the loops' vmap over agents
        due = jax.lax.pmax(due.astype(jnp.int32), AGENTS) > 0  # the same for every agent
    return jax.lax.cond(due, lambda: fn(*args), lambda: keep)

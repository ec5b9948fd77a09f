"""`--nan-check` at the env boundary: a NaN or inf action names the learner, a NaN or inf
observation or reward names the env, each with the agent and the env step.

The host loops check each step's numpy values as they pass (`check_action` before the env
steps, `check_env_output` after). The compiled loops cannot raise inside a `lax.scan`, so each
step records a code (`step_code`: `FINE`, `BAD_ACTION` or `BAD_ENV`) and the host reads the
chunk's codes when it returns (`raise_first_bad`). The codes are computed only with
`--nan-check`; without it the compiled program is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FINE, BAD_ACTION, BAD_ENV = 0, 1, 2


def _finite(leaves: Sequence[Any]) -> bool:
    return all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(x.dtype, np.floating))


def _action_message(env_id: str, agent: int, step: int) -> str:
    return (f"agent {agent} chose a NaN or inf action for --env-id {env_id} at env step {step} "
            "(nan_check is on): the learner made it, not the env. The last checkpoint holds the "
            "state before it; the logged losses show where learning diverged.")


def _env_message(env_id: str, agent: int, step: int) -> str:
    return (f"--env-id {env_id} returned a NaN or inf observation or reward to agent {agent} at "
            f"env step {step} (nan_check is on): the env itself, not the learner, made it. The "
            "last checkpoint holds the state before it.")


def check_action(action: Any, env_id: str, agent: int, step: int) -> None:
    """Stop before a host env is stepped with a NaN or inf action."""
    if not _finite([np.asarray(x) for x in jax.tree.leaves(action)]):
        raise FloatingPointError(_action_message(env_id, agent, step))


def check_env_output(obs: Any, reward: Any, env_id: str, agent: int, step: int) -> None:
    """Stop when a host env returns a NaN or inf observation or reward."""
    if not _finite([np.asarray(x) for x in jax.tree.leaves(obs)] + [np.asarray(reward)]):
        raise FloatingPointError(_env_message(env_id, agent, step))


def step_code(action: Any, obs: Any, reward: Any) -> jax.Array:
    """Inside a compiled step: `BAD_ACTION` if the action is not finite, else `BAD_ENV` if the
    env's observation or reward is not finite, else `FINE` (an int8 scalar)."""
    def finite(tree):
        leaves = [x for x in map(jnp.asarray, jax.tree.leaves(tree))
                  if jnp.issubdtype(x.dtype, jnp.floating)]
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else (
            jnp.bool_(True))

    return jnp.where(~finite(action), BAD_ACTION,
                     jnp.where(~finite((obs, reward)), BAD_ENV, FINE)).astype(jnp.int8)


def raise_first_bad(codes: np.ndarray, env_id: str, agents: Sequence[int], first_step: int,
                    steps_per_index: int = 1) -> None:
    """Raise for the earliest bad step of a chunk's codes, shape (agent, index) in time order;
    index `i` is env step `first_step + i * steps_per_index`."""
    codes = np.asarray(codes).reshape(len(agents), -1)
    bad = np.flatnonzero(np.any(codes != FINE, axis=0))
    if bad.size == 0:
        return
    index = int(bad[0])
    row = int(np.flatnonzero(codes[:, index] != FINE)[0])
    step = first_step + index * steps_per_index
    message = _action_message if codes[row, index] == BAD_ACTION else _env_message
    raise FloatingPointError(message(env_id, agents[row], step))

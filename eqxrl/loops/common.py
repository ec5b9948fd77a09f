"""What the host and the compiled off-policy loops share: random actions, fresh state copies,
and the algorithm's optional hooks (its batch sampler and its exploring `act`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from eqxrl.core.spec import EnvSpec
from eqxrl.data.replay import ReplayBuffer
from eqxrl.loops.contract import OffPolicyHooks


def random_action(spec: EnvSpec, key: jax.Array) -> jax.Array:
    """A uniformly random action of `spec` (in [-1, 1] for continuous actions)."""
    if spec.discrete:
        return jax.random.randint(key, (), 0, spec.num_actions)
    return jax.random.uniform(key, spec.action_shape, minval=-1.0, maxval=1.0)


def stack_rows(rows: list) -> Any:
    """Host values of each agent (trees of numpy arrays) stacked along a new agent axis."""
    if len(rows) == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], rows[0])
    return jax.tree.map(lambda *xs: np.stack(xs), *rows)


def fresh_copy(tree: Any) -> Any:
    """Give every array leaf its own buffer (donation needs each buffer once, and a target
    network starts as the online network). Inside a compiled call the copies cost nothing."""
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, tree)


def batch_sampler(hooks: OffPolicyHooks, config: Any) -> Callable[[ReplayBuffer, jax.Array], Any]:
    """`sample(buffer, key)`: one batch of `config.run.batch_size` for the algorithm's `update`,
    drawn by `hooks.sample_batch(buffer, key, batch_size, config)` if given, else by
    `buffer.sample`."""
    batch_size, custom = config.run.batch_size, hooks.sample_batch
    if custom is None:
        return lambda buffer, key: buffer.sample(key, batch_size)
    return lambda buffer, key: custom(buffer, key, batch_size, config)


def explorer(algorithm: ModuleType, hooks: OffPolicyHooks) -> Callable[..., Any]:
    """`explore(state, obs, key, env_step)`: the loops' action choice while training:
    `hooks.explore` if given (it sees the env steps taken so far), else `algorithm.act`."""
    if hooks.explore is not None:
        return hooks.explore
    act = algorithm.act
    return lambda state, obs, key, env_step: act(state, obs, key)

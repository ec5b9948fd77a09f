"""Critic mathematics several algorithms share: critic ensembles, TD targets and the critics'
TD loss, discrete Q-values and greedy actions, TD3's target-policy smoothing.

They are concepts, not plumbing: each is the same mathematics wherever it is used. What makes
an algorithm *that* algorithm (its losses, its update order) stays in its file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxrl.core.spec import EnvSpec
from eqxrl.core.types import Metrics, Obs
from eqxrl.nn.heads import QFunction
from eqxrl.nn.mlp import Ensemble


def q_ensemble(
    spec: EnvSpec, hidden_dims: tuple[int, ...], num: int = 2, *, key: PRNGKeyArray,
    vectorise: bool = False, **kwargs: Any,
) -> Ensemble:
    """`num` Q-functions Q(s, a) for `spec` as one `Ensemble`; `kwargs` go to each `MLP`.

    `vectorise=True` stacks the critics and applies them with one vmap (see `Ensemble`).
    """
    return Ensemble(
        lambda k: QFunction(spec.obs_dim, spec.action_dim, hidden_dims, key=k, **kwargs), num,
        key=key, vectorise=vectorise,
    )


def td_target(
    reward: Float[Array, " batch"],
    terminated: Bool[Array, " batch"],
    next_value: Float[Array, " batch"],
    discount: Float[Array, ""] | float,
) -> Float[Array, " batch"]:
    """The TD target r + γ·(1 − terminated)·V(s'): truncated episodes keep bootstrapping."""
    return reward + discount * jnp.where(terminated, 0.0, next_value)


CriticFn = Callable[..., Float[Array, " ensemble"]]  # (obs, action) -> one Q per member


def ensemble_q(
    critic: CriticFn, obs: Obs, action: Float[Array, "batch action_dim"],
    key: PRNGKeyArray | None = None,
) -> Float[Array, "ensemble batch"]:
    """Q-values of every member of a critic ensemble (an `Ensemble`, or any module that gives
    one Q per member for one (obs, action), such as one behind an encoder) on a batch; `key`
    enables dropout."""
    if key is None:
        return jax.vmap(critic, out_axes=1)(obs, action)
    keys = jax.random.split(key, action.shape[0])
    return jax.vmap(lambda o, a, k: critic(o, a, key=k), out_axes=1)(obs, action, keys)


def discrete_q(
    q: Callable[[Obs], Float[Array, " actions"]], obs: Obs, action: Int[Array, " batch"]
) -> tuple[Float[Array, "batch actions"], Float[Array, " batch"]]:
    """Q(s, ·) of a discrete-action Q-network on a batch, and Q(s, a) of the taken actions."""
    q_all = jax.vmap(q)(obs)
    return q_all, jnp.take_along_axis(q_all, action[:, None], axis=1)[:, 0]


def greedy_actions(
    q: Callable[[Obs], Float[Array, " actions"]], obs: Obs
) -> Int[Array, " batch"]:
    """argmax_a Q(s, a) for a batch of observations, as int32 actions."""
    return jnp.argmax(jax.vmap(q)(obs), axis=1).astype(jnp.int32)


def critic_td_loss(
    critic: CriticFn, obs: Obs, action: Float[Array, "batch action_dim"],
    target_q: Float[Array, " batch"], key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, ""], Metrics]:
    """Σ_j mean_batch (Q_j(s, a) − y)²: each critic regressed to the target, summed."""
    q = ensemble_q(critic, obs, action, key)  # (ensemble, batch)
    loss = jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))
    return loss, {"q_mean": jnp.mean(q), "target_q_mean": jnp.mean(target_q)}


def smoothed_target_action(
    target_actor: Callable[[Obs], Array], next_obs: Obs, key: PRNGKeyArray,
    noise: Float[Array, ""] | float, noise_clip: Float[Array, ""] | float,
) -> Float[Array, "batch action_dim"]:
    """clip(μ̄(s') + clip(σ·N(0, 1), −c, c), −1, 1): TD3's target-policy smoothing on a batch."""
    action = jax.vmap(target_actor)(next_obs)
    eps = jnp.clip(noise * jax.random.normal(key, action.shape), -noise_clip, noise_clip)
    return jnp.clip(action + eps, -1.0, 1.0)

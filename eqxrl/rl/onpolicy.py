"""On-policy mathematics: generalised advantage estimation and PPO's clipped losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from eqxrl.core.types import Metrics


def gae(
    reward: Float[Array, " steps *envs"],
    value: Float[Array, " steps *envs"],
    next_value: Float[Array, " steps *envs"],
    terminated: Bool[Array, " steps *envs"],
    truncated: Bool[Array, " steps *envs"],
    discount: Float[Array, ""] | float,
    gae_lambda: Float[Array, ""] | float,
) -> tuple[Float[Array, " steps *envs"], Float[Array, " steps *envs"]]:
    """Generalised advantage estimation over a rollout; returns `(advantages, returns)`.

    `next_value[t]` is V of the observation step t reached (the final observation at an
    episode's end), so δ_t = r_t + γ·(1 − terminated_t)·V(s'_t) − V(s_t): a truncated step
    bootstraps from its final observation, a terminated one does not. The recursion
    A_t = δ_t + γλ·(1 − done_t)·A_{t+1} stops at every episode end (done = terminated or
    truncated). Returns are A + V, the value target.
    """
    delta = reward + discount * jnp.where(terminated, 0.0, next_value) - value
    carry_on = discount * gae_lambda * (1.0 - (terminated | truncated).astype(reward.dtype))

    def back(advantage, xs):
        delta_t, carry_t = xs
        advantage = delta_t + carry_t * advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(back, jnp.zeros_like(delta[0]), (delta, carry_on),
                                 reverse=True)
    return advantages, advantages + value


def clipped_policy_loss(
    log_prob: Float[Array, " batch"], old_log_prob: Float[Array, " batch"],
    advantage: Float[Array, " batch"], clip: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], Metrics]:
    """PPO's clipped surrogate: E[max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε))], ρ = π/π_old.

    Also returns the approximate KL (E[(ρ − 1) − log ρ]) and the fraction of clipped ratios.
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    loss = jnp.mean(jnp.maximum(-advantage * ratio,
                                -advantage * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)))
    return loss, {"approx_kl": jnp.mean(ratio - 1.0 - log_ratio),
                  "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > clip).astype(jnp.float32))}


def value_loss(
    value: Float[Array, " batch"], old_value: Float[Array, " batch"],
    target: Float[Array, " batch"], clip: Float[Array, ""] | float | None = None,
) -> Float[Array, ""]:
    """½·E[(V − target)²]; with `clip`, PPO's pessimistic clipped version: the larger of the
    squared errors of V and of old_V + clip(V − old_V, −ε, ε)."""
    error = (value - target) ** 2
    if clip is not None:
        clipped = old_value + jnp.clip(value - old_value, -clip, clip)
        error = jnp.maximum(error, (clipped - target) ** 2)
    return 0.5 * jnp.mean(error)

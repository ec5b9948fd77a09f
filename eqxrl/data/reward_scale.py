"""Reward scaling by the running scale of the discounted return (SimbaV2's reward scaling):
state that follows the env's reward stream, one step at a time.

`ReturnScaler` keeps the discounted return G of the episode under way, the exact running variance
of G over every step seen, and the largest |G| seen. Rewards are divided by
`max(√(var G + eps), max|G| / g_max)`: the return gets unit scale, and no scaled return exceeds
`g_max` (the edge of a categorical critic's support). The statistics move once per env step
(`observe`), through the loops' `OffPolicyHooks.observe`, never with training batches, which
would count a transition as often as it is sampled.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from eqxrl.core.types import HyperValue
from eqxrl.data.running_norm import RunningNormalizer


class ReturnScaler(eqx.Module):
    """Rewards divided by the running scale of the discounted return of one env's stream.

    Before anything is observed the scale is 1. Under the loops' vmap over agents, each agent
    (each with its own env) keeps its own return and statistics.
    """

    ret: Float[Array, ""]  # the discounted return of the episode under way
    stats: RunningNormalizer  # running mean and variance of that return, every step
    largest: Float[Array, ""]  # the largest |return| seen
    discount: Float[Array, ""]
    g_max: float = eqx.field(static=True)

    @classmethod
    def create(cls, discount: HyperValue, g_max: float = 5.0, eps: float = 1e-8) -> ReturnScaler:
        """Nothing seen yet; `discount` may be a swept hyperparameter (an array)."""
        if not g_max > 0:
            raise ValueError(f"ReturnScaler: g_max must be > 0, got {g_max}.")
        zero = jnp.zeros((), jnp.float32)
        return cls(zero, RunningNormalizer.create(zero, eps), zero,
                   jnp.asarray(discount, jnp.float32), g_max)

    def observe(self, reward: Float[Array, ""], done: Bool[Array, ""]) -> ReturnScaler:
        """After one env step: G ← γ·G + r enters the statistics; a step that ends its episode
        (terminated or truncated) then starts the next from G = 0."""
        ret = self.discount * self.ret + reward.astype(jnp.float32)
        return ReturnScaler(jnp.where(done, 0.0, ret), self.stats.observe(ret[None]),
                            jnp.maximum(self.largest, jnp.abs(ret)), self.discount, self.g_max)

    def scale(self) -> Float[Array, ""]:
        """`max(√(var G + eps), max|G| / g_max)`: what rewards are divided by."""
        std = jnp.sqrt(self.stats.var + self.stats.eps)
        return jnp.maximum(std, self.largest / self.g_max)

    def __call__(self, reward: Float[Array, "*batch"]) -> Float[Array, "*batch"]:
        """The rewards divided by the current scale."""
        return reward / self.scale()

"""SimbaV2's actor and critic on a `HyperTrunk` (`eqxrl.nn.hyperspherical`): a tanh-Gaussian
policy and a categorical (distributional) Q-function.

Each head is `W₂·(s ⊙ W₁h) + b` on the trunk's unit features `h`, with `HyperLinear` weights
(so `project_weights` applies to the whole model) and a free bias.
"""

from __future__ import annotations

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.core.types import Obs
from eqxrl.nn.hyperspherical import HyperLinear, HyperTrunk, Scaler
from eqxrl.nn.mlp import flatten_obs
from eqxrl.nn.policies import TanhMultivariateNormalDiag


class HyperHead(eqx.Module):
    """`W₂·(s ⊙ W₁h) + b`: a `width`-wide hidden layer without activation, then `out_size`."""

    hidden: HyperLinear
    scaler: Scaler
    out: HyperLinear
    bias: Float[Array, " out_size"]

    def __init__(self, width: int, out_size: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.hidden = HyperLinear(width, width, key=k1)
        self.scaler = Scaler(width)
        self.out = HyperLinear(width, out_size, key=k2)
        self.bias = jnp.zeros(out_size)

    def __call__(self, h: Float[Array, "*batch width"]) -> Float[Array, "*batch out_size"]:
        """The head on one feature vector or a batch."""
        y = self.out(self.scaler(self.hidden(h)))
        return y + jnp.broadcast_to(self.bias, y.shape)


class HyperGaussianPolicy(eqx.Module):
    """A tanh-squashed diagonal Gaussian policy on a `HyperTrunk` (SimbaV2's actor).

    Mean and log-std have a head each; the log-std is squashed into [log_std_min, log_std_max]
    by `min + (max − min)·(1 + tanh(raw)) / 2`, so it has a gradient everywhere instead of being
    clipped. Offers `batch(obs)` like `GaussianPolicy`, so `eqxrl.sample_actions` and
    `eqxrl.policy_actions` sample a whole batch with one key.
    """

    trunk: HyperTrunk
    mean_head: HyperHead
    log_std_head: HyperHead
    log_std_min: float = eqx.field(static=True)
    log_std_max: float = eqx.field(static=True)

    def __init__(self, obs_dim: int, action_dim: int, width: int = 128, blocks: int = 1, *,
                 c_shift: float = 3.0, log_std_min: float = -10.0, log_std_max: float = 2.0,
                 key: PRNGKeyArray):
        if not log_std_min < log_std_max:
            raise ValueError(f"Need log_std_min < log_std_max, got {log_std_min}, {log_std_max}.")
        k_trunk, k_mean, k_std = jax.random.split(key, 3)
        self.trunk = HyperTrunk(obs_dim, width, blocks, c_shift=c_shift, key=k_trunk)
        self.mean_head = HyperHead(width, action_dim, key=k_mean)
        self.log_std_head = HyperHead(width, action_dim, key=k_std)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def params(self, obs: Obs) -> tuple[Float[Array, " action_dim"], Float[Array, " action_dim"]]:
        """The Gaussian's mean and std for one observation."""
        h = self.trunk(flatten_obs(obs))
        squashed = 0.5 * (1.0 + jnp.tanh(self.log_std_head(h)))
        log_std = self.log_std_min + (self.log_std_max - self.log_std_min) * squashed
        return self.mean_head(h), jnp.exp(log_std)

    def __call__(self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0,
                 key: PRNGKeyArray | None = None) -> distrax.Distribution:
        """The action distribution for one observation, its std multiplied by `temperature`."""
        mean, std = self.params(obs)
        return TanhMultivariateNormalDiag(mean, std * temperature)

    def batch(self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0
              ) -> distrax.Distribution:
        """One distribution over a batch of observations (batch shape `(batch,)`)."""
        mean, std = jax.vmap(self.params)(obs)
        return TanhMultivariateNormalDiag(mean, std * temperature)


class HyperCategoricalQ(eqx.Module):
    """Z(s, a) as logits over `num_bins` fixed return values (SimbaV2's critic): a `HyperTrunk`
    on the flat observation and action, then a head with one logit per bin. The bins' values
    and the loss are in `eqxrl.rl.distributional`."""

    trunk: HyperTrunk
    head: HyperHead

    def __init__(self, obs_dim: int, action_dim: int, num_bins: int = 101, width: int = 512,
                 blocks: int = 2, *, c_shift: float = 3.0, key: PRNGKeyArray):
        if num_bins < 2:
            raise ValueError(f"HyperCategoricalQ: num_bins must be >= 2, got {num_bins}.")
        k_trunk, k_head = jax.random.split(key)
        self.trunk = HyperTrunk(obs_dim + action_dim, width, blocks, c_shift=c_shift, key=k_trunk)
        self.head = HyperHead(width, num_bins, key=k_head)

    def __call__(self, obs: Obs, action: Float[Array, " action_dim"], *,
                 key: PRNGKeyArray | None = None) -> Float[Array, " bins"]:
        """The logits of Z(s, a) for one observation and action."""
        return self.head(self.trunk(jnp.concatenate([flatten_obs(obs), action])))

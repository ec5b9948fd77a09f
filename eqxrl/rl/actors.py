"""Actions from policies (sampled, modes, with log-probabilities) and the entropy temperature."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

from eqxrl.core.types import HyperValue, Metrics, Obs


def policy_actions(
    policy: Callable[[Obs], Any], obs: Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Shaped[Array, " batch *action"]:
    """Actions of a distribution-valued policy for a batch: samples, or modes if `deterministic`
    (continuous actions, or the indices of a categorical's).

    A policy with a `batch(obs)` method (eqxrl's `GaussianPolicy`, `CategoricalPolicy`) is
    sampled once for the whole batch with `key`; any other `policy(obs)` is sampled per
    observation with keys split from `key`.
    """
    if hasattr(policy, "batch"):
        dist = policy.batch(obs)
        return dist.mode() if deterministic else dist.sample(seed=key)
    if deterministic:
        return jax.vmap(lambda o: policy(o).mode())(obs)
    n = jax.tree.leaves(obs)[0].shape[0]
    return jax.vmap(lambda o, k: policy(o).sample(seed=k))(obs, jax.random.split(key, n))


def sample_actions(
    policy: Callable[[Obs], Any], obs: Obs, key: PRNGKeyArray, num: int | None = None
) -> tuple[Float[Array, " batch *num action_dim"], Float[Array, " batch *num"]]:
    """An action and its log-probability per observation of a batch, or `num` of them (axis 1).

    `policy(obs)` returns a distrax distribution for one observation. A policy with a
    `batch(obs)` method is sampled once for the whole batch (one key, no per-example split).
    """
    if hasattr(policy, "batch"):
        if num is None:
            return policy.batch(obs).sample_and_log_prob(seed=key)
        action, log_prob = policy.batch(obs).sample_and_log_prob(seed=key, sample_shape=(num,))
        return jnp.moveaxis(action, 0, 1), jnp.moveaxis(log_prob, 0, 1)
    n = jax.tree.leaves(obs)[0].shape[0]
    shape = () if num is None else (num,)
    sample = lambda o, k: policy(o).sample_and_log_prob(seed=k, sample_shape=shape)
    return jax.vmap(sample)(obs, jax.random.split(key, n))


class LogScalar(eqx.Module):
    """A positive scalar learned in log space (SAC's temperature α, CQL's multiplier α')."""

    log_value: Float[Array, ""]

    @classmethod
    def create(cls, value: HyperValue) -> LogScalar:
        """A `LogScalar` starting at `value` (> 0)."""
        return cls(jnp.log(jnp.asarray(value, jnp.float32)))

    def __call__(self) -> Float[Array, ""]:
        """The scalar, `exp(log_value)`."""
        return jnp.exp(self.log_value)


TemperatureLoss = Literal["alpha", "log_alpha"]
"""Which loss tunes the temperature: see `temperature_loss`."""


def temperature_loss(
    temperature: LogScalar, entropy: Float[Array, ""], target_entropy: Float[Array, ""],
    form: TemperatureLoss = "alpha",
) -> tuple[Float[Array, ""], Metrics]:
    """Automatic entropy tuning: the loss raises α when the entropy H is below its target.

    - `"alpha"`: α·(H − H_target), the SAC paper's J(α) and jaxrl_m's. Its gradient in log α is
      α·(H − H_target), so the steps on log α shrink as α falls (under Adam, until its
      second-moment estimate catches up).
    - `"log_alpha"`: log α·(H − H_target), SB3's and sbx's (and the CrossQ and TQC authors'
      code). Its gradient in log α does not scale with α.
    """
    if form not in get_args(TemperatureLoss):
        raise ValueError(
            f"temperature_loss: form must be 'alpha' or 'log_alpha', got {form!r}."
        )
    alpha = temperature()
    scale = alpha if form == "alpha" else temperature.log_value
    return scale * (entropy - target_entropy), {"value": alpha}

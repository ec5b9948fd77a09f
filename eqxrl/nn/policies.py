"""Policies: diagonal (tanh-)Gaussian, deterministic and categorical, on distrax distributions.

Every policy maps ONE observation to a distribution (or an action); `batch(obs)` gives the
distribution of a whole batch at once where that is faster than a vmap.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.core.types import Obs
from eqxrl.nn.mlp import MLP, dense, flatten_obs, scaled_linear


def _own_broadcasting(cls: type) -> type:
    """Let distrax broadcast inside its own methods when rank promotion is strict.

    distrax adds sample-shaped and parameter-shaped arrays internally; eqxrl's tests make
    implicit rank promotion an error to catch broadcasting bugs in *our* code, so the
    distributions we return allow it just for distrax's internals.
    """
    for name in ("sample", "sample_and_log_prob", "log_prob", "entropy", "mode", "mean"):
        method = getattr(cls, name)

        @functools.wraps(method)
        def wrapped(self, *args, _method=method, **kwargs):
            with jax.numpy_rank_promotion("allow"):
                return _method(self, *args, **kwargs)

        setattr(cls, name, wrapped)
    return cls


@_own_broadcasting
class MultivariateNormalDiag(distrax.MultivariateNormalDiag):
    """distrax's diagonal Gaussian."""


@_own_broadcasting
class Categorical(distrax.Categorical):
    """distrax's categorical distribution."""


@_own_broadcasting
class TanhMultivariateNormalDiag(distrax.Transformed):
    """A diagonal Gaussian squashed by tanh; its mode is tanh of the Gaussian's mean."""

    def __init__(self, loc: Array, scale: Array):
        base = distrax.MultivariateNormalDiag(loc=loc, scale_diag=scale)
        super().__init__(base, distrax.Block(distrax.Tanh(), ndims=1))

    def mode(self) -> Array:
        """The tanh of the Gaussian's mean (the squashed density's own maximum may differ)."""
        return jnp.tanh(self.distribution.mode())


class GaussianPolicy(eqx.Module):
    """A diagonal Gaussian policy, optionally tanh-squashed to [-1, 1].

    The std is state-dependent (a second head) or a learned free parameter; its log is clipped
    to [log_std_min, log_std_max]. `temperature` multiplies the std: `temperature=0` gives a
    distribution whose samples are its mode. `mlp` is the trunk's class (`MLP`, or
    `BatchRenormMLP`, whose training mode `train_batch` then offers); `mlp_kwargs` go to it.
    """

    trunk: eqx.Module
    mean_head: eqx.nn.Linear
    log_std_head: eqx.nn.Linear | None
    log_std: Float[Array, " action_dim"] | None
    log_std_min: float = eqx.field(static=True)
    log_std_max: float = eqx.field(static=True)
    tanh_squash: bool = eqx.field(static=True)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256),
        *,
        tanh_squash: bool = True,
        state_dependent_std: bool = True,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
        final_init_scale: float = 1e-2,
        key: PRNGKeyArray,
        mlp: type = MLP,
        **mlp_kwargs: Any,
    ):
        if not log_std_min < log_std_max:
            raise ValueError(f"Need log_std_min < log_std_max, got {log_std_min}, {log_std_max}.")
        k1, k2, k3 = jax.random.split(key, 3)
        width = hidden[-1] if hidden else obs_dim
        self.trunk = mlp(obs_dim, width, hidden[:-1], activate_final=True, key=k1, **mlp_kwargs)
        self.mean_head = scaled_linear(width, action_dim, final_init_scale, key=k2)
        if state_dependent_std:
            self.log_std_head = scaled_linear(width, action_dim, final_init_scale, key=k3)
            self.log_std = None
        else:
            self.log_std_head = None
            self.log_std = jnp.zeros(action_dim)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.tanh_squash = tanh_squash

    def __call__(
        self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0, key=None
    ) -> distrax.Distribution:
        """The action distribution for one observation, its std multiplied by `temperature`;
        `key` goes to the trunk (dropout)."""
        return self.distribution(*self.params(obs, key=key), temperature=temperature)

    def params(
        self, obs: Obs, *, key: PRNGKeyArray | None = None
    ) -> tuple[Float[Array, " action_dim"], Float[Array, " action_dim"]]:
        """The Gaussian's mean and (clipped) std for one observation."""
        return self._heads(self.trunk(flatten_obs(obs), key=key))

    def _heads(self, h: Float[Array, "*batch width"]):
        mean = dense(self.mean_head, h)
        log_std = dense(self.log_std_head, h) if self.log_std_head is not None else self.log_std
        log_std = jnp.broadcast_to(log_std, mean.shape)
        return mean, jnp.exp(jnp.clip(log_std, self.log_std_min, self.log_std_max))

    def distribution(
        self, mean: Float[Array, "*batch action_dim"], std: Float[Array, "*batch action_dim"],
        *, temperature: Float[Array, ""] | float = 1.0,
    ) -> distrax.Distribution:
        """The policy's distribution for `params`' outputs, one example or a batch of them."""
        if self.tanh_squash:
            return TanhMultivariateNormalDiag(mean, std * temperature)
        return MultivariateNormalDiag(loc=mean, scale_diag=std * temperature)

    def batch(
        self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0
    ) -> distrax.Distribution:
        """One distribution over a batch of observations (batch shape `(batch,)`).

        Sampling it takes one key for the whole batch: cheaper than a key per example, which
        a vmap over `__call__` needs (distrax distributions do not batch under `vmap`).
        """
        return self.distribution(*jax.vmap(self.params)(obs), temperature=temperature)

    def train_batch(
        self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0
    ) -> tuple[distrax.Distribution, GaussianPolicy]:
        """The batch's distribution in training mode (a trunk with running statistics, such as
        `BatchRenormMLP`), and the policy with the trunk's new statistics."""
        h, trunk = self.trunk.train_batch(jax.vmap(flatten_obs)(obs))
        dist = self.distribution(*self._heads(h), temperature=temperature)
        return dist, eqx.tree_at(lambda p: p.trunk, self, trunk)


class DeterministicPolicy(eqx.Module):
    """μ(s) = tanh(MLP(s)): a deterministic policy with actions in [-1, 1] (TD3, TD3+BC).
    `mlp` is the network class (`MLP`, or `SimbaMLP`); `mlp_kwargs` go to it."""

    net: eqx.Module

    def __init__(self, obs_dim: int, action_dim: int, hidden=(256, 256), *, key,
                 mlp: type = MLP, **mlp_kwargs):
        self.net = mlp(obs_dim, action_dim, hidden, key=key, **mlp_kwargs)

    def __call__(self, obs: Obs, *, key: PRNGKeyArray | None = None) -> Float[Array, " action_dim"]:
        """The action μ(s), in [-1, 1], for one observation."""
        return jnp.tanh(self.net(flatten_obs(obs), key=key))


class CategoricalPolicy(eqx.Module):
    """A categorical policy over discrete actions; logits are divided by `temperature`."""

    net: MLP

    def __init__(self, obs_dim: int, num_actions: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim, num_actions, hidden, final_init_scale=1e-2, key=key, **mlp_kwargs)

    def __call__(
        self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0, key=None
    ) -> Categorical:
        """The distribution over actions for one observation; `temperature=0` is greedy."""
        return self.distribution(self.net(flatten_obs(obs), key=key), temperature=temperature)

    def distribution(
        self, logits: Float[Array, "*batch actions"], *,
        temperature: Float[Array, ""] | float = 1.0,
    ) -> Categorical:
        """The categorical for logits of one example or a batch; `temperature=0` is greedy."""
        greedy = jnp.where(logits >= jnp.max(logits, axis=-1, keepdims=True), 0.0, -jnp.inf)
        safe = jnp.where(temperature > 0, temperature, 1.0)
        return Categorical(logits=jnp.where(temperature > 0, logits / safe, greedy))

    def batch(self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0) -> Categorical:
        """One distribution over a batch of observations, sampled with one key (see
        `GaussianPolicy.batch`)."""
        logits = jax.vmap(lambda o: self.net(flatten_obs(o)))(obs)
        return self.distribution(logits, temperature=temperature)

"""Networks for RL: MLPs, ensembles, Q/value heads, policies and an encoder wrapper.

Every module maps ONE example to one output (the Equinox convention); batch with `jax.vmap`.
Stochastic modules take `key=None`: with no key they run deterministically (no dropout).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .types import Obs


def flatten_obs(obs: Obs) -> Float[Array, " obs_dim"]:
    """Concatenate the ravelled leaves of one observation (dict keys in sorted order)."""
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(obs)])


def _linear(in_size: int, out_size: int, scale: float, *, key: PRNGKeyArray) -> eqx.nn.Linear:
    """A Linear layer with variance-scaling (fan-avg, uniform) weights and zero bias.

    With `scale=1` this is Xavier-uniform, the initialisation jaxrl_m's networks used.
    """
    layer = eqx.nn.Linear(in_size, out_size, key=key)
    init = jax.nn.initializers.variance_scaling(scale, "fan_avg", "uniform")
    weight = init(key, (out_size, in_size), jnp.float32)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, jnp.zeros(out_size)))


def dense(layer: eqx.nn.Linear, x: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
    """`layer(x)` computed as `x @ weight.T + bias`.

    The same numbers as `eqx.nn.Linear.__call__` (`weight @ x + bias`), but under `vmap` the
    batch axis stays the leading axis of the product. With `weight @ x`, XLA:CPU computed a
    batch's activations as (features, batch) and transposed them back: CQL's update, whose
    critics see 7680 sampled actions, spent ~14% of its time on those transposes.
    """
    y = x @ layer.weight.T
    return y if layer.bias is None else y + layer.bias


class MLP(eqx.Module):
    """Linear layers with an activation between them, optional dropout and LayerNorm.

    Hidden layer order is Linear -> Dropout -> LayerNorm -> activation (as in DroQ).
    """

    layers: tuple[eqx.nn.Linear, ...]
    norms: tuple[eqx.nn.LayerNorm, ...] | None
    activation: Callable[[Array], Array] = eqx.field(static=True)
    activate_final: bool = eqx.field(static=True)
    dropout_rate: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        hidden: Sequence[int] = (256, 256),
        *,
        activation: Callable[[Array], Array] = jax.nn.relu,
        activate_final: bool = False,
        layer_norm: bool = False,
        dropout_rate: float = 0.0,
        final_init_scale: float = 1.0,
        key: PRNGKeyArray,
    ):
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
        sizes = (in_size, *hidden, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        n = len(sizes) - 1
        self.layers = tuple(
            _linear(a, b, final_init_scale if i == n - 1 else 1.0, key=k)
            for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys, strict=True))
        )
        normed = sizes[1:] if activate_final else sizes[1:-1]
        self.norms = tuple(eqx.nn.LayerNorm(s) for s in normed) if layer_norm else None
        self.activation = activation
        self.activate_final = activate_final
        self.dropout_rate = dropout_rate

    def __call__(
        self, x: Float[Array, " in_size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out_size"]:
        n = len(self.layers)
        keys = jax.random.split(key, n) if key is not None else [None] * n
        for i, (layer, k) in enumerate(zip(self.layers, keys, strict=True)):
            x = dense(layer, x)
            if i < n - 1 or self.activate_final:
                if k is not None and self.dropout_rate > 0.0:
                    keep = jax.random.bernoulli(k, 1.0 - self.dropout_rate, x.shape)
                    x = jnp.where(keep, x / (1.0 - self.dropout_rate), 0.0)
                if self.norms is not None:
                    x = self.norms[i](x)
                x = self.activation(x)
        return x


class Ensemble(eqx.Module):
    """`num` independent copies of a module; calling it on one example returns outputs with a
    leading `(num, ...)` axis.

    By default the members are kept as a tuple and applied one after another. XLA:CPU runs
    each member's layers as plain matrix products, which is faster than the batched products
    of a vmap over stacked weights (SAC's update, 2 critics: ~10% faster; 10 critics: ~9%;
    `benchmarks/sac_update.py`). `vectorise=True` stacks the members' arrays along a leading
    axis and applies them with one `filter_vmap`: one program whatever `num`, so it compiles
    faster for large ensembles (SAC with 10 critics: 2.3 s against 4.3 s) and may suit
    accelerators, where one batched product can beat many small ones (not measured yet).
    Both give the same outputs and take the same per-member dropout keys.
    """

    members: PyTree
    num: int = eqx.field(static=True)
    vectorise: bool = eqx.field(static=True)

    def __init__(
        self, make: Callable[[PRNGKeyArray], eqx.Module], num: int, *, key: PRNGKeyArray,
        vectorise: bool = False,
    ):
        if num < 1:
            raise ValueError(f"An Ensemble needs num >= 1 members, got {num}.")
        keys = jax.random.split(key, num)
        if vectorise:
            self.members = eqx.filter_vmap(make)(keys)
        else:
            self.members = tuple(make(k) for k in keys)
        self.num = num
        self.vectorise = vectorise

    def __call__(self, *args: Any, key: PRNGKeyArray | None = None) -> PyTree:
        keys = [None] * self.num if key is None else jax.random.split(key, self.num)
        if self.vectorise:
            if key is None:
                return eqx.filter_vmap(lambda m: m(*args))(self.members)
            return eqx.filter_vmap(lambda m, k: m(*args, key=k))(self.members, keys)
        outs = [m(*args, key=k) for m, k in zip(self.members, keys, strict=True)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    def member(self, i: int) -> eqx.Module:
        """The i-th member as a plain module."""
        if not self.vectorise:
            return self.members[i]
        arrays, static = eqx.partition(self.members, eqx.is_array)
        return eqx.combine(jax.tree.map(lambda x: x[i], arrays), static)


class QFunction(eqx.Module):
    """Q(s, a) for continuous actions: an MLP on the flat observation and action."""

    net: MLP

    def __init__(self, obs_dim: int, action_dim: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim + action_dim, 1, hidden, key=key, **mlp_kwargs)

    def __call__(
        self, obs: Obs, action: Float[Array, " action_dim"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        return self.net(jnp.concatenate([flatten_obs(obs), action]), key=key)[0]


class ValueFunction(eqx.Module):
    """V(s): an MLP on the flat observation."""

    net: MLP

    def __init__(self, obs_dim: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim, 1, hidden, key=key, **mlp_kwargs)

    def __call__(self, obs: Obs, *, key: PRNGKeyArray | None = None) -> Float[Array, ""]:
        return self.net(flatten_obs(obs), key=key)[0]


class DiscreteQFunction(eqx.Module):
    """Q(s, .) for discrete actions: one output per action."""

    net: MLP

    def __init__(self, obs_dim: int, num_actions: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim, num_actions, hidden, key=key, **mlp_kwargs)

    def __call__(self, obs: Obs, *, key: PRNGKeyArray | None = None) -> Float[Array, " actions"]:
        return self.net(flatten_obs(obs), key=key)


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
        return jnp.tanh(self.distribution.mode())


class GaussianPolicy(eqx.Module):
    """A diagonal Gaussian policy, optionally tanh-squashed to [-1, 1].

    The std is state-dependent (a second head) or a learned free parameter; its log is clipped
    to [log_std_min, log_std_max]. `temperature` multiplies the std: `temperature=0` gives a
    distribution whose samples are its mode.
    """

    trunk: MLP
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
        **mlp_kwargs: Any,
    ):
        if not log_std_min < log_std_max:
            raise ValueError(f"Need log_std_min < log_std_max, got {log_std_min}, {log_std_max}.")
        k1, k2, k3 = jax.random.split(key, 3)
        width = hidden[-1] if hidden else obs_dim
        self.trunk = MLP(obs_dim, width, hidden[:-1], activate_final=True, key=k1, **mlp_kwargs)
        self.mean_head = _linear(width, action_dim, final_init_scale, key=k2)
        if state_dependent_std:
            self.log_std_head = _linear(width, action_dim, final_init_scale, key=k3)
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
        return self.distribution(*self.params(obs, key=key), temperature=temperature)

    def params(
        self, obs: Obs, *, key: PRNGKeyArray | None = None
    ) -> tuple[Float[Array, " action_dim"], Float[Array, " action_dim"]]:
        """The Gaussian's mean and (clipped) std for one observation."""
        h = self.trunk(flatten_obs(obs), key=key)
        mean = dense(self.mean_head, h)
        log_std = dense(self.log_std_head, h) if self.log_std_head is not None else self.log_std
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


class DeterministicPolicy(eqx.Module):
    """μ(s) = tanh(MLP(s)): a deterministic policy with actions in [-1, 1] (TD3, TD3+BC)."""

    net: MLP

    def __init__(self, obs_dim: int, action_dim: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim, action_dim, hidden, key=key, **mlp_kwargs)

    def __call__(self, obs: Obs, *, key: PRNGKeyArray | None = None) -> Float[Array, " action_dim"]:
        return jnp.tanh(self.net(flatten_obs(obs), key=key))


class CategoricalPolicy(eqx.Module):
    """A categorical policy over discrete actions; logits are divided by `temperature`."""

    net: MLP

    def __init__(self, obs_dim: int, num_actions: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim, num_actions, hidden, final_init_scale=1e-2, key=key, **mlp_kwargs)

    def __call__(
        self, obs: Obs, *, temperature: Float[Array, ""] | float = 1.0, key=None
    ) -> Categorical:
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


class WithEncoder(eqx.Module):
    """Put an encoder in front of any head: `head(encoder(obs), *args)`.

    Pass the same encoder instance to several heads to share it in your own code; within one
    module tree Equinox treats the copies as separate parameters.
    """

    encoder: eqx.Module
    head: eqx.Module

    def __call__(self, obs: Obs, *args: Any, key: PRNGKeyArray | None = None, **kwargs: Any):
        return self.head(self.encoder(obs), *args, key=key, **kwargs)

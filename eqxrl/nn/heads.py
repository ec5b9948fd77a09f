"""Value heads on an MLP: Q(s, a), its quantiles, V(s), discrete Q(s, ·), and an encoder in front
of any head."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.core.types import Obs
from eqxrl.nn.mlp import MLP, flatten_obs


class QFunction(eqx.Module):
    """Q(s, a) for continuous actions: an MLP on the flat observation and action.

    `mlp` is the network class (`MLP`, or `BatchRenormMLP` for CrossQ, whose `train_batch`
    this head then offers); `mlp_kwargs` go to it.
    """

    net: eqx.Module

    def __init__(
        self, obs_dim: int, action_dim: int, hidden=(256, 256), *, key, mlp: type = MLP,
        **mlp_kwargs,
    ):
        self.net = mlp(obs_dim + action_dim, 1, hidden, key=key, **mlp_kwargs)

    def __call__(
        self, obs: Obs, action: Float[Array, " action_dim"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        """Q(s, a) for one observation and action; `key` goes to the MLP (dropout)."""
        return self.net(jnp.concatenate([flatten_obs(obs), action]), key=key)[0]

    def train_batch(
        self, obs: Obs, action: Float[Array, "batch action_dim"]
    ) -> tuple[Float[Array, " batch"], QFunction]:
        """Q on a batch in training mode (a net with running statistics), and the new head."""
        x = jnp.concatenate([jax.vmap(flatten_obs)(obs), action], axis=1)
        q, net = self.net.train_batch(x)
        return q[:, 0], eqx.tree_at(lambda h: h.net, self, net)


class QuantileQFunction(eqx.Module):
    """The quantiles of Z(s, a) at the midpoints τ_i = (2i + 1)/(2N): an MLP with N outputs on
    the flat observation and action (TQC's critic). `mlp` and `mlp_kwargs` as in `QFunction`."""

    net: eqx.Module

    def __init__(
        self, obs_dim: int, action_dim: int, num_quantiles: int, hidden=(256, 256), *, key,
        mlp: type = MLP, **mlp_kwargs,
    ):
        if num_quantiles < 1:
            raise ValueError(f"QuantileQFunction: num_quantiles must be >= 1, got {num_quantiles}.")
        self.net = mlp(obs_dim + action_dim, num_quantiles, hidden, key=key, **mlp_kwargs)

    def __call__(
        self, obs: Obs, action: Float[Array, " action_dim"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " quantiles"]:
        """The N quantiles of Z(s, a), one per midpoint τ_i, for one observation and action."""
        return self.net(jnp.concatenate([flatten_obs(obs), action]), key=key)


class ValueFunction(eqx.Module):
    """V(s): an MLP on the flat observation."""

    net: MLP

    def __init__(self, obs_dim: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim, 1, hidden, key=key, **mlp_kwargs)

    def __call__(self, obs: Obs, *, key: PRNGKeyArray | None = None) -> Float[Array, ""]:
        """V(s) for one observation; `key` goes to the MLP (dropout)."""
        return self.net(flatten_obs(obs), key=key)[0]


class DiscreteQFunction(eqx.Module):
    """Q(s, .) for discrete actions: one output per action."""

    net: MLP

    def __init__(self, obs_dim: int, num_actions: int, hidden=(256, 256), *, key, **mlp_kwargs):
        self.net = MLP(obs_dim, num_actions, hidden, key=key, **mlp_kwargs)

    def __call__(self, obs: Obs, *, key: PRNGKeyArray | None = None) -> Float[Array, " actions"]:
        """Q(s, a) of every action a for one observation; `key` goes to the MLP (dropout)."""
        return self.net(flatten_obs(obs), key=key)


class WithEncoder(eqx.Module):
    """Put an encoder in front of any head: `head(encoder(obs), *args)`.

    Pass the same encoder instance to several heads to share it in your own code; within one
    module tree Equinox treats the copies as separate parameters.
    """

    encoder: eqx.Module
    head: eqx.Module

    def __call__(self, obs: Obs, *args: Any, key: PRNGKeyArray | None = None, **kwargs: Any):
        """`head(encoder(obs), *args, key=key, **kwargs)`: the encoder gets no key."""
        return self.head(self.encoder(obs), *args, key=key, **kwargs)

"""Value heads on an MLP: Q(s, a), V(s), discrete Q(s, ·), and an encoder in front of any head."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.core.types import Obs
from eqxrl.nn.mlp import MLP, flatten_obs


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


class WithEncoder(eqx.Module):
    """Put an encoder in front of any head: `head(encoder(obs), *args)`.

    Pass the same encoder instance to several heads to share it in your own code; within one
    module tree Equinox treats the copies as separate parameters.
    """

    encoder: eqx.Module
    head: eqx.Module

    def __call__(self, obs: Obs, *args: Any, key: PRNGKeyArray | None = None, **kwargs: Any):
        return self.head(self.encoder(obs), *args, key=key, **kwargs)

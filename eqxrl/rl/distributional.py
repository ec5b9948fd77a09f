"""Distributional critics by categories (Bellemare et al., 2017, C51; SimbaV2's critic): a fixed
support of return values, the projection of a shifted distribution back onto it, the
cross-entropy TD loss and the expected value.

The TD target's atoms are `quantile_td_target(reward, terminated, support − α·log π, γ)`: the
same r + γ·(1 − terminated)·z as for quantiles, applied to every bin's value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from eqxrl.core.types import Obs
from eqxrl.rl.critics import CriticFn


def categorical_support(num_bins: int, v_min: float, v_max: float) -> Float[Array, " bins"]:
    """`num_bins` evenly spaced return values from `v_min` to `v_max` (both included)."""
    if num_bins < 2 or not v_min < v_max:
        raise ValueError(f"categorical_support: need num_bins >= 2 and v_min < v_max, got "
                         f"{num_bins} bins on [{v_min}, {v_max}].")
    return jnp.linspace(v_min, v_max, num_bins, dtype=jnp.float32)


def categorical_projection(
    atoms: Float[Array, "batch atoms"], probs: Float[Array, "batch atoms"],
    support: Float[Array, " bins"],
) -> Float[Array, "batch bins"]:
    """The distribution putting `probs` on the values `atoms`, projected onto `support`.

    Each atom is first clipped into the support's range; its mass then goes to the two bins
    around it, in proportion to closeness (all of it to a bin it falls on). As one formula: bin
    z_i receives Σ_j p_j · max(0, 1 − |clip(t_j) − z_i| / Δz).
    """
    delta = (support[-1] - support[0]) / (support.shape[0] - 1)
    clipped = jnp.clip(atoms, support[0], support[-1])
    closeness = jnp.clip(1.0 - jnp.abs(clipped[:, None, :] - support[None, :, None]) / delta,
                         0.0, 1.0)  # (batch, bins, atoms)
    return jnp.einsum("bij,bj->bi", closeness, probs)


def categorical_td_loss(
    logits: Float[Array, "batch bins"], target_probs: Float[Array, "batch bins"]
) -> Float[Array, ""]:
    """The cross-entropy −Σ_i p_i·log softmax(logits)_i, averaged over the batch; the target is
    held fixed."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.sum(jax.lax.stop_gradient(target_probs) * log_probs, axis=-1))


def categorical_value(
    logits: Float[Array, "*batch bins"], support: Float[Array, " bins"]
) -> Float[Array, "*batch"]:
    """The expected return Σ_i softmax(logits)_i · z_i."""
    return jax.nn.softmax(logits, axis=-1) @ support


def ensemble_logits(
    critic: CriticFn, obs: Obs, action: Float[Array, "batch action_dim"]
) -> Float[Array, "critics batch bins"]:
    """The logits of every member of a categorical-critic ensemble on a batch."""
    return jax.vmap(critic, out_axes=1)(obs, action)

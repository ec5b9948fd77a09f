"""Distributional critics by quantiles: quantile midpoints, the quantile Huber loss, and TQC's
truncated pooled target (Dabney et al., 2018; Kuznetsov et al., 2020).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from eqxrl.core.types import Obs
from eqxrl.rl.critics import CriticFn


def quantile_midpoints(num_quantiles: int) -> Float[Array, " quantiles"]:
    """τ_i = (2i + 1) / (2N), i = 0..N−1: the fractions that N quantile outputs estimate."""
    if num_quantiles < 1:
        raise ValueError(f"quantile_midpoints: num_quantiles must be >= 1, got {num_quantiles}.")
    return (jnp.arange(num_quantiles, dtype=jnp.float32) + 0.5) / num_quantiles


def quantile_huber_loss(
    quantiles: Float[Array, "batch quantiles"], targets: Float[Array, "batch targets"],
    kappa: float = 1.0,
) -> Float[Array, ""]:
    """The mean over batch, i, j of |τ_i − 1{u_ij < 0}|·H_κ(u_ij)/κ, with u_ij = y_j − θ_i.

    `quantiles` θ_i are one critic's outputs for (s, a) at the midpoints τ_i, `targets` y_j are
    samples of the target distribution (held fixed: stop their gradient before). H_κ is the
    Huber loss with threshold κ: ½u² for |u| ≤ κ, κ(|u| − ½κ) beyond.
    """
    if not kappa > 0:
        raise ValueError(f"quantile_huber_loss: kappa must be > 0, got {kappa}.")
    tau = quantile_midpoints(quantiles.shape[1])
    u = targets[:, None, :] - quantiles[:, :, None]  # (batch, quantiles, targets)
    abs_u = jnp.abs(u)
    huber = jnp.where(abs_u <= kappa, 0.5 * u**2, kappa * (abs_u - 0.5 * kappa))
    weight = jnp.abs(tau[None, :, None] - (u < 0).astype(jnp.float32))
    return jnp.mean(weight * huber) / kappa


def truncated_quantiles(
    quantiles: Float[Array, "critics batch quantiles"], drop_per_critic: int
) -> Float[Array, "batch kept"]:
    """TQC's pooled target atoms: all critics' quantiles of each example, sorted, with the
    largest `drop_per_critic · critics` removed (kept = critics · (quantiles − drop_per_critic)).
    """
    critics, _, n = quantiles.shape
    if not 0 <= drop_per_critic < n:
        raise ValueError(
            f"truncated_quantiles: drop_per_critic must be in [0, {n - 1}] for {n} quantiles per "
            f"critic, got {drop_per_critic}: dropping all of them leaves no target. TQC drops 2 "
            "of 25."
        )
    pooled = jnp.sort(jnp.moveaxis(quantiles, 0, 1).reshape(quantiles.shape[1], critics * n))
    return pooled[:, : critics * (n - drop_per_critic)]


def ensemble_quantiles(
    critic: CriticFn, obs: Obs, action: Float[Array, "batch action_dim"]
) -> Float[Array, "critics batch quantiles"]:
    """The quantiles of every member of a quantile-critic ensemble on a batch."""
    return jax.vmap(critic, out_axes=1)(obs, action)


def quantile_td_target(
    reward: Float[Array, " batch"], terminated: Bool[Array, " batch"],
    next_atoms: Float[Array, "batch atoms"], discount: Float[Array, ""] | float,
) -> Float[Array, "batch atoms"]:
    """The TD target r + γ·(1 − terminated)·z for every target atom z: truncation keeps
    bootstrapping."""
    keep = jnp.where(terminated, 0.0, discount)
    return reward[:, None] + keep[:, None] * next_atoms

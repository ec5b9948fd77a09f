"""Batch normalisation whose running statistics live inside the model: `BatchRenorm` (and plain
BatchNorm as its `r_max=1, d_max=0` case) and `BatchRenormMLP`, the critic and actor trunk of
CrossQ.

A module with running statistics has two modes:
- `module(x)` on ONE example (the Equinox convention) normalises with the running statistics
  and changes nothing: what `act`, evaluation and target computations use;
- `module.train_batch(xs)` on a whole batch (leading axis) normalises with the batch's
  statistics and returns `(ys, new_module)`, whose running statistics have moved towards the
  batch's. `TrainState.apply_loss_fn_with_stats` keeps the new statistics after a step.

Statistics are means over the batch axis of the arrays the layer sees. Under the loops' vmap
over agents each agent reduces over its own batch only; with the batch split over devices
(`--devices` with a batch sharding) XLA reduces over the whole batch across devices.
The running statistics are `RunningStats` leaves: `TrainState` keeps them out of the
optimiser (no gradient, no weight decay), and polyak averaging would move them like weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from eqxrl.nn.mlp import dense, scaled_linear


class RunningStats(eqx.Module):
    """Running mean and variance of a layer's input and the number of training batches seen."""

    mean: Float[Array, " features"]
    var: Float[Array, " features"]
    steps: Int[Array, ""]

    @classmethod
    def create(cls, features: int) -> RunningStats:
        """Mean 0, variance 1, no batches seen."""
        return cls(jnp.zeros(features), jnp.ones(features), jnp.zeros((), jnp.int32))


def is_running_stats(x) -> bool:
    """True for a `RunningStats` node (use as `is_leaf` to treat it as one leaf)."""
    return isinstance(x, RunningStats)


def split_stats(model: PyTree) -> tuple[PyTree, PyTree]:
    """`(stats, rest)`: the model's `RunningStats` nodes, and everything else (`eqx.partition`)."""
    return eqx.partition(model, is_running_stats, is_leaf=is_running_stats)


def with_stats_of(model: PyTree, source: PyTree) -> PyTree:
    """`model` with the running statistics of `source` (a model of the same structure)."""
    return eqx.combine(split_stats(source)[0], split_stats(model)[1], is_leaf=is_running_stats)


class BatchRenorm(eqx.Module):
    """Batch Renormalization (Ioffe, 2017) over the feature axis, as CrossQ uses it.

    Training mode: x̂ = (x − μ_B)/σ_B · r + d with r = sg(clip(σ_B/σ, 1/r_max, r_max)) and
    d = sg(clip((μ_B − μ)/σ, −d_max, d_max)), σ_B² = var_B + ε and σ² = var + ε the running
    variance; during the first `warmup_steps` training batches r = 1, d = 0 (plain BatchNorm).
    The running statistics move by μ ← m·μ + (1 − m)·μ_B (and var likewise). Evaluation mode:
    x̂ = (x − μ)/σ. The output is γ·x̂ + β with learned γ (init 1) and β (init 0).
    """

    scale: Float[Array, " features"]
    bias: Float[Array, " features"]
    stats: RunningStats
    momentum: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    r_max: float = eqx.field(static=True)
    d_max: float = eqx.field(static=True)
    warmup_steps: int = eqx.field(static=True)

    def __init__(
        self, features: int, *, momentum: float = 0.99, eps: float = 1e-3, r_max: float = 3.0,
        d_max: float = 5.0, warmup_steps: int = 100_000,
    ):
        if features < 1:
            raise ValueError(f"BatchRenorm: features must be >= 1, got {features}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"BatchRenorm: momentum must be in [0, 1), got {momentum}; it is the weight of "
                "the old running statistics per batch (0.99 is usual)."
            )
        if not eps > 0.0:
            raise ValueError(f"BatchRenorm: eps must be > 0, got {eps}.")
        if not (r_max >= 1.0 and d_max >= 0.0):
            raise ValueError(
                f"BatchRenorm: need r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}"
                " (r_max=1, d_max=0 is plain BatchNorm)."
            )
        if warmup_steps < 0:
            raise ValueError(f"BatchRenorm: warmup_steps must be >= 0, got {warmup_steps}.")
        self.scale = jnp.ones(features)
        self.bias = jnp.zeros(features)
        self.stats = RunningStats.create(features)
        self.momentum = momentum
        self.eps = eps
        self.r_max = r_max
        self.d_max = d_max
        self.warmup_steps = warmup_steps

    def __call__(self, x: Float[Array, " features"]) -> Float[Array, " features"]:
        """Evaluation mode on one example: the running statistics, unchanged."""
        stats = jax.lax.stop_gradient(self.stats)
        return self.scale * (x - stats.mean) / jnp.sqrt(stats.var + self.eps) + self.bias

    def train_batch(
        self, x: Float[Array, "batch features"]
    ) -> tuple[Float[Array, "batch features"], BatchRenorm]:
        """Training mode on a batch: batch statistics, renormalised; and the updated layer."""
        if x.shape[0] < 2:
            raise ValueError(
                f"BatchRenorm.train_batch needs a batch of at least 2 examples along axis 0, got "
                f"shape {x.shape}: the statistics of one example are meaningless. Call the layer "
                "on one example (evaluation mode, running statistics) instead."
            )
        stats = jax.lax.stop_gradient(self.stats)
        # One pass for both moments (E[x²] − E[x]²) and the normalisation as one affine map per
        # feature, y = x·a + b. CrossQ's critics normalise (512, 1024) activations per layer:
        # with the two-pass variance and x̂ written out, its critic step ran at 0.85 of sbx's
        # on a 2-core CPU; in this form, at 0.93 (measured interleaved, same batch).
        mean_b = jnp.mean(x, axis=0)
        var_b = jnp.maximum(jnp.mean(x * x, axis=0) - mean_b * mean_b, 0.0)
        std_b = jnp.sqrt(var_b + self.eps)
        std = jnp.sqrt(stats.var + self.eps)
        r = jax.lax.stop_gradient(jnp.clip(std_b / std, 1.0 / self.r_max, self.r_max))
        d = jax.lax.stop_gradient(jnp.clip((mean_b - stats.mean) / std, -self.d_max, self.d_max))
        warm = stats.steps >= self.warmup_steps
        r = jnp.where(warm, r, 1.0)
        d = jnp.where(warm, d, 0.0)
        a = self.scale * r / std_b  # y = scale·((x − μ_B)/σ_B·r + d) + bias = x·a + b
        b = self.bias + self.scale * d - mean_b * a
        y = x * a[None] + b[None]
        m = self.momentum
        new_stats = RunningStats(
            mean=m * stats.mean + (1.0 - m) * jax.lax.stop_gradient(mean_b),
            var=m * stats.var + (1.0 - m) * jax.lax.stop_gradient(var_b),
            steps=stats.steps + 1,
        )
        return y, eqx.tree_at(lambda layer: layer.stats, self, new_stats)


class BatchRenormMLP(eqx.Module):
    """An MLP with Batch Renormalization: BRN(x), then (Linear → activation → BRN) per hidden
    layer, then a final Linear (CrossQ's networks, in sbx's layer order). With
    `activate_final=True` the last layer is followed by the activation and a BRN too (a trunk).

    Takes MLP's `(in_size, out_size, hidden)` so policies and heads build it in place of an
    `MLP` (`GaussianPolicy(..., mlp=BatchRenormMLP)`); the remaining keywords go to each
    `BatchRenorm`.
    """

    norms: tuple[BatchRenorm, ...]
    layers: tuple[eqx.nn.Linear, ...]
    activation: Callable[[Array], Array] = eqx.field(static=True)
    activate_final: bool = eqx.field(static=True)

    def __init__(
        self, in_size: int, out_size: int, hidden: Sequence[int] = (256, 256), *,
        activation: Callable[[Array], Array] = jax.nn.relu, activate_final: bool = False,
        final_init_scale: float = 1.0, key: PRNGKeyArray, **renorm_kwargs,
    ):
        sizes = (in_size, *hidden, out_size)
        n = len(sizes) - 1
        keys = jax.random.split(key, n)
        self.layers = tuple(
            scaled_linear(a, b, final_init_scale if i == n - 1 else 1.0, key=k)
            for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys, strict=True))
        )
        normed = sizes[:-1] + ((out_size,) if activate_final else ())
        self.norms = tuple(BatchRenorm(s, **renorm_kwargs) for s in normed)
        self.activation = activation
        self.activate_final = activate_final

    def __call__(
        self, x: Float[Array, " in_size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out_size"]:
        """Evaluation mode on one example (`key` is accepted and unused: no dropout)."""
        del key
        return self._forward(x, lambda norm, h: (norm(h), norm))[0]

    def train_batch(
        self, x: Float[Array, "batch in_size"]
    ) -> tuple[Float[Array, "batch out_size"], BatchRenormMLP]:
        """Training mode on a batch; returns the outputs and the MLP with updated statistics."""
        return self._forward(x, lambda norm, h: norm.train_batch(h))

    def _forward(self, x, normalise):
        norms = []
        x, norm = normalise(self.norms[0], x)
        norms.append(norm)
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = dense(layer, x)
            if i < n - 1 or self.activate_final:
                x, norm = normalise(self.norms[i + 1], self.activation(x))
                norms.append(norm)
        return x, eqx.tree_at(lambda m: m.norms, self, tuple(norms))

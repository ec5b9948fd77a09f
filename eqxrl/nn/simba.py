"""SimBa networks (Lee et al., ICLR 2025, "SimBa: Simplicity Bias for Scaling Up Parameters in
Deep Reinforcement Learning"): a linear embedding, pre-LayerNorm residual feedforward blocks and
a post-LayerNorm before the output layer.

`SimbaMLP` takes `MLP`'s `(in_size, out_size, hidden)`, so heads and policies build it in place
of an `MLP` (`q_ensemble(..., mlp=SimbaMLP)`, `GaussianPolicy(..., mlp=SimbaMLP)`). Every entry
of `hidden` is one residual block of that width (sbx's `net_arch` for its SimBa policies), so
all entries must be equal. The running observation normalisation of the paper (RSNorm) is not
part of the network: it is state of the algorithm (`eqxrl.RunningNormalizer`), shared by actor
and critics.

With `norm="batch_renorm"` every LayerNorm becomes a `BatchRenorm` and the input is
normalised too, as sbx's SimBa-CrossQ does; the module then has running statistics and a
training mode, `train_batch`, like `BatchRenormMLP`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.nn.mlp import dense, scaled_linear
from eqxrl.nn.normalization import BatchRenorm


def he_linear(in_size: int, out_size: int, *, key: PRNGKeyArray) -> eqx.nn.Linear:
    """A Linear layer with He-normal weights (fan-in, truncated normal) and zero bias: the
    initialisation of SimBa's residual blocks."""
    layer = eqx.nn.Linear(in_size, out_size, key=key)
    init = jax.nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
    weight = init(key, (out_size, in_size), jnp.float32)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, jnp.zeros(out_size)))


class _Norm(eqx.Module):
    """One normalisation of a SimBa network: LayerNorm, or BatchRenorm with running stats."""

    layer: eqx.Module

    def apply(self, x: Array, batched: bool) -> tuple[Array, _Norm]:
        """`(normalised x, the norm after a training pass)`; `batched` is training mode."""
        if isinstance(self.layer, BatchRenorm):
            if not batched:
                return self.layer(x), self
            y, layer = self.layer.train_batch(x)
            return y, _Norm(layer)
        return (jax.vmap(self.layer)(x) if batched else self.layer(x)), self


class ResidualBlock(eqx.Module):
    """x + W₂·act(W₁·norm(x)), W₁ expanding the width by `expansion` (SimBa's inverted
    bottleneck, 4 in the paper)."""

    norm: _Norm
    up: eqx.nn.Linear
    down: eqx.nn.Linear
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(self, width: int, expansion: int, norm: eqx.Module, *,
                 activation: Callable[[Array], Array], key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.norm = _Norm(norm)
        self.up = he_linear(width, expansion * width, key=k1)
        self.down = he_linear(expansion * width, width, key=k2)
        self.activation = activation

    def apply(self, x: Array, batched: bool) -> tuple[Array, ResidualBlock]:
        """`(x + W₂·act(W₁·norm(x)), the block after the pass)`. With `batched`, `x` is a batch
        `(batch, width)` in training mode, which updates a BatchRenorm's running statistics;
        otherwise it is one example `(width,)`."""
        h, norm = self.norm.apply(x, batched)
        y = x + dense(self.down, self.activation(dense(self.up, h)))
        return y, eqx.tree_at(lambda b: b.norm, self, norm)


class SimbaMLP(eqx.Module):
    """[input norm →] Linear embedding → residual blocks → norm → Linear output.

    `activate_final=True` makes it a trunk (how `GaussianPolicy` builds it): the output layer is
    left out and the module returns the post-norm features, of width `out_size`, which must
    then equal the blocks' width. The input norm is there only with `norm="batch_renorm"`.
    """

    input_norm: _Norm | None
    embed: eqx.nn.Linear
    blocks: tuple[ResidualBlock, ...]
    final_norm: _Norm
    out: eqx.nn.Linear | None

    def __init__(
        self, in_size: int, out_size: int, hidden: Sequence[int] = (256, 256), *,
        activation: Callable[[Array], Array] = jax.nn.relu, activate_final: bool = False,
        expansion: int = 4, norm: Literal["layer", "batch_renorm"] = "layer",
        final_init_scale: float = 1.0, key: PRNGKeyArray, **renorm_kwargs: Any,
    ):
        widths = tuple(hidden) if not activate_final else (*hidden, out_size)
        if not widths or len(set(widths)) != 1:
            raise ValueError(
                f"SimbaMLP: every residual block has the embedding's width, so the hidden sizes "
                f"must be equal and not empty, got hidden={tuple(hidden)}"
                + (f" and out_size={out_size} (a trunk ends at the blocks' width)"
                   if activate_final else "")
                + "; pass (width,) * num_blocks."
            )
        if expansion < 1:
            raise ValueError(f"SimbaMLP: expansion must be >= 1, got {expansion}.")
        if norm not in ("layer", "batch_renorm"):
            raise ValueError(f"SimbaMLP: norm must be 'layer' or 'batch_renorm', got {norm!r}.")
        if renorm_kwargs and norm != "batch_renorm":
            raise ValueError(f"SimbaMLP: {sorted(renorm_kwargs)} apply to norm='batch_renorm' "
                             f"only, got norm={norm!r}.")
        width = widths[0]

        def make_norm(features: int) -> eqx.Module:
            if norm == "batch_renorm":
                return BatchRenorm(features, **renorm_kwargs)
            return eqx.nn.LayerNorm(features)

        k_embed, k_blocks, k_out = jax.random.split(key, 3)
        self.input_norm = _Norm(make_norm(in_size)) if norm == "batch_renorm" else None
        self.embed = scaled_linear(in_size, width, 1.0, key=k_embed)
        keys = jax.random.split(k_blocks, len(hidden)) if hidden else []
        self.blocks = tuple(
            ResidualBlock(width, expansion, make_norm(width), activation=activation, key=k)
            for k in keys
        )
        self.final_norm = _Norm(make_norm(width))
        self.out = None if activate_final else scaled_linear(width, out_size, final_init_scale,
                                                             key=k_out)

    def __call__(
        self, x: Float[Array, " in_size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out_size"]:
        """One example (evaluation mode where norms have running statistics; `key` is accepted
        and unused: no dropout)."""
        del key
        return self._forward(x, batched=False)[0]

    def train_batch(
        self, x: Float[Array, "batch in_size"]
    ) -> tuple[Float[Array, "batch out_size"], SimbaMLP]:
        """A batch in training mode: `(outputs, the network with its new running statistics)`
        (the same network when its norms are LayerNorms)."""
        return self._forward(x, batched=True)

    def _forward(self, x: Array, batched: bool) -> tuple[Array, SimbaMLP]:
        new = self
        if self.input_norm is not None:
            x, norm = self.input_norm.apply(x, batched)
            new = eqx.tree_at(lambda m: m.input_norm, new, norm)
        x = dense(self.embed, x)
        blocks = []
        for block in self.blocks:
            x, block = block.apply(x, batched)
            blocks.append(block)
        x, final_norm = self.final_norm.apply(x, batched)
        if blocks:
            new = eqx.tree_at(lambda m: m.blocks, new, tuple(blocks))
        new = eqx.tree_at(lambda m: m.final_norm, new, final_norm)
        return (x if self.out is None else dense(self.out, x)), new

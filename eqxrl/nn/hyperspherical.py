"""SimbaV2's hyperspherical networks (Lee et al., ICML 2025, "Hyperspherical Normalization for
Scalable Deep Reinforcement Learning"): every hidden feature vector and every weight row lives
on the unit sphere, so only directions are learned and the effective learning rate cannot drift.

- `HyperLinear`: a bias-free linear layer whose weight rows are unit vectors. The optimiser
  moves them off the sphere; `project_weights` puts them back after every step (the paper's
  weight projection), for any model that holds `HyperLinear`s.
- `Scaler`: a learned per-feature gain. It is stored as `value`, which starts at `scale`, and
  applied as `value · (init / scale)`, so the gain starts at `init` while `scale` sets how far
  one Adam step moves it relative to that.
- `HyperEmbedding`: `x → ℓ2([x, c_shift]) → HyperLinear → Scaler → ℓ2`. The constant `c_shift`
  appended before the projection keeps the input's norm as information.
- `HyperBlock`: `h → ℓ2(h + α ⊙ (ℓ2(W₂·relu(s ⊙ W₁h)) − h))`, an MLP four times as wide whose
  output is projected to the sphere, then a learned interpolation (LERP) toward it.
- `HyperTrunk`: an embedding and `blocks` HyperBlocks, the shared body of the actor and critic
  (`eqxrl.nn.hyper_heads`).

Every module takes one example or a batch (leading axes).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from eqxrl.nn.mlp import linear_product

EPS = 1e-8  # the smallest norm divided by; keeps a zero vector finite
EXPANSION = 4  # a HyperBlock's MLP is this many times as wide as the block


def l2_normalize(x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
    """`x / max(‖x‖, 1e-8)` along the last axis: each row projected onto the unit sphere."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), EPS)


class HyperLinear(eqx.Module):
    """`x @ Wᵀ` without bias, whose weight rows (one per output) are unit vectors.

    Each row starts uniform on the sphere (a Gaussian row, normalised). The authors initialise
    orthogonally; for the widths used, independent rows on the sphere are orthogonal up to
    O(1/√in_size). A QR factorisation is avoided on purpose: XLA:CPU (jax 0.10) deadlocked
    running the batched QRs of several agents' initialisations at once. Gradient steps move
    the rows off the sphere: call `project_weights` on the model after each optimiser step.
    """

    weight: Float[Array, "out_size in_size"]

    def __init__(self, in_size: int, out_size: int, *, key: PRNGKeyArray):
        self.weight = l2_normalize(jax.random.normal(key, (out_size, in_size), jnp.float32))

    def __call__(self, x: Float[Array, "*batch in_size"]) -> Float[Array, "*batch out_size"]:
        """`x @ Wᵀ` for one input or a batch (leading axes), by `linear_product`."""
        return linear_product(x, self.weight)


class Scaler(eqx.Module):
    """A learned per-feature gain `value · (init / scale)`; `value` starts at `scale`."""

    value: Float[Array, " dim"]
    gain: float = eqx.field(static=True)

    def __init__(self, dim: int, init: float = 1.0, scale: float = 1.0):
        if not (init > 0 and scale > 0):
            raise ValueError(f"Scaler: init and scale must be > 0, got {init} and {scale}.")
        self.value = jnp.full((dim,), scale, jnp.float32)
        self.gain = init / scale

    def __call__(self, x: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        """`x` times the gain, feature by feature."""
        return x * jnp.broadcast_to(self.value * self.gain, x.shape)


class HyperEmbedding(eqx.Module):
    """`ℓ2(s ⊙ W·ℓ2([x, c_shift]))`: an input of any norm mapped onto the sphere of `width`."""

    linear: HyperLinear
    scaler: Scaler
    c_shift: float = eqx.field(static=True)

    def __init__(self, in_size: int, width: int, *, c_shift: float = 3.0, key: PRNGKeyArray):
        self.linear = HyperLinear(in_size + 1, width, key=key)
        self.scaler = Scaler(width, math.sqrt(2 / width), math.sqrt(2 / width))
        self.c_shift = c_shift

    def __call__(self, x: Float[Array, "*batch in_size"]) -> Float[Array, "*batch width"]:
        """The embedding of one input or a batch."""
        shift = jnp.full((*x.shape[:-1], 1), self.c_shift, x.dtype)
        x = l2_normalize(jnp.concatenate([x, shift], axis=-1))
        return l2_normalize(self.scaler(self.linear(x)))


class HyperBlock(eqx.Module):
    """One residual block on the sphere: `ℓ2(h + α ⊙ (ℓ2(W₂·relu(s ⊙ W₁h)) − h))`.

    `α` starts at `1 / (blocks + 1)` for a trunk of `blocks` blocks, with Adam's steps scaled
    by `1 / √width` relative to that; `s` starts at `√(2 / inner)`, the He scale of the 4× wide
    layer it follows.
    """

    up: HyperLinear
    scaler: Scaler
    down: HyperLinear
    alpha: Scaler

    def __init__(self, width: int, blocks: int = 1, *, key: PRNGKeyArray):
        k_up, k_down = jax.random.split(key)
        inner = EXPANSION * width
        he = math.sqrt(2 / inner)
        self.up = HyperLinear(width, inner, key=k_up)
        self.scaler = Scaler(inner, he, he)
        self.down = HyperLinear(inner, width, key=k_down)
        self.alpha = Scaler(width, 1 / (blocks + 1), 1 / math.sqrt(width))

    def __call__(self, h: Float[Array, "*batch width"]) -> Float[Array, "*batch width"]:
        """The block on one feature vector or a batch of them (unit vectors in, unit out)."""
        mlp = l2_normalize(self.down(jax.nn.relu(self.scaler(self.up(h))) + EPS))
        return l2_normalize(h + self.alpha(mlp - h))


class HyperTrunk(eqx.Module):
    """A `HyperEmbedding` to `width` features and `blocks` `HyperBlock`s: unit vectors out."""

    embedding: HyperEmbedding
    blocks: tuple[HyperBlock, ...]

    def __init__(self, in_size: int, width: int, blocks: int, *, c_shift: float = 3.0,
                 key: PRNGKeyArray):
        if width < 1 or blocks < 1:
            raise ValueError(f"HyperTrunk: width and blocks must be >= 1, got {width} and "
                             f"{blocks}.")
        k_embed, *k_blocks = jax.random.split(key, blocks + 1)
        self.embedding = HyperEmbedding(in_size, width, c_shift=c_shift, key=k_embed)
        self.blocks = tuple(HyperBlock(width, blocks, key=k) for k in k_blocks)

    def __call__(self, x: Float[Array, "*batch in_size"]) -> Float[Array, "*batch width"]:
        """The features of one input or a batch."""
        h = self.embedding(x)
        for block in self.blocks:
            h = block(h)
        return h


def project_weights(model: PyTree) -> PyTree:
    """`model` with the weight rows of every `HyperLinear` in it back on the unit sphere (also
    in a vectorised `Ensemble`, whose weights have a leading member axis). Call it after each
    optimiser step of a model built from these layers."""
    def project(node):
        if isinstance(node, HyperLinear):
            return eqx.tree_at(lambda m: m.weight, node, l2_normalize(node.weight))
        return node

    return jax.tree.map(project, model, is_leaf=lambda n: isinstance(n, HyperLinear))

"""Normalisation layers for the ResNet-v1 encoders: cross-batch BatchNorm and helpers.

`make_norm` builds a BatchNorm, a frozen BatchNorm (a per-channel affine map, what a
pretrained BatchNorm becomes when its statistics are fixed), a GroupNorm or a per-position
LayerNorm for a channels-last (height, width, channels) feature map;
`apply_norm` calls any of them with the same `(x, state) -> (x, state)` signature, so a
network's call signature does not depend on the normalisation.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["BatchNorm", "FrozenBatchNorm", "Norm", "apply_norm", "group_norm", "make_norm"]


class BatchNorm(eqx.Module):
    """BatchNorm over the vmapped `axis_name` and the spatial axes of a channels-last map.

    Training (`inference=False`) normalises with the batch statistics and moves the running
    statistics by `running = momentum * running + (1 - momentum) * batch` (flax's rule;
    momentum 0.9 is PyTorch's 0.1); inference uses the running statistics and needs no vmap.
    Toggle with `eqx.nn.inference_mode`. Unlike `eqx.nn.BatchNorm(mode="batch")`, the
    running statistics are used as they are: that layer divides them by `1 - momentum**t`
    to remove a zero-initialisation bias, which over-corrects the variance (initialised at
    one) by `momentum**t / (1 - momentum**t)`, i.e. +9 after the first step.
    """

    weight: Float[Array, " channels"]
    bias: Float[Array, " channels"]
    stats: eqx.nn.StateIndex
    inference: bool
    axis_name: str = eqx.field(static=True)
    momentum: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        *,
        axis_name: str = "batch",
        momentum: float = 0.9,
        eps: float = 1e-5,
        inference: bool = False,
    ):
        self.weight = jnp.ones((channels,))
        self.bias = jnp.zeros((channels,))
        self.stats = eqx.nn.StateIndex((jnp.zeros((channels,)), jnp.ones((channels,))))
        self.inference = inference
        self.axis_name, self.momentum, self.eps = axis_name, momentum, eps

    def __call__(
        self, x: Float[Array, "height width channels"], state: eqx.nn.State
    ) -> tuple[Float[Array, "height width channels"], eqx.nn.State]:
        """Normalise one example's feature map; returns it with the updated state."""
        if self.inference:
            mean, var = state.get(self.stats)
        else:
            # Every example has the same number of positions, so the mean of per-example
            # means is the batch mean; two passes keep the variance accurate.
            mean = jax.lax.pmean(jnp.mean(x, axis=(0, 1)), self.axis_name)
            var = jax.lax.pmean(jnp.mean(jnp.square(x - mean[None, None]), axis=(0, 1)),
                                self.axis_name)
            running_mean, running_var = state.get(self.stats)
            m = self.momentum
            batch_mean, batch_var = jax.lax.stop_gradient((mean, var))
            state = state.set(
                self.stats,
                (m * running_mean + (1 - m) * batch_mean, m * running_var + (1 - m) * batch_var),
            )
        scale = self.weight * jax.lax.rsqrt(var + self.eps)
        return (x - mean[None, None]) * scale[None, None] + self.bias[None, None], state


class FrozenBatchNorm(eqx.Module):
    """A BatchNorm whose statistics are fixed, folded into one per-channel affine map.

    `y = x * scale + shift` with `scale = weight / sqrt(running_var + eps)` and
    `shift = bias - running_mean * scale` (`from_statistics`), so it is stateless: a
    pretrained ResNet keeps its ImageNet statistics inside a vmapped agent, and fine-tuning
    trains `scale` and `shift` (torchvision's FrozenBatchNorm2d with a trainable affine part).
    Built fresh it is the identity, so it does not normalise a network trained from scratch.
    """

    scale: Float[Array, " channels"]
    shift: Float[Array, " channels"]

    def __init__(self, channels: int):
        self.scale = jnp.ones((channels,))
        self.shift = jnp.zeros((channels,))

    @classmethod
    def from_statistics(cls, weight, bias, mean, var, eps: float = 1e-5) -> "FrozenBatchNorm":
        """The frozen form of a BatchNorm with these affine parameters and running statistics."""
        norm = cls(len(weight))
        scale = jnp.asarray(weight, jnp.float32) / jnp.sqrt(jnp.asarray(var, jnp.float32) + eps)
        shift = jnp.asarray(bias, jnp.float32) - jnp.asarray(mean, jnp.float32) * scale
        return eqx.tree_at(lambda n: (n.scale, n.shift), norm, (scale, shift))

    def __call__(self, x: Float[Array, "h w channels"]) -> Float[Array, "h w channels"]:
        """`x · scale + shift` per channel, for one image."""
        return x * self.scale[None, None] + self.shift[None, None]


Norm = BatchNorm | FrozenBatchNorm | eqx.nn.GroupNorm | eqx.nn.LayerNorm


def make_norm(kind: str, channels: int, groups: int) -> Norm:
    """A `"batch"`, `"frozen_batch"`, `"group"` (at most `groups` groups) or `"layer"` norm
    over `channels`."""
    if kind == "batch":
        return BatchNorm(channels)
    if kind == "frozen_batch":
        return FrozenBatchNorm(channels)
    if kind == "group":
        return eqx.nn.GroupNorm(min(groups, channels), channels)
    if kind == "layer":
        # Per-position LayerNorm over channels, as flax's LayerNorm on HWC maps does.
        return eqx.nn.LayerNorm(channels)
    raise ValueError(
        f"ResNetV1: norm must be 'batch', 'frozen_batch', 'group' or 'layer'; got {kind!r}.")


def group_norm(norm: eqx.nn.GroupNorm, x: Float[Array, "h w c"]) -> Float[Array, "h w c"]:
    """`eqx.nn.GroupNorm`'s maths (its groups, eps and affine parameters) on a channels-last
    map; the layer itself takes channels first."""
    h, w, c = x.shape
    y = jnp.reshape(x, (h, w, norm.groups, c // norm.groups))
    mean = jnp.mean(y, axis=(0, 1, 3), keepdims=True)
    var = jnp.maximum(jnp.var(y, axis=(0, 1, 3), keepdims=True), 0.0)
    out = jnp.reshape((y - mean) * jax.lax.rsqrt(var + norm.eps), x.shape)
    if not norm.channelwise_affine:
        return out
    return out * norm.weight[None, None] + norm.bias[None, None]


def apply_norm(
    norm: Norm, x: Float[Array, "h w c"], state: eqx.nn.State | None
) -> tuple[Float[Array, "h w c"], eqx.nn.State | None]:
    """Normalise a channels-last map with any `Norm`; only BatchNorm reads or changes `state`
    (the others pass it through, None included)."""
    if isinstance(norm, BatchNorm):
        return norm(x, state)
    if isinstance(norm, eqx.nn.GroupNorm):
        return group_norm(norm, x), state
    if isinstance(norm, eqx.nn.LayerNorm):
        return jax.vmap(jax.vmap(norm))(x), state
    return norm(x), state

"""ResNet-v1 (He et al. 2016, torchvision layout) and ResNet-v2 / BiT (Kolesnikov et al. 2020).

ResNet-v1 supports `norm="batch"` (running statistics in an `eqx.nn.State`), `"group"` or
`"layer"`; it always takes and returns the state so its call signature does not depend on
the normalisation. ResNet-v2 is BiT's pre-activation bottleneck network with weight-
standardised convolutions and GroupNorm; it is stateless.
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._layers import check_float_image, conv2d, feature_map_size, max_pool, normal, to_chw, to_hwc
from .pooling import make_pooling

__all__ = ["BatchNorm", "ResNetV1", "ResNetV2"]

_V1_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
_V2_STAGES = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class BatchNorm(eqx.Module):
    """BatchNorm over the vmapped `axis_name` and the spatial axes of a CHW map.

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
        self, x: Float[Array, "channels height width"], state: eqx.nn.State
    ) -> tuple[Float[Array, "channels height width"], eqx.nn.State]:
        """Normalise one example's feature map; returns it with the updated state."""
        if self.inference:
            mean, var = state.get(self.stats)
        else:
            # Every example has the same number of positions, so the mean of per-example
            # means is the batch mean; two passes keep the variance accurate.
            mean = jax.lax.pmean(jnp.mean(x, axis=(1, 2)), self.axis_name)
            centred = x - mean[:, None, None]
            var = jax.lax.pmean(jnp.mean(jnp.square(centred), axis=(1, 2)), self.axis_name)
            running_mean, running_var = state.get(self.stats)
            m = self.momentum
            batch_mean, batch_var = jax.lax.stop_gradient((mean, var))
            state = state.set(
                self.stats,
                (m * running_mean + (1 - m) * batch_mean, m * running_var + (1 - m) * batch_var),
            )
        scale = self.weight * jax.lax.rsqrt(var + self.eps)
        return (x - mean[:, None, None]) * scale[:, None, None] + self.bias[:, None, None], state


Norm = BatchNorm | eqx.nn.GroupNorm | eqx.nn.LayerNorm


def _conv(c_in: int, c_out: int, kernel: int, *, stride: int = 1, padding: int = 0, key):
    return conv2d(
        c_in,
        c_out,
        kernel,
        stride=stride,
        padding=padding,
        use_bias=False,
        init="he_normal",
        key=key,
    )


def _make_norm(kind: str, channels: int, groups: int) -> Norm:
    if kind == "batch":
        return BatchNorm(channels)
    if kind == "group":
        return eqx.nn.GroupNorm(min(groups, channels), channels)
    if kind == "layer":
        # Per-position LayerNorm over channels, as flax's LayerNorm on HWC maps does.
        return eqx.nn.LayerNorm(channels)
    raise ValueError(f"ResNetV1: norm must be 'batch', 'group' or 'layer'; got {kind!r}.")


def _apply_norm(
    norm: Norm, x: Float[Array, "c h w"], state: eqx.nn.State
) -> tuple[Float[Array, "c h w"], eqx.nn.State]:
    if isinstance(norm, BatchNorm):
        return norm(x, state)
    if isinstance(norm, eqx.nn.LayerNorm):
        over_width = jax.vmap(norm, in_axes=1, out_axes=1)
        return jax.vmap(over_width, in_axes=1, out_axes=1)(x), state
    return norm(x), state


class _BasicBlock(eqx.Module):
    conv1: eqx.nn.Conv2d
    norm1: Norm
    conv2: eqx.nn.Conv2d
    norm2: Norm
    proj_conv: eqx.nn.Conv2d | None
    proj_norm: Norm | None

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, groups: int, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = _conv(c_in, c_out, 3, stride=stride, padding=1, key=k1)
        self.norm1 = _make_norm(norm, c_out, groups)
        self.conv2 = _conv(c_out, c_out, 3, padding=1, key=k2)
        self.norm2 = _make_norm(norm, c_out, groups)
        needs_proj = stride != 1 or c_in != c_out
        self.proj_conv = _conv(c_in, c_out, 1, stride=stride, key=k3) if needs_proj else None
        self.proj_norm = _make_norm(norm, c_out, groups) if needs_proj else None

    def __call__(self, x, state):
        y, state = _apply_norm(self.norm1, self.conv1(x), state)
        y, state = _apply_norm(self.norm2, self.conv2(jax.nn.relu(y)), state)
        if self.proj_conv is not None:
            x, state = _apply_norm(self.proj_norm, self.proj_conv(x), state)
        return jax.nn.relu(x + y), state


class _Bottleneck(eqx.Module):
    conv1: eqx.nn.Conv2d
    norm1: Norm
    conv2: eqx.nn.Conv2d
    norm2: Norm
    conv3: eqx.nn.Conv2d
    norm3: Norm
    proj_conv: eqx.nn.Conv2d | None
    proj_norm: Norm | None

    def __init__(self, c_in: int, c_mid: int, stride: int, norm: str, groups: int, *, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        c_out = 4 * c_mid
        self.conv1 = _conv(c_in, c_mid, 1, key=k1)
        self.norm1 = _make_norm(norm, c_mid, groups)
        # The stride sits on the 3x3 conv (torchvision's "v1.5"), as in most published weights.
        self.conv2 = _conv(c_mid, c_mid, 3, stride=stride, padding=1, key=k2)
        self.norm2 = _make_norm(norm, c_mid, groups)
        self.conv3 = _conv(c_mid, c_out, 1, key=k3)
        self.norm3 = _make_norm(norm, c_out, groups)
        needs_proj = stride != 1 or c_in != c_out
        self.proj_conv = _conv(c_in, c_out, 1, stride=stride, key=k4) if needs_proj else None
        self.proj_norm = _make_norm(norm, c_out, groups) if needs_proj else None

    def __call__(self, x, state):
        y, state = _apply_norm(self.norm1, self.conv1(x), state)
        y, state = _apply_norm(self.norm2, self.conv2(jax.nn.relu(y)), state)
        y, state = _apply_norm(self.norm3, self.conv3(jax.nn.relu(y)), state)
        if self.proj_conv is not None:
            x, state = _apply_norm(self.proj_norm, self.proj_conv(x), state)
        return jax.nn.relu(x + y), state


class ResNetV1(eqx.Module):
    """ResNet-v1 18/34/50/101/152 without the classifier; 224x224x3 -> 512 or 2048 features.

    Called `resnet(image, state) -> (features, state)`. With `norm="batch"` a training call
    must sit inside `jax.vmap(..., axis_name="batch")` and updates the running statistics in
    the returned state; `eqx.nn.inference_mode(resnet)` uses them instead (no vmap needed).
    """

    stem_conv: eqx.nn.Conv2d
    stem_norm: Norm
    blocks: tuple[_BasicBlock | _Bottleneck, ...]
    pooling: eqx.Module
    depth: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 3,
        *,
        depth: int = 18,
        norm: Literal["batch", "group", "layer"] = "batch",
        norm_groups: int = 32,
        width: int = 64,
        pooling: str = "avg",
        image_size: tuple[int, int] | None = None,
        key: PRNGKeyArray,
    ):
        """`image_size` (height, width) is only needed by the spatial pooling heads."""
        if depth not in _V1_STAGES:
            raise ValueError(f"ResNetV1: depth must be one of {sorted(_V1_STAGES)}; got {depth}.")
        h, w = feature_map_size(pooling, image_size, "ResNetV1", 5)
        block_kind, stages = _V1_STAGES[depth]
        k_stem, k_blocks, k_pool = jax.random.split(key, 3)
        self.depth = depth
        self.stem_conv = _conv(in_channels, width, 7, stride=2, padding=3, key=k_stem)
        self.stem_norm = _make_norm(norm, width, norm_groups)
        keys = iter(jax.random.split(k_blocks, sum(stages)))
        blocks = []
        c_in = width
        for i, num_blocks in enumerate(stages):
            c = width * 2**i
            for j in range(num_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                if block_kind == "basic":
                    blocks.append(_BasicBlock(c_in, c, stride, norm, norm_groups, key=next(keys)))
                    c_in = c
                else:
                    blocks.append(_Bottleneck(c_in, c, stride, norm, norm_groups, key=next(keys)))
                    c_in = 4 * c
        self.blocks = tuple(blocks)
        self.pooling = make_pooling(pooling, height=h, width=w, channels=c_in, key=k_pool)

    @property
    def in_channels(self) -> int:
        """Channels of the images this encoder takes."""
        return self.stem_conv.weight.shape[1]

    def __call__(
        self,
        x: Float[Array, "height width channels"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " features"], eqx.nn.State]:
        """Encode one float image and return the features with the updated state."""
        del key
        check_float_image(x, f"ResNetV1(depth={self.depth})", self.in_channels)
        h, state = _apply_norm(self.stem_norm, self.stem_conv(to_chw(x)), state)
        h = max_pool(jax.nn.relu(h), 3, 2, ((1, 1), (1, 1)))
        for block in self.blocks:
            h, state = block(h, state)
        return self.pooling(to_hwc(h)), state


class _StdConv(eqx.Module):
    """Conv without bias whose kernel is standardised per output channel at every call."""

    weight: Float[Array, "out in kh kw"]
    stride: int = eqx.field(static=True)
    padding: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, key):
        self.weight = normal(key, (c_out, c_in, kernel, kernel), (2.0 / (c_out * kernel**2)) ** 0.5)
        self.stride = stride
        self.padding = kernel // 2

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, "c2 h2 w2"]:
        w = self.weight - jnp.mean(self.weight, axis=(1, 2, 3), keepdims=True)
        w = w / jnp.sqrt(jnp.mean(jnp.square(w), axis=(1, 2, 3), keepdims=True) + 1e-10)
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        y = jax.lax.conv_general_dilated(x[None], w, (self.stride, self.stride), pad)
        return y[0]


class _PreActBottleneck(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: _StdConv
    norm2: eqx.nn.GroupNorm
    conv2: _StdConv
    norm3: eqx.nn.GroupNorm
    conv3: _StdConv
    proj: _StdConv | None

    def __init__(self, c_in: int, c_mid: int, stride: int, *, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        c_out = 4 * c_mid
        self.norm1 = eqx.nn.GroupNorm(32, c_in)
        self.conv1 = _StdConv(c_in, c_mid, 1, key=k1)
        self.norm2 = eqx.nn.GroupNorm(32, c_mid)
        self.conv2 = _StdConv(c_mid, c_mid, 3, stride, key=k2)
        self.norm3 = eqx.nn.GroupNorm(32, c_mid)
        self.conv3 = _StdConv(c_mid, c_out, 1, key=k3)
        needs_proj = stride != 1 or c_in != c_out
        self.proj = _StdConv(c_in, c_out, 1, stride, key=k4) if needs_proj else None

    def __call__(self, x):
        pre = jax.nn.relu(self.norm1(x))
        # BiT projects the pre-activated input, not the raw residual.
        residual = x if self.proj is None else self.proj(pre)
        y = self.conv1(pre)
        y = self.conv2(jax.nn.relu(self.norm2(y)))
        y = self.conv3(jax.nn.relu(self.norm3(y)))
        return y + residual


class ResNetV2(eqx.Module):
    """BiT ResNet-v2 26/50/101/152 (weight-standardised convs + GroupNorm), no classifier.

    Called `resnet(image) -> features`; 2048 features for the standard width.
    """

    root: _StdConv
    blocks: tuple[_PreActBottleneck, ...]
    final_norm: eqx.nn.GroupNorm
    pooling: eqx.Module

    def __init__(
        self,
        in_channels: int = 3,
        *,
        depth: int = 50,
        width_factor: int = 1,
        pooling: str = "avg",
        image_size: tuple[int, int] | None = None,
        key: PRNGKeyArray,
    ):
        """`image_size` (height, width) is only needed by the spatial pooling heads."""
        if depth not in _V2_STAGES:
            raise ValueError(f"ResNetV2: depth must be one of {sorted(_V2_STAGES)}; got {depth}.")
        h, w = feature_map_size(pooling, image_size, "ResNetV2", 5)
        stages = _V2_STAGES[depth]
        width = 64 * width_factor
        k_root, k_blocks, k_pool = jax.random.split(key, 3)
        self.root = _StdConv(in_channels, width, 7, 2, key=k_root)
        keys = iter(jax.random.split(k_blocks, sum(stages)))
        blocks = []
        c_in = width
        for i, num_blocks in enumerate(stages):
            c_mid = width * 2**i
            for j in range(num_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(_PreActBottleneck(c_in, c_mid, stride, key=next(keys)))
                c_in = 4 * c_mid
        self.blocks = tuple(blocks)
        self.final_norm = eqx.nn.GroupNorm(32, c_in)
        self.pooling = make_pooling(pooling, height=h, width=w, channels=c_in, key=k_pool)

    @property
    def in_channels(self) -> int:
        """Channels of the images this encoder takes."""
        return self.root.weight.shape[1]

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " features"]:
        """Encode one float image."""
        del key
        check_float_image(x, "ResNetV2", self.in_channels)
        h = max_pool(self.root(to_chw(x)), 3, 2, ((1, 1), (1, 1)))
        for block in self.blocks:
            h = block(h)
        return self.pooling(to_hwc(jax.nn.relu(self.final_norm(h))))

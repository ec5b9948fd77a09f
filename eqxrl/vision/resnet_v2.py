"""ResNet-v2 / BiT (Kolesnikov et al. 2020) without the classifier.

BiT's pre-activation bottleneck network with weight-standardised convolutions and
GroupNorm; it is stateless.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.vision._layers import check_float_image, feature_map_size, max_pool, normal
from eqxrl.vision.normalization import group_norm
from eqxrl.vision.pooling import make_pooling

__all__ = ["ResNetV2"]

_V2_STAGES = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class _StdConv(eqx.Module):
    """Conv without bias whose kernel is standardised per output channel at every call."""

    weight: Float[Array, "out in kh kw"]
    stride: int = eqx.field(static=True)
    padding: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, key):
        self.weight = normal(key, (c_out, c_in, kernel, kernel), (2.0 / (c_out * kernel**2)) ** 0.5)
        self.stride = stride
        self.padding = kernel // 2

    def __call__(self, x: Float[Array, "h w c"]) -> Float[Array, "h2 w2 c2"]:
        w = self.weight - jnp.mean(self.weight, axis=(1, 2, 3), keepdims=True)
        w = w / jnp.sqrt(jnp.mean(jnp.square(w), axis=(1, 2, 3), keepdims=True) + 1e-10)
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        y = jax.lax.conv_general_dilated(x[None], w, (self.stride, self.stride), pad,
                                         dimension_numbers=("NHWC", "OIHW", "NHWC"))
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
        pre = jax.nn.relu(group_norm(self.norm1, x))
        # BiT projects the pre-activated input, not the raw residual.
        residual = x if self.proj is None else self.proj(pre)
        y = self.conv1(pre)
        y = self.conv2(jax.nn.relu(group_norm(self.norm2, y)))
        y = self.conv3(jax.nn.relu(group_norm(self.norm3, y)))
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
        h = max_pool(self.root(x), 3, 2, ((1, 1), (1, 1)))
        for block in self.blocks:
            h = block(h)
        return self.pooling(jax.nn.relu(group_norm(self.final_norm, h)))

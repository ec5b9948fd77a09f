"""ResNet-v1 (He et al. 2016, torchvision layout) without the classifier.

It supports `norm="batch"` (running statistics in an `eqx.nn.State`), `"frozen_batch"`
(fixed statistics folded into a per-channel affine map: pretrained weights, see
`eqxrl.vision.pretrained`), `"group"` or `"layer"`; it always takes and returns the state
(None without BatchNorm) so its call signature does not depend on the normalisation.
"""

from typing import Literal

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.vision._layers import check_float_image, conv, conv2d, feature_map_size, max_pool
from eqxrl.vision.normalization import BatchNorm, Norm, apply_norm, make_norm
from eqxrl.vision.pooling import make_pooling

__all__ = ["ResNetV1"]

V1_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


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
        self.norm1 = make_norm(norm, c_out, groups)
        self.conv2 = _conv(c_out, c_out, 3, padding=1, key=k2)
        self.norm2 = make_norm(norm, c_out, groups)
        needs_proj = stride != 1 or c_in != c_out
        self.proj_conv = _conv(c_in, c_out, 1, stride=stride, key=k3) if needs_proj else None
        self.proj_norm = make_norm(norm, c_out, groups) if needs_proj else None

    def __call__(self, x, state):
        y, state = apply_norm(self.norm1, conv(self.conv1, x), state)
        y, state = apply_norm(self.norm2, conv(self.conv2, jax.nn.relu(y)), state)
        if self.proj_conv is not None:
            x, state = apply_norm(self.proj_norm, conv(self.proj_conv, x), state)
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
        self.norm1 = make_norm(norm, c_mid, groups)
        # The stride sits on the 3x3 conv (torchvision's "v1.5"), as in most published weights.
        self.conv2 = _conv(c_mid, c_mid, 3, stride=stride, padding=1, key=k2)
        self.norm2 = make_norm(norm, c_mid, groups)
        self.conv3 = _conv(c_mid, c_out, 1, key=k3)
        self.norm3 = make_norm(norm, c_out, groups)
        needs_proj = stride != 1 or c_in != c_out
        self.proj_conv = _conv(c_in, c_out, 1, stride=stride, key=k4) if needs_proj else None
        self.proj_norm = make_norm(norm, c_out, groups) if needs_proj else None

    def __call__(self, x, state):
        y, state = apply_norm(self.norm1, conv(self.conv1, x), state)
        y, state = apply_norm(self.norm2, conv(self.conv2, jax.nn.relu(y)), state)
        y, state = apply_norm(self.norm3, conv(self.conv3, jax.nn.relu(y)), state)
        if self.proj_conv is not None:
            x, state = apply_norm(self.proj_norm, conv(self.proj_conv, x), state)
        return jax.nn.relu(x + y), state


class ResNetV1(eqx.Module):
    """ResNet-v1 18/34/50/101/152 without the classifier; 224x224x3 -> 512 or 2048 features.

    Called `resnet(image, state) -> (features, state)`; without BatchNorm (`not .stateful`)
    the state may be None. With `norm="batch"` a training call
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
        norm: Literal["batch", "frozen_batch", "group", "layer"] = "batch",
        norm_groups: int = 32,
        width: int = 64,
        pooling: str = "avg",
        image_size: tuple[int, int] | None = None,
        key: PRNGKeyArray,
    ):
        """`image_size` (height, width) is only needed by the spatial pooling heads."""
        if depth not in V1_STAGES:
            raise ValueError(f"ResNetV1: depth must be one of {sorted(V1_STAGES)}; got {depth}.")
        h, w = feature_map_size(pooling, image_size, "ResNetV1", 5)
        block_kind, stages = V1_STAGES[depth]
        k_stem, k_blocks, k_pool = jax.random.split(key, 3)
        self.depth = depth
        self.stem_conv = _conv(in_channels, width, 7, stride=2, padding=3, key=k_stem)
        self.stem_norm = make_norm(norm, width, norm_groups)
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

    @property
    def stateful(self) -> bool:
        """Whether it keeps running statistics (`norm="batch"`); the others take `state=None`."""
        return isinstance(self.stem_norm, BatchNorm)

    def __call__(
        self,
        x: Float[Array, "height width channels"],
        state: eqx.nn.State | None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " features"], eqx.nn.State | None]:
        """Encode one float image and return the features with the updated state."""
        del key
        check_float_image(x, f"ResNetV1(depth={self.depth})", self.in_channels)
        h, state = apply_norm(self.stem_norm, conv(self.stem_conv, x), state)
        h = max_pool(jax.nn.relu(h), 3, 2, ((1, 1), (1, 1)))
        for block in self.blocks:
            h, state = block(h, state)
        return self.pooling(h), state

"""Image encoders chosen by name: `make_encoder("impala", key=key)`.

Every encoder takes ONE float image `(height, width, channels)` in [0, 1] (wrap it in
`PixelEncoder` to feed uint8 images) and returns a feature vector. Batches go through
`jax.vmap`. Stateless encoders are called `encoder(image, *, key=None) -> features`.
ResNet-v1 carries BatchNorm statistics in an `eqx.nn.State` and is called
`encoder(image, state, *, key=None) -> (features, state)`; in training mode it must run
inside `jax.vmap(..., axis_name="batch")`, and `eqx.nn.inference_mode(encoder)` switches it to
the running statistics.
"""

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.vision._layers import check_float_image, conv, conv2d, feature_map_size, linear, max_pool
from eqxrl.vision.mae import MAE
from eqxrl.vision.pooling import make_pooling
from eqxrl.vision.resnet_v1 import ResNetV1
from eqxrl.vision.resnet_v2 import ResNetV2
from eqxrl.vision.vit import ViT

__all__ = ["ENCODERS", "AtariEncoder", "ImpalaEncoder", "make_encoder"]


class _ImpalaResidual(eqx.Module):
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d

    def __init__(self, channels: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.conv1 = conv2d(channels, channels, 3, padding="SAME", key=k1)
        self.conv2 = conv2d(channels, channels, 3, padding="SAME", key=k2)

    def __call__(self, x: Float[Array, "h w c"]) -> Float[Array, "h w c"]:
        y = conv(self.conv1, jax.nn.relu(x))
        y = conv(self.conv2, jax.nn.relu(y))
        return x + y


class _ImpalaStack(eqx.Module):
    conv: eqx.nn.Conv2d
    blocks: tuple[_ImpalaResidual, ...]

    def __init__(self, in_channels: int, channels: int, num_blocks: int, *, key: PRNGKeyArray):
        keys = jax.random.split(key, num_blocks + 1)
        self.conv = conv2d(in_channels, channels, 3, padding="SAME", key=keys[0])
        self.blocks = tuple(_ImpalaResidual(channels, key=k) for k in keys[1:])

    def __call__(self, x: Float[Array, "h w c"]) -> Float[Array, "h2 w2 c2"]:
        x = max_pool(conv(self.conv, x), 3, 2, "SAME")
        for block in self.blocks:
            x = block(x)
        return x


class ImpalaEncoder(eqx.Module):
    """IMPALA CNN (Espeholt et al. 2018): stacks of conv3x3 -> maxpool 3/2 -> residual blocks.

    The default (16, 32, 32) channels with 2 blocks maps 84x84x3 to 11*11*32 = 3872 features
    (with `pooling="flatten"`). `width` multiplies every stack's channels.
    """

    stacks: tuple[_ImpalaStack, ...]
    dropout: eqx.nn.Dropout | None
    pooling: eqx.Module

    def __init__(
        self,
        in_channels: int = 3,
        *,
        stack_channels: tuple[int, ...] = (16, 32, 32),
        num_blocks: int = 2,
        width: int = 1,
        dropout: float = 0.0,
        pooling: str = "flatten",
        image_size: tuple[int, int] | None = None,
        key: PRNGKeyArray,
    ):
        """`image_size` (height, width) is only needed by the spatial pooling heads."""
        height, width_ = feature_map_size(pooling, image_size, "ImpalaEncoder", len(stack_channels))
        k_stacks, k_pool = jax.random.split(key)
        channels = [in_channels] + [c * width for c in stack_channels]
        keys = jax.random.split(k_stacks, len(stack_channels))
        self.stacks = tuple(
            _ImpalaStack(c_in, c_out, num_blocks, key=k)
            for c_in, c_out, k in zip(channels[:-1], channels[1:], keys, strict=True)
        )
        self.dropout = eqx.nn.Dropout(dropout) if dropout > 0 else None
        self.pooling = make_pooling(
            pooling, height=height, width=width_, channels=channels[-1], key=k_pool
        )

    @property
    def in_channels(self) -> int:
        """Channels of the images this encoder takes."""
        return self.stacks[0].conv.weight.shape[1]

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " features"]:
        """Encode one float image; `key` is needed only with dropout in training mode."""
        check_float_image(x, "ImpalaEncoder", self.in_channels)
        n = len(self.stacks)
        keys = (None,) * n if key is None else tuple(jax.random.split(key, n))
        h = x
        for stack, k in zip(self.stacks, keys, strict=True):
            h = stack(h)
            if self.dropout is not None:
                h = self.dropout(h, key=k)
        return self.pooling(jax.nn.relu(h))


class AtariEncoder(eqx.Module):
    """Nature-DQN CNN (Mnih et al. 2015): conv 8x8/4 -> 4x4/2 -> 3x3/1, ReLU, flatten.

    84x84 inputs give 7*7*64 = 3136 features. With `linear_features=512` a Dense+ReLU layer
    follows, which is the whole Nature-DQN torso (everything but the action head).
    """

    convs: tuple[eqx.nn.Conv2d, eqx.nn.Conv2d, eqx.nn.Conv2d]
    linear: eqx.nn.Linear | None

    def __init__(
        self,
        in_channels: int = 4,
        *,
        linear_features: int | None = None,
        image_size: tuple[int, int] = (84, 84),
        key: PRNGKeyArray,
    ):
        """`image_size` (height, width) is only needed to size the optional linear layer."""
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.convs = (
            conv2d(in_channels, 32, 8, stride=4, key=k1),
            conv2d(32, 64, 4, stride=2, key=k2),
            conv2d(64, 64, 3, stride=1, key=k3),
        )
        if linear_features is None:
            self.linear = None
        else:
            h, w = image_size
            for kernel, stride in ((8, 4), (4, 2), (3, 1)):
                h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
            self.linear = linear(h * w * 64, linear_features, key=k4)

    @property
    def in_channels(self) -> int:
        """Channels of the images this encoder takes."""
        return self.convs[0].weight.shape[1]

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " features"]:
        """Encode one float image."""
        del key
        check_float_image(x, "AtariEncoder", self.in_channels)
        if x.shape[0] < 36 or x.shape[1] < 36:
            # Smaller inputs shrink to an empty feature map and silently give no features.
            raise ValueError(
                f"AtariEncoder needs images of at least 36x36; got {x.shape[:2]}. Resize them "
                "(PixelEncoder(size=(84, 84))) or use the IMPALA encoder."
            )
        h = x
        for layer in self.convs:
            h = jax.nn.relu(conv(layer, h))
        features = jnp.reshape(h, (-1,))
        if self.linear is not None:
            features = jax.nn.relu(self.linear(features))
        return features


ENCODERS: dict[str, Callable[..., eqx.Module]] = {
    "impala": ImpalaEncoder,
    "impala_large": functools.partial(ImpalaEncoder, stack_channels=(16, 32, 32, 32)),
    "impala_larger": functools.partial(ImpalaEncoder, stack_channels=(16, 32, 32, 32, 32)),
    "impala_largest": functools.partial(ImpalaEncoder, stack_channels=(16, 32, 32, 32, 32, 32)),
    "impala_wider": functools.partial(ImpalaEncoder, width=2),
    "impala_widest": functools.partial(ImpalaEncoder, width=4),
    "impala_deeper": functools.partial(ImpalaEncoder, num_blocks=4),
    "impala_deepest": functools.partial(ImpalaEncoder, num_blocks=8),
    "atari": AtariEncoder,
    "resnetv1-18": functools.partial(ResNetV1, depth=18),
    "resnetv1-34": functools.partial(ResNetV1, depth=34),
    "resnetv1-50": functools.partial(ResNetV1, depth=50),
    "resnetv1-101": functools.partial(ResNetV1, depth=101),
    "resnetv1-152": functools.partial(ResNetV1, depth=152),
    "resnetv2-26": functools.partial(ResNetV2, depth=26),
    "resnetv2-50": functools.partial(ResNetV2, depth=50),
    "vit-ti16": functools.partial(ViT, size="Ti", patch_size=16),
    "vit-s16": functools.partial(ViT, size="S", patch_size=16),
    "vit-b16": functools.partial(ViT, size="B", patch_size=16),
    "mae-ti16": functools.partial(MAE, size="Ti", patch_size=16),
    "mae-s16": functools.partial(MAE, size="S", patch_size=16),
    "mae-b16": functools.partial(MAE, size="B", patch_size=16),
}
"""Every encoder by name; `make_encoder` looks names up here."""


def make_encoder(name: str, *, key: PRNGKeyArray, **kwargs) -> tuple[eqx.Module, eqx.nn.State]:
    """Build encoder `name` from `ENCODERS` with its (possibly empty) `eqx.nn.State`.

    Keyword arguments go to the encoder's constructor (e.g. `in_channels=9`,
    `pooling="spatial_softmax"`, `norm="group"`). The state holds BatchNorm statistics for
    ResNet-v1 with `norm="batch"` and is empty for every other encoder.
    """
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}. Valid names: {', '.join(sorted(ENCODERS))}.")
    for size in ("in_channels", "image_size"):
        value = kwargs.get(size)
        if value is not None and not (isinstance(value, int) and value >= 1
                                      or isinstance(value, tuple) and min(value, default=0) >= 1):
            raise ValueError(
                f"make_encoder({name!r}): {size} must be a positive size, got {value!r} (the "
                "images' channels, frames × channels when frames are stacked; or height, width).")
    return eqx.nn.make_with_state(ENCODERS[name])(key=key, **kwargs)

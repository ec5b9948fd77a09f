"""Pooling heads that turn a feature map `(height, width, channels)` into a feature vector.

All three are used in robot learning: global average pooling (ResNet default), spatial softmax
(keypoints, Levine et al. 2016) and spatial learned embeddings (Bridge / Octo ResNets).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.vision._layers import normal

__all__ = [
    "Flatten",
    "GlobalAveragePool",
    "SpatialLearnedEmbeddings",
    "SpatialSoftmax",
    "make_pooling",
]


class GlobalAveragePool(eqx.Module):
    """Mean over the spatial positions: `(height, width, channels) -> (channels,)`."""

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " channels"]:
        """Average the feature map over height and width."""
        del key
        return jnp.mean(x, axis=(0, 1))


class Flatten(eqx.Module):
    """Keep every position: `(height, width, channels) -> (height * width * channels,)`."""

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " features"]:
        """Flatten the feature map in height-width-channel order."""
        del key
        return jnp.reshape(x, (-1,))


class SpatialSoftmax(eqx.Module):
    """Expected image coordinates of each channel's softmax: `(h, w, c) -> (2 * c,)`.

    The output is `[x_1..x_c, y_1..y_c]` with coordinates in [-1, 1] (x along the width).
    With `learn_temperature=True` the softmax temperature is trained; otherwise it is kept
    fixed by a stop-gradient, so it stays an array leaf that can still be swept with vmap.
    """

    temperature: Float[Array, ""]
    height: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    learn_temperature: bool = eqx.field(static=True)

    def __init__(
        self,
        height: int,
        width: int,
        channels: int,
        *,
        temperature: float = 1.0,
        learn_temperature: bool = False,
    ):
        if temperature <= 0:
            raise ValueError(f"SpatialSoftmax: temperature must be > 0, got {temperature}.")
        self.temperature = jnp.asarray(temperature, dtype=jnp.float32)
        self.height, self.width, self.channels = height, width, channels
        self.learn_temperature = learn_temperature

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " keypoints"]:
        """Return the softmax-weighted mean x and y position of every channel."""
        del key
        temperature = self.temperature
        if not self.learn_temperature:
            temperature = jax.lax.stop_gradient(temperature)
        # (h * w, c): one spatial distribution per channel.
        logits = jnp.reshape(x, (self.height * self.width, self.channels)) / temperature
        attention = jax.nn.softmax(logits, axis=0)
        # indexing="ij" keeps the grid in the same (row, column) order as the reshape above.
        pos_y, pos_x = jnp.meshgrid(
            jnp.linspace(-1.0, 1.0, self.height, dtype=x.dtype),
            jnp.linspace(-1.0, 1.0, self.width, dtype=x.dtype),
            indexing="ij",
        )
        expected_x = jnp.reshape(pos_x, (1, -1)) @ attention
        expected_y = jnp.reshape(pos_y, (1, -1)) @ attention
        return jnp.concatenate([expected_x[0], expected_y[0]])


class SpatialLearnedEmbeddings(eqx.Module):
    """Per-channel learned spatial weightings: `(h, w, c) -> (c * num_features,)`.

    Each channel is summed over the image against `num_features` learned `(h, w)` maps, as in
    the Bridge-data ResNet encoders.
    """

    kernel: Float[Array, "height width channels num_features"]

    def __init__(
        self, height: int, width: int, channels: int, num_features: int = 8, *, key: PRNGKeyArray
    ):
        # LeCun-normal with fan-in h * w (the positions each output sums over).
        std = 1.0 / math.sqrt(height * width)
        self.kernel = normal(key, (height, width, channels, num_features), std)

    def __call__(
        self, x: Float[Array, "height width channels"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " features"]:
        """Weight every channel by each learned spatial map and sum over positions."""
        del key
        return jnp.reshape(jnp.einsum("hwc,hwcf->cf", x, self.kernel), (-1,))


POOLINGS = ("avg", "flatten", "spatial_softmax", "spatial_softmax_learned", "spatial_embeddings")


def make_pooling(
    name: str,
    *,
    height: int,
    width: int,
    channels: int,
    num_spatial_features: int = 8,
    key: PRNGKeyArray,
) -> GlobalAveragePool | Flatten | SpatialSoftmax | SpatialLearnedEmbeddings:
    """Build the pooling head `name` for a `(height, width, channels)` feature map."""
    if name == "avg":
        return GlobalAveragePool()
    if name == "flatten":
        return Flatten()
    if name in ("spatial_softmax", "spatial_softmax_learned"):
        learn = name == "spatial_softmax_learned"
        return SpatialSoftmax(height, width, channels, learn_temperature=learn)
    if name == "spatial_embeddings":
        return SpatialLearnedEmbeddings(height, width, channels, num_spatial_features, key=key)
    raise ValueError(f"Unknown pooling {name!r}; choose one of {POOLINGS}.")

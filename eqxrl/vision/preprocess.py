"""Image preprocessing: uint8 -> float, normalisation, resizing, frame stacking, and the
`PixelEncoder` wrapper that does all of it inside the encoder so images stay uint8 elsewhere
(replay buffers, datasets, augmentations such as the DrQ shift).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Shaped, UInt8

from eqxrl.vision._layers import check_channels_last
from eqxrl.vision.resnet_v1 import ResNetV1

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PixelEncoder",
    "normalize",
    "resize",
    "stack_frames",
    "to_float",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel RGB mean of ImageNet, for images in [0, 1]."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel RGB standard deviation of ImageNet, for images in [0, 1]."""


def to_float(image: UInt8[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Map a uint8 image to float32 in [0, 1]."""
    if image.dtype != jnp.uint8:
        raise TypeError(
            f"to_float expects a uint8 image; got dtype {image.dtype}. Float images are "
            "presumably already in [0, 1]; pass them to the encoder directly."
        )
    return image.astype(jnp.float32) / 255.0


def normalize(
    image: Float[Array, "height width channels"],
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Float[Array, "height width channels"]:
    """Standardise each channel: `(image - mean) / std`; defaults are ImageNet's.

    With stacked frames (e.g. 9 channels = 3 RGB frames) a 3-long mean/std is tiled across
    the frames.
    """
    channels = image.shape[-1]
    if channels % len(mean) or len(mean) != len(std):
        raise ValueError(
            f"normalize: mean (length {len(mean)}) and std (length {len(std)}) must have equal "
            f"length dividing the number of channels ({channels}); got image shape "
            f"{image.shape}."
        )
    reps = channels // len(mean)
    mean_arr = jnp.asarray(mean * reps, dtype=image.dtype)
    std_arr = jnp.asarray(std * reps, dtype=image.dtype)
    return (image - mean_arr[None, None, :]) / std_arr[None, None, :]


def resize(
    image: Float[Array, "height width channels"],
    size: tuple[int, int],
    method: str = "bilinear",
) -> Float[Array, "new_height new_width channels"]:
    """Resize to `size` = (height, width); antialiased when downsampling."""
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise TypeError(
            f"resize expects a float image; got {image.dtype}. Call to_float first, so that "
            "interpolation does not round to integers."
        )
    return jax.image.resize(image, (*size, image.shape[-1]), method=method, antialias=True)


def stack_frames(
    frames: Shaped[Array, "num_frames height width channels"],
) -> Shaped[Array, "height width stacked"]:
    """Concatenate frames along channels: `(k, h, w, c) -> (h, w, k * c)`, oldest first."""
    k, h, w, c = frames.shape
    return jnp.reshape(jnp.transpose(frames, (1, 2, 0, 3)), (h, w, k * c))


class PixelEncoder(eqx.Module):
    """Wrap an encoder so that it takes uint8 images: convert, (resize), (normalise), encode.

    `mean`/`std` of None skip normalisation (the usual choice when training from scratch);
    use `IMAGENET_MEAN`/`IMAGENET_STD` for ImageNet-pretrained weights. `frozen=True` stops
    gradients at the features; exclude the encoder from the optimiser as well, otherwise
    weight decay still changes it, and put a BatchNorm encoder in `eqx.nn.inference_mode` so
    that its running statistics stay fixed too. Stateful encoders (ResNet-v1) are called
    `pixel_encoder(image, state) -> (features, state)`, the others `pixel_encoder(image)`.
    """

    encoder: eqx.Module
    mean: tuple[float, ...] | None = eqx.field(static=True)
    std: tuple[float, ...] | None = eqx.field(static=True)
    size: tuple[int, int] | None = eqx.field(static=True)
    frozen: bool = eqx.field(static=True)

    def __init__(
        self,
        encoder: eqx.Module,
        *,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        size: tuple[int, int] | None = None,
        frozen: bool = False,
    ):
        if (mean is None) != (std is None):
            raise ValueError(
                f"PixelEncoder: give both mean and std or neither; got mean={mean}, std={std}."
            )
        self.encoder = encoder
        self.mean = None if mean is None else tuple(mean)
        self.std = None if std is None else tuple(std)
        self.size = None if size is None else tuple(size)
        self.frozen = frozen

    @property
    def stateful(self) -> bool:
        """Whether the wrapped encoder threads an `eqx.nn.State` (BatchNorm statistics)."""
        return isinstance(self.encoder, ResNetV1) and self.encoder.stateful

    def preprocess(self, image: UInt8[Array, "height width channels"]) -> Float[Array, "h w c"]:
        """The float image the encoder sees."""
        if image.ndim != 3 or image.dtype != jnp.uint8:
            raise TypeError(
                "PixelEncoder takes ONE uint8 image of shape (height, width, channels); got "
                f"dtype {image.dtype} and shape {image.shape}. Use jax.vmap for batches and "
                "stack_frames for (frames, height, width, channels) stacks."
            )
        channels = getattr(self.encoder, "in_channels", None)
        if channels is not None:  # before resizing, which would mix up a channels-first image
            check_channels_last(image.shape, "PixelEncoder", channels)
        x = to_float(image)
        if self.size is not None:
            x = resize(x, self.size)
        if self.mean is not None:
            x = normalize(x, self.mean, self.std)
        return x

    def __call__(
        self,
        image: UInt8[Array, "height width channels"],
        state: eqx.nn.State | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " features"] | tuple[Float[Array, " features"], eqx.nn.State]:
        """Encode one uint8 image (with `state` for stateful encoders)."""
        x = self.preprocess(image)
        if self.stateful:
            if state is None:
                raise TypeError(
                    f"PixelEncoder wraps the stateful {type(self.encoder).__name__}; call it "
                    "as pixel_encoder(image, state) with the state from make_encoder."
                )
            features, state = self.encoder(x, state, key=key)
            if self.frozen:
                features = jax.lax.stop_gradient(features)
            return features, state
        if state is not None:
            raise TypeError(
                f"{type(self.encoder).__name__} is stateless; call pixel_encoder(image) "
                "without a state."
            )
        if isinstance(self.encoder, ResNetV1):  # group, layer or frozen BatchNorm: no state
            features, _ = self.encoder(x, None, key=key)
        else:
            features = self.encoder(x, key=key)
        return jax.lax.stop_gradient(features) if self.frozen else features

"""Image augmentations: pure functions `aug(key, image) -> image` of ONE `(h, w, c)` image.

Batch them with `augment_batch(aug, key, images)`, which gives every image its own key.
Set parameters with `functools.partial` and chain augmentations with `compose`. The DrQ
shift works on uint8 and float images; the colour operations take float RGB images in
[0, 1] and keep them there.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Shaped

__all__ = [
    "augment_batch",
    "color_jitter",
    "compose",
    "gaussian_blur",
    "gaussian_kernel",
    "random_flip",
    "random_shift",
    "solarize",
]

Augmentation = Callable[[PRNGKeyArray, Array], Array]
Image = Shaped[Array, "height width channels"]
RGB = Float[Array, "height width 3"]


def random_shift(key: PRNGKeyArray, image: Image, *, padding: int = 4) -> Image:
    """DrQ shift: pad by replicating edges, then crop back at a random integer offset."""
    h, w, _ = image.shape
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode="edge")
    offsets = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (offsets[0], offsets[1], 0), image.shape)


def random_flip(key: PRNGKeyArray, image: Image, *, prob: float = 0.5) -> Image:
    """Mirror the image left-right with probability `prob`."""
    return jnp.where(jax.random.bernoulli(key, prob), image[:, ::-1, :], image)


def solarize(
    key: PRNGKeyArray,
    image: Float[Array, "height width channels"],
    *,
    threshold: float = 0.5,
    prob: float = 0.2,
) -> Float[Array, "height width channels"]:
    """With probability `prob`, invert (1 - x) every value at or above `threshold`."""
    _check_unit_float(image, "solarize")
    solarized = jnp.where(image >= threshold, 1.0 - image, image)
    return jnp.where(jax.random.bernoulli(key, prob), solarized, image)


def gaussian_blur(
    key: PRNGKeyArray,
    image: Float[Array, "height width channels"],
    *,
    sigma_min: float = 0.1,
    sigma_max: float = 2.0,
    kernel_size: int | None = None,
    prob: float = 1.0,
) -> Float[Array, "height width channels"]:
    """Blur with a separable Gaussian of sigma ~ U[sigma_min, sigma_max] (SimCLR/BYOL).

    `kernel_size` (odd) defaults to about 10% of the image height; borders are reflected.
    """
    _check_unit_float(image, "gaussian_blur")
    h, w, _ = image.shape
    if kernel_size is None:
        kernel_size = 2 * max(1, round(0.05 * h)) + 1
    if kernel_size % 2 == 0:
        raise ValueError(f"gaussian_blur: kernel_size must be odd; got {kernel_size}.")
    radius = kernel_size // 2
    if radius >= min(h, w):
        raise ValueError(
            f"gaussian_blur: kernel_size {kernel_size} is too large for a {h}x{w} image; "
            f"use at most {2 * min(h, w) - 1}."
        )
    k_sigma, k_apply = jax.random.split(key)
    sigma = jax.random.uniform(k_sigma, (), minval=sigma_min, maxval=sigma_max)
    kernel = gaussian_kernel(sigma, kernel_size).astype(image.dtype)
    padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    # Separable: a weighted sum of shifted copies along height, then along width.
    rows = kernel[0] * padded[:h]
    for i in range(1, kernel_size):
        rows = rows + kernel[i] * padded[i : i + h]
    blurred = kernel[0] * rows[:, :w]
    for i in range(1, kernel_size):
        blurred = blurred + kernel[i] * rows[:, i : i + w]
    return jnp.where(jax.random.bernoulli(k_apply, prob), blurred, image)


def gaussian_kernel(sigma: Float[Array, ""], size: int) -> Float[Array, " size"]:
    """Normalised 1-D Gaussian of standard deviation `sigma` on `size` taps."""
    x = jnp.arange(size, dtype=jnp.float32) - float(size // 2)
    weights = jnp.exp(-0.5 * jnp.square(x / sigma))
    return weights / jnp.sum(weights)


def color_jitter(
    key: PRNGKeyArray,
    image: RGB,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
) -> RGB:
    """Colour jitter in random order, then random grayscale, on an RGB image in [0, 1].

    Brightness, contrast and saturation scale by a factor drawn from `[1 - s, 1 + s]` (as in
    torchvision); hue shifts by `U[-hue, hue]` turns of the colour wheel. Each of the four is
    applied independently with probability `jitter_prob`, in an order drawn per call; then
    the image becomes grayscale with probability `grayscale_prob`.
    """
    _check_unit_float(image, "color_jitter")
    if image.shape[-1] != 3:
        raise ValueError(
            f"color_jitter needs RGB images (3 channels); got shape {image.shape}. For stacked "
            "frames reshape to (height, width, frames, 3) and vmap over the frames axis."
        )
    k_order, k_apply, k_b, k_c, k_s, k_h, k_gray = jax.random.split(key, 7)
    factors = jnp.stack(
        [
            # Factors are clipped at 0, as in torchvision (a negative scale is meaningless).
            _uniform(k_b, max(0.0, 1.0 - brightness), 1.0 + brightness),
            _uniform(k_c, max(0.0, 1.0 - contrast), 1.0 + contrast),
            _uniform(k_s, max(0.0, 1.0 - saturation), 1.0 + saturation),
            _uniform(k_h, -hue, hue),
        ]
    )
    apply = jax.random.bernoulli(k_apply, jitter_prob, (4,))
    ops = (_adjust_brightness, _adjust_contrast, _adjust_saturation, _adjust_hue)

    def step(img, op_index):
        out = jax.lax.switch(op_index, ops, img, factors[op_index])
        return jnp.where(apply[op_index], out, img), None

    image, _ = jax.lax.scan(step, image, jax.random.permutation(k_order, 4))
    gray = jnp.broadcast_to(_grayscale(image), image.shape)
    return jnp.where(jax.random.bernoulli(k_gray, grayscale_prob), gray, image)


def compose(*augmentations: Augmentation) -> Augmentation:
    """Chain augmentations left to right; each gets its own key split from the given one."""

    def composed(key: PRNGKeyArray, image: Array) -> Array:
        keys = jax.random.split(key, len(augmentations))
        for aug, k in zip(augmentations, keys, strict=True):
            image = aug(k, image)
        return image

    return composed


def augment_batch(
    augmentation: Augmentation,
    key: PRNGKeyArray,
    images: Shaped[Array, "batch height width channels"],
) -> Shaped[Array, "batch height width channels"]:
    """Apply `augmentation` to every image of a batch with independent keys."""
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(augmentation)(keys, images)


def _check_unit_float(image: Array, owner: str) -> None:
    if image.ndim != 3 or not jnp.issubdtype(image.dtype, jnp.floating):
        raise TypeError(
            f"{owner} takes ONE float image (height, width, channels) in [0, 1]; got dtype "
            f"{image.dtype} and shape {image.shape}. Convert uint8 with "
            "eqxrl.vision.to_float and batch with augment_batch."
        )


def _uniform(key: PRNGKeyArray, low: float, high: float) -> Float[Array, ""]:
    return jax.random.uniform(key, (), minval=low, maxval=high)


def _grayscale(image: RGB) -> Float[Array, "height width 1"]:
    # ITU-R 601 luma, the weights torchvision and TF use.
    weights = jnp.asarray([0.299, 0.587, 0.114], dtype=image.dtype)
    return jnp.sum(image * weights[None, None, :], axis=-1, keepdims=True)


def _adjust_brightness(image: RGB, factor: Float[Array, ""]) -> RGB:
    return jnp.clip(image * factor, 0.0, 1.0)


def _adjust_contrast(image: RGB, factor: Float[Array, ""]) -> RGB:
    mean = jnp.mean(_grayscale(image))
    return jnp.clip((image - mean) * factor + mean, 0.0, 1.0)


def _adjust_saturation(image: RGB, factor: Float[Array, ""]) -> RGB:
    gray = _grayscale(image)
    return jnp.clip((image - gray) * factor + gray, 0.0, 1.0)


def _adjust_hue(image: RGB, shift: Float[Array, ""]) -> RGB:
    h, s, v = _rgb_to_hsv(image)
    return _hsv_to_rgb(jnp.mod(h + shift, 1.0), s, v)


def _rgb_to_hsv(image: RGB):
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    v = jnp.max(image, axis=-1)
    delta = v - jnp.min(image, axis=-1)
    s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
    safe = jnp.where(delta > 0, delta, 1.0)  # avoids 0/0 for gray pixels, whose hue is 0
    h = jnp.where(
        v == r, (g - b) / safe, jnp.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    h = jnp.where(delta > 0, jnp.mod(h / 6.0, 1.0), 0.0)
    return h, s, v


def _hsv_to_rgb(h, s, v) -> RGB:
    # Standard formula: channel n takes v - v*s*clip(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = jnp.mod(n + 6.0 * h, 6.0)
        channels.append(v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
    return jnp.stack(channels, axis=-1)

"""Augmentations: shapes, dtypes, ranges, determinism, per-image draws, direct computations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxrl.vision import (
    augment_batch,
    color_jitter,
    compose,
    gaussian_blur,
    gaussian_kernel,
    random_flip,
    random_shift,
    solarize,
)

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def rgb():
    """A batch of 8 float RGB images in [0, 1] with structure (a gradient plus noise)."""
    ramp = jnp.linspace(0.0, 1.0, 24)[None, :, None]
    noise = jax.random.uniform(jax.random.key(1), (8, 20, 24, 3))
    return jnp.clip(0.5 * ramp[None] + 0.5 * noise, 0.0, 1.0)


AUGMENTATIONS = {
    "shift": functools.partial(random_shift, padding=4),
    "flip": functools.partial(random_flip, prob=0.5),
    "solarize": functools.partial(solarize, prob=0.5),
    "blur": functools.partial(gaussian_blur, kernel_size=5),
    "jitter": color_jitter,
    "composed": compose(random_shift, color_jitter, gaussian_blur, random_flip, solarize),
}


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_shape_dtype_range_and_determinism(name, rgb):
    aug = jax.jit(functools.partial(augment_batch, AUGMENTATIONS[name]))
    out = aug(KEY, rgb)
    assert out.shape == rgb.shape and out.dtype == rgb.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_array_equal(out, aug(KEY, rgb))  # same key, same output
    assert not np.array_equal(out, aug(jax.random.key(7), rgb))  # new key, new draw


@pytest.mark.parametrize("name", ["shift", "jitter", "blur", "composed"])
def test_images_in_a_batch_get_different_draws(name):
    # Eight copies of one image: identical outputs would mean one draw for the whole batch.
    image = jax.random.uniform(jax.random.key(3), (20, 24, 3))
    out = augment_batch(AUGMENTATIONS[name], KEY, jnp.broadcast_to(image, (8, 20, 24, 3)))
    distinct = {np.asarray(o).tobytes() for o in out}
    assert len(distinct) > 1


def test_shift_equals_slicing_the_edge_padded_image():
    image = jax.random.randint(jax.random.key(4), (12, 10, 9), 0, 256).astype(jnp.uint8)
    key = jax.random.key(5)
    out = random_shift(key, image, padding=3)
    # Recompute the offset exactly as random_shift draws it.
    dy, dx = np.asarray(jax.random.randint(key, (2,), 0, 7))
    padded = np.pad(np.asarray(image), ((3, 3), (3, 3), (0, 0)), mode="edge")
    np.testing.assert_array_equal(out, padded[dy : dy + 12, dx : dx + 10])
    assert out.dtype == jnp.uint8


def test_shift_on_uint8_replay_batch():
    # Frame-stacked uint8 replay images, as DrQ uses them; each image gets its own offset.
    images = np.random.default_rng(0).integers(0, 256, (6, 84, 84, 9), dtype=np.uint8)
    out = jax.jit(functools.partial(augment_batch, random_shift))(KEY, jnp.asarray(images))
    assert out.shape == images.shape and out.dtype == jnp.uint8
    offsets = set()
    for key, image, shifted in zip(jax.random.split(KEY, 6), images, np.asarray(out), strict=True):
        dy, dx = np.asarray(jax.random.randint(key, (2,), 0, 9))
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="edge")
        np.testing.assert_array_equal(shifted, padded[dy : dy + 84, dx : dx + 84])
        offsets.add((int(dy), int(dx)))
    assert len(offsets) > 1


def test_blur_matches_direct_2d_convolution():
    image = jax.random.uniform(jax.random.key(8), (9, 11, 3))
    key = jax.random.key(9)
    out = gaussian_blur(key, image, sigma_min=0.5, sigma_max=1.5, kernel_size=5)
    # Recompute sigma as gaussian_blur draws it, then convolve with the full 2-D kernel.
    sigma = float(jax.random.uniform(jax.random.split(key)[0], (), minval=0.5, maxval=1.5))
    taps = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
    taps /= taps.sum()
    np.testing.assert_allclose(gaussian_kernel(jnp.asarray(sigma), 5), taps, rtol=1e-5)
    kernel2d = np.outer(taps, taps)
    padded = np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)), mode="reflect")
    expected = np.zeros((9, 11, 3))
    for i in range(9):
        for j in range(11):
            expected[i, j] = np.einsum("hw,hwc->c", kernel2d, padded[i : i + 5, j : j + 5])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_blur_sigma_controls_strength():
    image = jax.random.uniform(jax.random.key(10), (16, 16, 3))
    weak = gaussian_blur(KEY, image, sigma_min=0.1, sigma_max=0.1, kernel_size=7)
    strong = gaussian_blur(KEY, image, sigma_min=3.0, sigma_max=3.0, kernel_size=7)
    np.testing.assert_allclose(weak, image, atol=1e-4)  # sigma 0.1: almost the identity
    assert float(jnp.std(strong)) < 0.6 * float(jnp.std(image))


def test_flip_and_solarize_match_direct_computation():
    image = jax.random.uniform(jax.random.key(11), (5, 6, 3))
    np.testing.assert_array_equal(random_flip(KEY, image, prob=1.0), image[:, ::-1])
    np.testing.assert_array_equal(random_flip(KEY, image, prob=0.0), image)
    expected = np.where(image >= 0.5, 1.0 - image, image)
    np.testing.assert_allclose(solarize(KEY, image, prob=1.0), expected)
    np.testing.assert_array_equal(solarize(KEY, image, prob=0.0), image)


def test_color_jitter_pieces(rgb):
    image = rgb[0]
    off = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    # All factors exactly 1 and hue shift 0: the image comes back (up to HSV round-off).
    same = color_jitter(KEY, image, **off, jitter_prob=1.0, grayscale_prob=0.0)
    np.testing.assert_allclose(same, image, atol=1e-5)
    # Grayscale: three equal channels with the ITU-R 601 luma.
    gray = color_jitter(KEY, image, jitter_prob=0.0, grayscale_prob=1.0)
    luma = image @ jnp.asarray([0.299, 0.587, 0.114])
    for c in range(3):
        np.testing.assert_allclose(gray[..., c], luma, rtol=1e-5, atol=1e-6)
    # Hue alone keeps HSV value (the max channel) and changes the colours.
    hued = color_jitter(KEY, image, **{**off, "hue": 0.5}, jitter_prob=1.0, grayscale_prob=0.0)
    np.testing.assert_allclose(hued.max(axis=-1), image.max(axis=-1), atol=1e-5)
    assert float(jnp.abs(hued - image).max()) > 0.05


def test_compose_splits_keys_deterministically(rgb):
    image = rgb[0]
    composed = compose(random_flip, solarize)
    k_flip, k_solarize = jax.random.split(KEY)
    expected = solarize(k_solarize, random_flip(k_flip, image))
    np.testing.assert_array_equal(composed(KEY, image), expected)


def test_color_ops_reject_uint8_and_non_rgb():
    with pytest.raises(Exception, match="float|Float"):
        color_jitter(KEY, jnp.zeros((8, 8, 3), jnp.uint8))
    with pytest.raises(Exception, match="3 channels|height width 3"):
        color_jitter(KEY, jnp.zeros((8, 8, 9)))

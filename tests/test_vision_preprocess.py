"""Preprocessing and the uint8 PixelEncoder wrapper."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxrl.vision import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelEncoder,
    make_encoder,
    normalize,
    resize,
    stack_frames,
    to_float,
)

IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_to_float_maps_uint8_to_unit_interval():
    out = to_float(jnp.asarray(np.array([[[0, 128, 255]]], dtype=np.uint8)))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [[[0.0, 128 / 255, 1.0]]])


def test_normalize_matches_numpy_and_tiles_over_stacked_frames():
    x = to_float(jnp.asarray(IMAGE))
    expected = (np.asarray(x) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(normalize(x), expected, rtol=1e-5, atol=1e-6)
    stacked = jnp.concatenate([x, x], axis=-1)
    np.testing.assert_allclose(normalize(stacked)[..., 3:], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mean"):
        normalize(x[..., :2])


def test_resize_and_stack_frames():
    x = to_float(jnp.asarray(IMAGE))
    assert resize(x, (16, 24)).shape == (16, 24, 3)
    constant = jnp.full((8, 8, 3), 0.25)
    np.testing.assert_allclose(resize(constant, (3, 5)), 0.25, rtol=1e-6)
    frames = jnp.stack([jnp.full((4, 5, 3), i, jnp.uint8) for i in range(3)])
    stacked = stack_frames(frames)
    assert stacked.shape == (4, 5, 9) and stacked.dtype == jnp.uint8
    np.testing.assert_array_equal(stacked[0, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2])  # oldest first


def test_pixel_encoder_converts_inside_and_can_freeze():
    encoder, _ = make_encoder("atari", in_channels=3, key=jax.random.key(0))
    wrapped = PixelEncoder(encoder, mean=IMAGENET_MEAN, std=IMAGENET_STD, size=(40, 40))
    images = jnp.asarray(np.stack([IMAGE, IMAGE[::-1]]))
    features = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(wrapped, images)
    preprocess = lambda x: normalize(resize(to_float(x), (40, 40)))
    direct = eqx.filter_jit(lambda m, x: m(preprocess(x)))(encoder, images[0])
    np.testing.assert_allclose(features[0], direct, rtol=1e-4, atol=1e-5)

    @eqx.filter_jit
    def grad_norm(model):
        loss = lambda m: jnp.sum(jax.vmap(m)(images))
        grads = eqx.filter_grad(loss)(model)
        return sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads))

    assert float(grad_norm(PixelEncoder(encoder, size=(40, 40)))) > 0
    assert float(grad_norm(PixelEncoder(encoder, size=(40, 40), frozen=True))) == 0.0


def test_pixel_encoder_with_stateful_resnet():
    # Built and run abstractly (shapes only): BatchNorm numerics are in test_vision_encoders.
    encoder, state = eqx.filter_eval_shape(
        lambda: make_encoder("resnetv1-18", key=jax.random.key(0))
    )
    wrapped = PixelEncoder(encoder)
    assert wrapped.stateful
    images = jnp.asarray(np.stack([IMAGE, IMAGE[::-1]]))
    train = lambda m, x, s: jax.vmap(m, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(
        x, s
    )
    features, new_state = eqx.filter_eval_shape(train, wrapped, images, state)
    assert features.shape == (2, 512)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    with pytest.raises(TypeError, match="stateful"):
        wrapped(images[0])


def test_pixel_encoder_rejects_float_images_and_atari_small_ones():
    encoder, _ = make_encoder("atari", in_channels=3, key=jax.random.key(0))
    with pytest.raises(Exception, match="uint8|UInt8"):
        PixelEncoder(encoder)(jnp.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="at least 36x36"):
        PixelEncoder(encoder)(jnp.zeros((32, 32, 3), jnp.uint8))

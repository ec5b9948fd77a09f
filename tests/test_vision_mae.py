"""MAE: patch order, what the encoder sees, the loss by hand, pre-training that lowers the
loss, and the pre-trained encoder in front of an agent's head."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eqxrl
from eqxrl.algorithms import bc
from eqxrl.vision import MAE, EncoderConfig, patchify, save_encoder, unpatchify

reconstruct = eqx.filter_jit(MAE.reconstruct)
TINY = dict(size=(32, 2, 2, 64), patch_size=4, image_size=(16, 16),
            decoder_size=(32, 1, 2, 64))


def test_patches_are_row_major_blocks_and_unpatchify_inverts():
    image = jax.random.uniform(jax.random.key(0), (8, 12, 3))
    patches = patchify(image, 4)
    assert patches.shape == (6, 48)
    np.testing.assert_array_equal(patches[4], np.reshape(image[4:8, 4:8], -1))  # row 1, col 1
    np.testing.assert_array_equal(unpatchify(patches, (8, 12), 4), image)


@pytest.mark.slow  # 13 s; the default run stays within ~6 minutes on 2 cores
def test_the_encoder_sees_only_visible_patches():
    mae = MAE(3, mask_ratio=0.75, key=jax.random.key(0), **TINY)
    image = jax.random.uniform(jax.random.key(1), (16, 16, 3))
    key = jax.random.key(2)
    prediction, mask = reconstruct(mae, image, key)
    assert prediction.shape == (16, 48) and int(mask.sum()) == 16 - mae.num_visible == 12

    def with_patch(k, value):
        patches = patchify(image, 4).at[k].set(value)
        return unpatchify(patches, (16, 16), 4)

    hidden, visible = int(np.flatnonzero(mask)[0]), int(np.flatnonzero(~mask)[0])
    same, _ = reconstruct(mae, with_patch(hidden, 0.5), key)
    np.testing.assert_array_equal(same, prediction)
    moved, _ = reconstruct(mae, with_patch(visible, 0.5), key)
    assert np.abs(moved - prediction).max() > 1e-4
    # Another key hides other patches.
    assert np.any(reconstruct(mae, image, jax.random.key(3))[1] != mask)


@pytest.mark.slow  # 11 to 14 s each
@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_is_the_mse_on_hidden_patches(norm_pix):
    mae = MAE(3, norm_pix=norm_pix, key=jax.random.key(0), **TINY)
    image = jax.random.uniform(jax.random.key(1), (16, 16, 3))
    prediction, mask = map(np.asarray, mae.reconstruct(image, jax.random.key(2)))
    target = np.asarray(patchify(image, 4), np.float64)
    if norm_pix:
        target = (target - target.mean(1, keepdims=True)) / np.sqrt(target.var(1, keepdims=True)
                                                                     + 1e-6)
    want = np.mean(((prediction - target) ** 2)[mask])
    np.testing.assert_allclose(mae.loss(image, jax.random.key(2)), want, rtol=1e-5)


@pytest.mark.slow  # 14 s; the default run stays within ~6 minutes on 2 cores
def test_pretraining_lowers_the_reconstruction_loss():
    # Images that can be inpainted: smooth colour gradients with random slopes.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    slopes = rng.uniform(-0.5, 0.5, (256, 2, 3))
    images = jnp.asarray(np.clip(0.5 + slopes[:, None, None, 0] * yy[None, ..., None]
                                 + slopes[:, None, None, 1] * xx[None, ..., None], 0, 1),
                         jnp.float32)
    mae = MAE(3, norm_pix=False, key=jax.random.key(0), **TINY)
    state = eqxrl.TrainState.create(mae, optax.adam(3e-3))

    def batch_loss(model, images, key):
        return jnp.mean(jax.vmap(model.loss)(images, jax.random.split(key, len(images))))

    @eqx.filter_jit
    def step(state, images, key):
        loss, grads = eqx.filter_value_and_grad(batch_loss)(state.model, images, key)
        return state.apply_gradients(grads), loss

    evaluate = eqx.filter_jit(batch_loss)
    before = float(evaluate(mae, images, jax.random.key(99)))
    for i in range(150):
        idx = rng.integers(0, 256, 32)
        state, _ = step(state, images[idx], jax.random.key(i))
    after = float(evaluate(state.model, images, jax.random.key(99)))
    assert after < 0.2 * before, (before, after)


@pytest.mark.slow  # 8 s: a ViT-Ti behind BC; the default suite is ~10 min
def test_a_pretrained_mae_encodes_pixels_for_an_agent(tmp_path):
    mae = MAE(3, size="Ti", patch_size=16, image_size=(32, 32), key=jax.random.key(0),
              decoder_size=TINY["decoder_size"])
    assert mae.encoder.num_patches == 4
    image = jax.random.uniform(jax.random.key(1), (32, 32, 3))
    np.testing.assert_array_equal(eqx.filter_jit(mae)(image), eqx.filter_jit(mae.encoder)(image))
    save_encoder(tmp_path / "mae_vit.eqx", mae.encoder)
    spec = eqxrl.EnvSpec(jax.ShapeDtypeStruct((32, 32, 3), np.dtype("uint8")), (),
                         discrete=True, num_actions=3)
    config = bc.Config(hidden_dims=(8,), vision=EncoderConfig(
        "vit-ti16", encoder_weights=str(tmp_path / "mae_vit.eqx"), freeze_encoder=True))
    state = bc.init(jax.random.key(5), spec, config)
    vit = state.actor.model.encoder.encoders[0].encoder
    for a, b in zip(jax.tree.leaves(eqx.filter(mae.encoder, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(vit, eqx.is_array)), strict=True):
        np.testing.assert_array_equal(a, b)
    # The table's MAE in front of a head: ObsEncoder keeps its ViT and drops the decoder.
    table = eqxrl.vision.ObsEncoder(spec, "mae-ti16", key=jax.random.key(0))
    assert type(table.encoders[0].encoder).__name__ == "ViT" and table.features == 192


def test_bad_mae_settings_are_refused():
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\); got 1.0"):
        MAE(3, mask_ratio=1.0, key=jax.random.key(0), **TINY)
    with pytest.raises(ValueError, match="image_size \\(18, 16\\) is not a multiple of "
                                         "patch_size 4"):
        MAE(3, key=jax.random.key(0), **(TINY | {"image_size": (18, 16)}))

"""Encoders: published parameter counts, output shapes, jit/vmap/grad, BatchNorm state."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxrl.vision import (
    ENCODERS,
    GlobalAveragePool,
    ResNetV1,
    SpatialLearnedEmbeddings,
    SpatialSoftmax,
    make_encoder,
)
from eqxrl.vision._layers import conv


def num_params(tree) -> int:
    """Trainable (inexact) entries of a module, real or from eval_shape."""
    leaves = jax.tree.leaves(tree)
    return sum(
        int(np.prod(x.shape))
        for x in leaves
        if isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact)
    )


def abstract_encoder(name, **kwargs):
    """Build an encoder without allocating or initialising it."""
    return eqx.filter_eval_shape(lambda: make_encoder(name, key=jax.random.key(0), **kwargs))


def abstract_features(encoder, state, shape):
    image = jax.ShapeDtypeStruct(shape, jnp.float32)
    if isinstance(encoder, ResNetV1):
        encoder = eqx.nn.inference_mode(encoder)
        return eqx.filter_eval_shape(lambda m, x, s: m(x, s)[0], encoder, image, state)
    return eqx.filter_eval_shape(lambda m, x: m(x), encoder, image)


# Published counts without the classifier: torchvision resnet18/34/50/101/152 have
# 11,689,512 / 21,797,672 / 25,557,032 / 44,549,160 / 60,192,808 parameters with their
# 1000-way fc (513,000 or 2,049,000); timm vit_{tiny,small,base}_patch16_224 have
# 5,717,416 / 22,050,664 / 86,567,656 with their head (193,000 / 385,000 / 769,000);
# timm resnetv2_50x1_bit has 25,549,352 with its 2,049,000 head; Nature DQN has 1,693,362
# with an 18-action head (9,234).
PUBLISHED = [
    ("resnetv1-18", {}, (224, 224, 3), 11_176_512, 512),
    ("resnetv1-34", {}, (224, 224, 3), 21_284_672, 512),
    ("resnetv1-50", {}, (224, 224, 3), 23_508_032, 2048),
    ("resnetv1-101", {}, (224, 224, 3), 42_500_160, 2048),
    ("resnetv1-152", {}, (224, 224, 3), 58_143_808, 2048),
    ("resnetv2-50", {}, (224, 224, 3), 23_500_352, 2048),
    ("vit-ti16", {}, (224, 224, 3), 5_524_416, 192),
    ("vit-s16", {}, (224, 224, 3), 21_665_664, 384),
    ("vit-b16", {}, (224, 224, 3), 85_798_656, 768),
    ("atari", {"in_channels": 4, "linear_features": 512}, (84, 84, 4), 1_684_128, 512),
    ("atari", {"in_channels": 4}, (84, 84, 4), 77_984, 3136),
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "params", "features"), PUBLISHED)
def test_published_parameter_counts_and_shapes(name, kwargs, shape, params, features):
    encoder, state = abstract_encoder(name, **kwargs)
    assert num_params(encoder) == params
    assert abstract_features(encoder, state, shape).shape == (features,)


def impala_params(channels, num_blocks, in_channels=3):
    total, c_in = 0, in_channels
    for c in channels:
        total += (9 * c_in + 1) * c + 2 * num_blocks * (9 * c * c + c)
        c_in = c
    return total


IMPALA = [
    # name, stack channels, blocks per stack, features at 84x84 (ceil-halved per stack)
    ("impala", (16, 32, 32), 2, 11 * 11 * 32),
    ("impala_large", (16, 32, 32, 32), 2, 6 * 6 * 32),
    ("impala_larger", (16, 32, 32, 32, 32), 2, 3 * 3 * 32),
    ("impala_largest", (16, 32, 32, 32, 32, 32), 2, 2 * 2 * 32),
    ("impala_wider", (32, 64, 64), 2, 11 * 11 * 64),
    ("impala_widest", (64, 128, 128), 2, 11 * 11 * 128),
    ("impala_deeper", (16, 32, 32), 4, 11 * 11 * 32),
    ("impala_deepest", (16, 32, 32), 8, 11 * 11 * 32),
]


@pytest.mark.parametrize(("name", "channels", "blocks", "features"), IMPALA)
def test_impala_variants(name, channels, blocks, features):
    encoder, state = abstract_encoder(name)
    assert num_params(encoder) == impala_params(channels, blocks)
    assert abstract_features(encoder, state, (84, 84, 3)).shape == (features,)


def test_resnet_v1_norm_choices_keep_the_parameter_count():
    # GroupNorm and LayerNorm have the same per-channel scale and bias as BatchNorm.
    for norm in ("group", "layer"):
        encoder, state = abstract_encoder("resnetv1-18", norm=norm)
        assert num_params(encoder) == 11_176_512
        assert num_params(state) == 0
    _, state = abstract_encoder("resnetv1-18")
    assert num_params(state) == 2 * 4800  # running mean and variance of every BN channel


def test_vit_mean_pooling_drops_the_class_token():
    encoder, _ = abstract_encoder("vit-ti16", pooling="mean")
    assert num_params(encoder) == 5_524_416 - 2 * 192  # class token and its position


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError, match="Valid names: .*impala.*resnetv1-18.*vit-ti16"):
        make_encoder("resnet18", key=jax.random.key(0))


def test_spatial_pooling_needs_image_size():
    with pytest.raises(ValueError, match=r"image_size=\(height, width\)"):
        make_encoder("impala", pooling="spatial_softmax", key=jax.random.key(0))


def test_wrong_image_rank_is_rejected():
    encoder, _ = make_encoder("atari", in_channels=3, key=jax.random.key(0))
    with pytest.raises(Exception, match="height width channels|ONE image"):
        encoder(jnp.zeros((2, 64, 64, 3)))


LAYOUT = [
    ("impala", {}, (32, 32)),
    ("atari", {"in_channels": 3}, (64, 64)),
    ("resnetv1-18", {"norm": "group"}, (32, 32)),
    ("resnetv2-26", {}, (32, 32)),
    ("vit-ti16", {"image_size": (32, 32)}, (32, 32)),
]


@pytest.mark.parametrize(("name", "kwargs", "size"), LAYOUT)
def test_channels_first_wrong_channels_and_dtype_are_named(name, kwargs, size):
    # Checked at trace time on abstract arrays: no encoder is built or run.
    encoder, state = abstract_encoder(name, **kwargs)
    assert encoder.in_channels == 3

    def call(shape, dtype=jnp.float32):
        image = jax.ShapeDtypeStruct(shape, dtype)
        if isinstance(encoder, ResNetV1):
            return eqx.filter_eval_shape(lambda m, x, s: m(x, s), encoder, image, state)
        return eqx.filter_eval_shape(lambda m, x: m(x), encoder, image)

    with pytest.raises(
        ValueError,
        match=rf"image has shape \(3, {size[0]}, {size[1]}\): expected \(height, width, 3\) "
        r"with channels last; it looks channels-first, transpose it with jnp.moveaxis\(x, 0, -1\)",
    ):
        call((3, *size))
    with pytest.raises(
        ValueError,
        match=r"expected \(height, width, 3\) with channels last, got 4 channels.*"
        r"in_channels=4",
    ):
        call((*size, 4))
    # Under the test suite's jaxtyping the annotation catches the dtype first.
    with pytest.raises(TypeError, match=r"float image in \[0, 1\]; got dtype uint8|u8\["):
        call((*size, 3), jnp.uint8)


def test_pixel_encoder_names_a_channels_first_image_before_resizing():
    from eqxrl.vision import PixelEncoder

    encoder, _ = abstract_encoder("impala")
    pixel = PixelEncoder(encoder, size=(32, 32))
    image = jax.ShapeDtypeStruct((3, 64, 64), jnp.uint8)
    with pytest.raises(ValueError, match=r"PixelEncoder: image has shape \(3, 64, 64\).*moveaxis"):
        eqx.filter_eval_shape(lambda m, x: m(x), pixel, image)


STATELESS = [
    # name, kwargs, image shape, features, whether to also compare single and batched calls
    ("impala", {}, (32, 32, 3), 4 * 4 * 32, True),
    (
        "impala",
        {"pooling": "spatial_softmax_learned", "image_size": (32, 24)},
        (32, 24, 3),
        64,
        False,
    ),
    ("atari", {"in_channels": 3}, (64, 64, 3), 4 * 4 * 64, False),
    pytest.param("vit-ti16", {"image_size": (32, 32), "dropout": 0.1}, (32, 32, 3), 192, True,
                 marks=pytest.mark.slow),  # 11 s; the default suite is ~10 min
]


@pytest.mark.parametrize(("name", "kwargs", "shape", "features", "compare"), STATELESS)
def test_stateless_encoders_jit_vmap_grad(name, kwargs, shape, features, compare):
    encoder, _ = make_encoder(name, key=jax.random.key(0), **kwargs)
    images = jax.random.uniform(jax.random.key(1), (3, *shape))
    keys = jax.random.split(jax.random.key(2), 3)

    @eqx.filter_jit
    def loss_and_grad(encoder, images, keys):
        loss = lambda m: jnp.mean(jnp.square(jax.vmap(lambda x, k: m(x, key=k))(images, keys)))
        return eqx.filter_value_and_grad(loss)(encoder)

    loss, grads = loss_and_grad(encoder, images, keys)
    assert jnp.isfinite(loss)
    grad_leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert len(grad_leaves) == len(jax.tree.leaves(eqx.filter(encoder, eqx.is_inexact_array)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grad_leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in grad_leaves) > 0

    # In inference mode (dropout off), a single unbatched call agrees with the vmapped batch.
    encoder = eqx.nn.inference_mode(encoder)
    batched = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(encoder, images)
    assert batched.shape == (3, features)
    if compare:
        single = eqx.filter_jit(lambda m, x: m(x))(encoder, images[0])
        np.testing.assert_allclose(single, batched[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 15 s; the default run stays within ~6 minutes on 2 cores
def test_resnet_v2_jit_vmap_and_abstract_grad():
    # Compiling BiT's gradient takes ~15 s on a small CPU, so the gradient is only traced.
    encoder, _ = make_encoder("resnetv2-26", key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    features = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(encoder, images)
    assert features.shape == (2, 2048)
    assert bool(jnp.all(jnp.isfinite(features)))
    grads = eqx.filter_eval_shape(
        eqx.filter_grad(lambda m, x: jnp.mean(jax.vmap(m)(x))), encoder, images
    )
    assert num_params(grads) == num_params(encoder)


@pytest.fixture(scope="module")
def resnet18():
    return make_encoder("resnetv1-18", key=jax.random.key(0))


def _train_forward(encoder, state, images):
    """One training-mode pass: BatchNorm statistics are shared across the 'batch' axis."""
    return jax.vmap(encoder, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(
        images, state
    )


train_forward = eqx.filter_jit(_train_forward)


def test_batchnorm_training_updates_running_statistics(resnet18):
    encoder, state = resnet18
    images = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))

    @eqx.filter_jit
    def train_step(encoder, state, images):
        def loss(m):
            features, new_state = _train_forward(m, state, images)
            return jnp.mean(jnp.square(features)), new_state

        return eqx.filter_value_and_grad(loss, has_aux=True)(encoder)

    (loss, new_state), grads = train_step(encoder, state, images)
    assert jnp.isfinite(loss)
    assert float(jnp.sum(jnp.abs(grads.stem_conv.weight))) > 0

    # The stem's running statistics moved by exactly 10% towards this batch's statistics.
    stem = eqx.filter_jit(lambda m, x: jax.vmap(lambda y: conv(m.stem_conv, y))(x))(
        encoder, images
    )  # (batch, h, w, c)
    batch_mean = jnp.mean(stem, axis=(0, 1, 2))
    batch_var = jnp.var(stem, axis=(0, 1, 2))
    running_mean, running_var = new_state.get(encoder.stem_norm.stats)
    np.testing.assert_allclose(running_mean, 0.1 * batch_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(running_var, 0.9 + 0.1 * batch_var, rtol=1e-4, atol=1e-6)

    # In training mode an image's features depend on the rest of the batch.
    features, _ = train_forward(encoder, state, images)
    other, _ = train_forward(encoder, state, images.at[1:].set(images[1:] * 0.5))
    assert not np.allclose(features[0], other[0], atol=1e-4)


def test_batchnorm_inference_uses_fixed_statistics(resnet18):
    encoder, state = resnet18
    images = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
    _, state = train_forward(encoder, state, images)

    inference = eqx.nn.inference_mode(encoder)
    run = eqx.filter_jit(lambda m, s, x: jax.vmap(m, in_axes=(0, None), out_axes=(0, None))(x, s))
    features, same_state = run(inference, state, images)
    assert bool(eqx.tree_equal(same_state, state))
    assert features.shape == (4, 512)

    # Each image is encoded on its own: no batch axis needed, no dependence on the batch.
    single, _ = eqx.filter_jit(lambda m, x, s: m(x, s))(inference, images[0], state)
    np.testing.assert_allclose(single, features[0], rtol=1e-4, atol=1e-5)
    other, _ = run(inference, state, images.at[1:].set(0.0))
    np.testing.assert_allclose(other[0], features[0], rtol=1e-5, atol=1e-6)


def test_resnet_v1_layer_norm_runs_without_batch_axis():
    encoder, state = make_encoder("resnetv1-18", norm="layer", key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    features, new_state = eqx.filter_jit(
        lambda m, s, x: jax.vmap(m, in_axes=(0, None), out_axes=(0, None))(x, s)
    )(encoder, state, images)
    assert features.shape == (2, 512)
    assert bool(jnp.all(jnp.isfinite(features)))
    assert bool(eqx.tree_equal(new_state, state))


def test_spatial_softmax_finds_the_peak():
    # A non-square map catches swapped x/y grids; the peak sits at row 1, column 4.
    height, width, channels = 3, 5, 2
    x = jnp.zeros((height, width, channels)).at[1, 4, 0].set(50.0).at[2, 0, 1].set(50.0)
    out = SpatialSoftmax(height, width, channels)(x)
    np.testing.assert_allclose(out, [1.0, -1.0, 0.0, 1.0], atol=1e-5)  # [x0, x1, y0, y1]


def test_spatial_softmax_temperature_is_learned_only_when_asked():
    x = jax.random.normal(jax.random.key(0), (4, 4, 3))
    loss = lambda m: jnp.sum(m(x) * jnp.arange(6.0))
    learned = eqx.filter_grad(loss)(SpatialSoftmax(4, 4, 3, learn_temperature=True))
    fixed = eqx.filter_grad(loss)(SpatialSoftmax(4, 4, 3))
    assert float(jnp.abs(learned.temperature)) > 0
    assert float(fixed.temperature) == 0.0


def test_spatial_learned_embeddings_and_average_pool_match_loops():
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    head = SpatialLearnedEmbeddings(3, 4, 2, num_features=5, key=jax.random.key(1))
    kernel, xs = np.asarray(head.kernel), np.asarray(x)
    expected = [
        sum(xs[h, w, c] * kernel[h, w, c, f] for h in range(3) for w in range(4))
        for c in range(2)
        for f in range(5)
    ]
    np.testing.assert_allclose(head(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(GlobalAveragePool()(x), xs.mean(axis=(0, 1)), rtol=1e-6)


def test_every_table_entry_builds():
    # Cheap: shapes only. Catches a table entry whose kwargs no longer fit its class.
    for name in ENCODERS:
        kwargs = {"in_channels": 4} if name == "atari" else {}
        encoder, _ = abstract_encoder(name, **kwargs)
        assert num_params(encoder) > 0


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding="SAME"),
    dict(kernel_size=8, stride=4),
    dict(kernel_size=7, stride=2, padding=3, use_bias=False),
    dict(kernel_size=3, padding=2, dilation=2, groups=2),
])
def test_channels_last_conv_equals_the_equinox_layer(kwargs):
    # The encoders keep eqx.nn.Conv2d's parameters but run it channels-last (`conv`).
    layer = eqx.nn.Conv2d(4, 6, key=jax.random.key(0), **kwargs)
    x = jax.random.normal(jax.random.key(1), (20, 18, 4))
    expected = jnp.moveaxis(layer(jnp.moveaxis(x, -1, 0)), 0, -1)
    np.testing.assert_allclose(conv(layer, x), expected, rtol=1e-5, atol=1e-5)
    circular = eqx.nn.Conv2d(4, 6, 3, padding=1, padding_mode="CIRCULAR", key=jax.random.key(0))
    with pytest.raises(ValueError, match="padding_mode='CIRCULAR' is not supported"):
        conv(circular, x)

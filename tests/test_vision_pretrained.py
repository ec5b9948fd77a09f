"""Pretrained encoder weights: torchvision ResNet state dicts (written here, random values)
against a plain reference of torchvision's forward pass, eqxrl's own .eqx files, the
frozen-encoder option in an agent, and the errors."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl.algorithms import bc
from eqxrl.vision import (
    EncoderConfig,
    ObsEncoder,
    load_encoder,
    make_encoder,
    read_state_dict,
    resnet_from_torchvision,
    save_encoder,
)

STAGES = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def torchvision_state_dict(depth: int, width: int = 8, channels: int = 3, seed: int = 0):
    """A state dict with torchvision's names and shapes for resnet{depth} (random values,
    running statistics included; `width` 64 is torchvision's)."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, c_out, c_in, k):
        sd[f"{name}.weight"] = rng.normal(0, (2 / (c_in * k * k)) ** 0.5,
                                          (c_out, c_in, k, k)).astype(np.float32)

    def bn(name, c):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        sd[f"{name}.running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        sd[f"{name}.num_batches_tracked"] = np.array(100, np.int64)

    kind, stages = STAGES[depth]
    conv("conv1", width, channels, 7)
    bn("bn1", width)
    c_in = width
    for s, n in enumerate(stages):
        c = width * 2**s
        c_out = 4 * c if kind == "bottleneck" else c
        for j in range(n):
            p = f"layer{s + 1}.{j}"
            if kind == "basic":
                conv(f"{p}.conv1", c, c_in, 3), bn(f"{p}.bn1", c)
                conv(f"{p}.conv2", c, c, 3), bn(f"{p}.bn2", c)
            else:
                conv(f"{p}.conv1", c, c_in, 1), bn(f"{p}.bn1", c)
                conv(f"{p}.conv2", c, c, 3), bn(f"{p}.bn2", c)
                conv(f"{p}.conv3", c_out, c, 1), bn(f"{p}.bn3", c_out)
            if j == 0 and (s > 0 or c_in != c_out):
                conv(f"{p}.downsample.0", c_out, c_in, 1), bn(f"{p}.downsample.1", c_out)
            c_in = c_out
    sd["fc.weight"] = rng.normal(0, 0.01, (1000, c_in)).astype(np.float32)
    sd["fc.bias"] = np.zeros(1000, np.float32)
    return sd


@jax.jit(static_argnums=1)
def reference_features(sd, depth, image_hwc):
    """torchvision's ResNet forward in eval mode, written from its definition (NCHW)."""
    x = jnp.moveaxis(jnp.asarray(image_hwc), -1, 0)[None]

    def conv(x, name, stride=1, pad=0):
        return jax.lax.conv_general_dilated(
            x, jnp.asarray(sd[f"{name}.weight"]), (stride, stride), [(pad, pad)] * 2,
            dimension_numbers=("NCHW", "OIHW", "NCHW"), precision="highest")

    def bn(x, name):
        g = lambda k: jnp.asarray(sd[f"{name}.{k}"])[None, :, None, None]  # noqa: E731
        return (x - g("running_mean")) / jnp.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")

    x = jax.nn.relu(bn(conv(x, "conv1", 2, 3), "bn1"))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2),
                              ((0, 0), (0, 0), (1, 1), (1, 1)))
    kind, stages = STAGES[depth]
    for s, n in enumerate(stages):
        for j in range(n):
            p, stride = f"layer{s + 1}.{j}", 2 if s > 0 and j == 0 else 1
            if kind == "basic":
                y = jax.nn.relu(bn(conv(x, f"{p}.conv1", stride, 1), f"{p}.bn1"))
                y = bn(conv(y, f"{p}.conv2", 1, 1), f"{p}.bn2")
            else:
                y = jax.nn.relu(bn(conv(x, f"{p}.conv1"), f"{p}.bn1"))
                y = jax.nn.relu(bn(conv(y, f"{p}.conv2", stride, 1), f"{p}.bn2"))
                y = bn(conv(y, f"{p}.conv3"), f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(conv(x, f"{p}.downsample.0", stride), f"{p}.downsample.1")
            x = jax.nn.relu(x + y)
    return jnp.mean(x, axis=(2, 3))[0]


IMAGE = np.random.default_rng(1).uniform(-1, 1, (64, 64, 3)).astype(np.float32)


@pytest.mark.slow  # 17 s (ResNet-18), more for 50; the default run stays within ~6 minutes
@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_weights_give_torchvisions_features(depth, tmp_path):
    sd = torchvision_state_dict(depth)
    path = tmp_path / "resnet.npz"
    np.savez(path, **sd)
    want = reference_features(sd, depth, IMAGE)
    frozen, state = resnet_from_torchvision(path)
    assert not frozen.stateful and not jax.tree.leaves(state)
    assert frozen.depth == depth and frozen.in_channels == 3
    with jax.default_matmul_precision("highest"):
        got, _ = eqx.filter_jit(frozen)(jnp.asarray(IMAGE), None)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        # norm="batch": the same numbers from BatchNorms whose running statistics are the
        # file's, in inference mode.
        resnet, state = resnet_from_torchvision(path, norm="batch")
        got, _ = eqx.filter_jit(eqx.nn.inference_mode(resnet))(jnp.asarray(IMAGE), state)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_safetensors_and_prefixed_names_are_read(tmp_path):
    from safetensors.numpy import save_file

    sd = torchvision_state_dict(18)
    save_file({f"module.{k}": v for k, v in sd.items()}, str(tmp_path / "r.safetensors"))
    loaded = read_state_dict(tmp_path / "r.safetensors")
    assert set(loaded) == {f"module.{k}" for k in sd}
    encoder, _ = load_encoder("resnetv1-18", tmp_path / "r.safetensors")
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(eqx.filter_jit(encoder)(jnp.asarray(IMAGE), None)[0],
                                   reference_features(sd, 18, IMAGE), rtol=1e-4, atol=1e-4)


def test_a_pytorch_pickle_is_read_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    sd = torchvision_state_dict(18)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, tmp_path / "r.pth")
    encoder, _ = load_encoder("resnetv1-18", tmp_path / "r.pth")
    # torch's own ops as the reference: conv, batch_norm (eval), max_pool, adaptive pool.
    F = torch.nn.functional
    t = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    bn = lambda x, n: F.batch_norm(x, t[f"{n}.running_mean"], t[f"{n}.running_var"],  # noqa: E731
                                   t[f"{n}.weight"], t[f"{n}.bias"], training=False, eps=1e-5)
    conv = lambda x, n, **kw: F.conv2d(x, t[f"{n}.weight"], **kw)  # noqa: E731
    x = torch.from_numpy(IMAGE).permute(2, 0, 1)[None]
    x = F.max_pool2d(F.relu(bn(conv(x, "conv1", stride=2, padding=3), "bn1")), 3, 2, 1)
    for s in range(4):
        for j in range(2):
            p, stride = f"layer{s + 1}.{j}", 2 if s > 0 and j == 0 else 1
            y = F.relu(bn(conv(x, f"{p}.conv1", stride=stride, padding=1), f"{p}.bn1"))
            y = bn(conv(y, f"{p}.conv2", padding=1), f"{p}.bn2")
            if f"{p}.downsample.0.weight" in t:
                x = bn(conv(x, f"{p}.downsample.0", stride=stride), f"{p}.downsample.1")
            x = F.relu(x + y)
    want = F.adaptive_avg_pool2d(x, 1).flatten().numpy()
    with jax.default_matmul_precision("highest"):
        got, _ = eqx.filter_jit(encoder)(jnp.asarray(IMAGE), None)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bad_weight_files_are_refused_by_name(tmp_path):
    sd = torchvision_state_dict(18)
    np.savez(tmp_path / "r18.npz", **sd)
    with pytest.raises(ValueError, match="weights are a ResNet-18, but a ResNet-34"):
        load_encoder("resnetv1-34", tmp_path / "r18.npz")
    with pytest.raises(ValueError, match=r"PyTorch state dict.*not for 'impala'"):
        load_encoder("impala", tmp_path / "r18.npz")
    with pytest.raises(ValueError, match="take 3-channel images, but the observation images "
                                         "have 9 channels"):
        load_encoder("resnetv1-18", tmp_path / "r18.npz", in_channels=9)
    with pytest.raises(ValueError, match="holds BatchNorm statistics; use norm='frozen_batch'"):
        resnet_from_torchvision(sd, norm="group")
    wrong = dict(sd, **{"layer2.0.conv1.weight": np.zeros((16, 8, 5, 5), np.float32)})
    with pytest.raises(ValueError, match=r"'layer2.0.conv1.weight' has shape \(16, 8, 5, 5\); "
                                         r"this ResNet-18 expects \(16, 8, 3, 3\)"):
        resnet_from_torchvision(wrong)
    missing = {k: v for k, v in sd.items() if k != "layer3.1.bn2.running_var"}
    with pytest.raises(ValueError, match="'layer3.1.bn2.running_var' is missing"):
        resnet_from_torchvision(missing)
    with pytest.raises(ValueError, match=r"1 entries fit no layer .*'layer1.0.se.weight'"):
        resnet_from_torchvision(dict(sd, **{"layer1.0.se.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="no 'conv1.weight' entry"):
        resnet_from_torchvision({"encoder.blocks.0.weight": np.zeros(3)})
    with pytest.raises(FileNotFoundError, match="no file at"):
        read_state_dict(tmp_path / "absent.safetensors")
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"suffix '.ckpt'; expected one of .safetensors"):
        read_state_dict(tmp_path / "w.ckpt")


def test_eqx_files_round_trip_any_encoder(tmp_path):
    encoder, state = make_encoder("impala", in_channels=6, key=jax.random.key(3))
    save_encoder(tmp_path / "impala.eqx", encoder)
    loaded, _ = load_encoder("impala", tmp_path / "impala.eqx", in_channels=6)
    for a, b in zip(jax.tree.leaves(encoder), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"does not fit encoder 'impala' built with "
                                         r"\{'in_channels': 3\}"):
        load_encoder("impala", tmp_path / "impala.eqx", in_channels=3)
    with pytest.raises(ValueError, match="writes eqxrl's .eqx format"):
        save_encoder(tmp_path / "impala.pt", encoder)


PIXELS = eqxrl.EnvSpec(jax.ShapeDtypeStruct((32, 32, 3), np.dtype("uint8")), (), discrete=True,
                       num_actions=3)


@pytest.mark.slow  # 14 s; the default run stays within ~6 minutes on 2 cores
def test_a_frozen_pretrained_encoder_stays_fixed_while_the_head_learns(tmp_path):
    np.savez(tmp_path / "r18.npz", **torchvision_state_dict(18))
    config = bc.Config(hidden_dims=(16,), vision=EncoderConfig(
        "resnetv1-18", encoder_weights=str(tmp_path / "r18.npz"), freeze_encoder=True))
    state = bc.init(jax.random.key(0), PIXELS, config)
    pixel = state.actor.model.encoder.encoders[0]
    assert pixel.mean is not None and pixel.frozen  # ImageNet normalisation for these weights
    rng = np.random.default_rng(0)
    batch = eqxrl.Transition(
        obs=jnp.asarray(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)),
        action=jnp.asarray(rng.integers(0, 3, 8), jnp.int32), reward=jnp.zeros(8),
        next_obs=jnp.asarray(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)),
        terminated=jnp.zeros(8, bool), truncated=jnp.zeros(8, bool))
    new, _ = eqx.filter_jit(bc.update)(state, batch, jax.random.key(1), config)
    before = eqx.filter(state.actor.model.encoder, eqx.is_array)
    after = eqx.filter(new.actor.model.encoder, eqx.is_array)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
    head = lambda s: jax.tree.leaves(eqx.filter(s.actor.model.head, eqx.is_array))  # noqa: E731
    assert any(np.any(a != b) for a, b in zip(head(state), head(new), strict=True))
    # Unfrozen, the same weights are fine-tuned.
    tuned = dataclasses.replace(config, vision=dataclasses.replace(config.vision,
                                                                   freeze_encoder=False))
    moved, _ = eqx.filter_jit(bc.update)(bc.init(jax.random.key(0), PIXELS, tuned), batch,
                                         jax.random.key(1), tuned)
    after = eqx.filter(moved.actor.model.encoder, eqx.is_array)
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after),
                                              strict=True))


def test_encoder_flags_are_checked_early(tmp_path):
    missing = bc.Config(vision=EncoderConfig("resnetv1-18", str(tmp_path / "absent.npz")))
    with pytest.raises(FileNotFoundError, match=r"\(--encoder-weights\): no file at .*absent"):
        bc.init(jax.random.key(0), PIXELS, missing)
    with pytest.raises(ValueError, match="--encoder resnet18 is not an encoder; valid names"):
        EncoderConfig("resnet18")
    vector = eqxrl.EnvSpec(jax.ShapeDtypeStruct((4,), np.dtype("float32")), (), discrete=True,
                           num_actions=2)
    with pytest.raises(ValueError, match="observations hold no image"):
        bc.init(jax.random.key(0), vector, bc.Config(vision=EncoderConfig(freeze_encoder=True)))
    with pytest.raises(ValueError, match="keeps BatchNorm statistics.*or pretrained weights"):
        ObsEncoder(PIXELS, "resnetv1-18", key=jax.random.key(0))

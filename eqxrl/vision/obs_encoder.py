"""`ObsEncoder`: any observation of an `EnvSpec` (a vector, one uint8 image, or a dict of
images and vectors) to one feature vector, so that every head takes pixels.

    head = eqxrl.vision.encoded(spec, lambda dim: eqxrl.CategoricalPolicy(dim, n, key=k1),
                                encoder="impala", key=k2)

gives the head alone for vector observations and `WithEncoder(ObsEncoder(...), head)` when
the spec has image leaves, so algorithms build one network for both. `EncoderConfig` is the
three command-line flags every pixel algorithm shares (`--encoder`, `--encoder-weights`,
`--freeze-encoder`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.core.spec import EnvSpec
from eqxrl.core.types import Obs
from eqxrl.nn.heads import WithEncoder
from eqxrl.vision.encoders import ENCODERS, make_encoder
from eqxrl.vision.mae import MAE
from eqxrl.vision.preprocess import IMAGENET_MEAN, IMAGENET_STD, PixelEncoder
from eqxrl.vision.pretrained import TORCH_SUFFIXES, load_encoder


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The image encoder of a pixel algorithm; embed it in a config as
    `vision: Annotated[EncoderConfig, tyro.conf.arg(name="")] = EncoderConfig()`."""

    encoder: str = "impala"
    """image encoder for pixel observations (a name of eqxrl.vision.ENCODERS)"""
    encoder_weights: str | None = None
    """pretrained encoder weights, a local file: a torchvision/timm ResNet state dict
    (.safetensors, .npz, .pth) for resnetv1-*, or a .eqx file of eqxrl.vision.save_encoder"""
    freeze_encoder: bool = False
    """keep the encoder's weights fixed (its gradients stopped); usual with --encoder-weights"""

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(
                f"--encoder {self.encoder} is not an encoder; valid names: "
                f"{', '.join(sorted(ENCODERS))}.")
        if self.freeze_encoder and self.encoder_weights is None:
            warnings.warn(
                f"--freeze-encoder without --encoder-weights keeps a randomly initialised "
                f"{self.encoder} encoder fixed (random features); give --encoder-weights FILE "
                "to freeze pretrained weights.", stacklevel=2)

    def refuse_without_images(self, spec: EnvSpec, default: EncoderConfig) -> None:
        """Refuse an encoder chosen on the command line (anything but the algorithm's `default`)
        when the observations hold no image, so there is nothing for it to encode."""
        if self.encoder != default.encoder and not has_images(spec):
            raise ValueError(
                f"--encoder {self.encoder} has no effect: the observations hold no image (uint8, "
                "height x width x channels) to encode, so an MLP reads them directly; drop "
                "--encoder for this env.")

    def options(self) -> dict[str, Any]:
        """Keyword arguments of `encoded` / `ObsEncoder`."""
        return {"encoder": self.encoder, "weights": self.encoder_weights,
                "frozen": self.freeze_encoder}


def is_image(leaf: jax.ShapeDtypeStruct) -> bool:
    """Whether an observation leaf is one uint8 image `(height, width, channels)`."""
    return leaf.dtype == np.uint8 and len(leaf.shape) == 3


def has_images(spec: EnvSpec) -> bool:
    """Whether any leaf of the spec's observation is a uint8 image."""
    return any(is_image(leaf) for leaf in jax.tree.leaves(spec.obs_structure))


class ObsEncoder(eqx.Module):
    """Every uint8 image leaf through its own pixel encoder, every other leaf flattened, all
    concatenated in the observation's leaf order (dict keys sorted)."""

    encoders: tuple[PixelEncoder | None, ...]
    features: int = eqx.field(static=True)

    def __init__(self, spec: EnvSpec, encoder: str = "impala", *, key: PRNGKeyArray,
                 frozen: bool = False, weights: str | Path | None = None,
                 **encoder_kwargs: Any):
        """`encoder` names an entry of `ENCODERS` (stateless ones: not ResNet-v1 with
        BatchNorm); `encoder_kwargs` go to its constructor; `frozen` stops its gradients;
        `weights` is a file for `eqxrl.vision.load_encoder`, loaded into every image's
        encoder (torchvision ResNet weights also bring ImageNet normalisation)."""
        if encoder not in ENCODERS:
            raise ValueError(
                f"encoder={encoder!r} is not an encoder; valid names: "
                f"{', '.join(sorted(ENCODERS))}.")
        leaves = jax.tree.leaves(spec.obs_structure)
        keys = jax.random.split(key, len(leaves))
        encoders, features = [], 0
        for leaf, k in zip(leaves, keys, strict=True):
            if not is_image(leaf):
                if leaf.dtype == np.uint8:
                    raise ValueError(
                        f"A uint8 observation of shape {leaf.shape} is not an image (height, "
                        "width, channels); give images channels last, or float vectors.")
                encoders.append(None)
                features += int(np.prod(leaf.shape))
                continue
            height, width, channels = leaf.shape
            if channels > 16 and height <= 16 < width:  # e.g. (3, 84, 84): not channels last
                raise ValueError(
                    f"The image observation has shape {leaf.shape}, which looks channels-first; "
                    "eqxrl takes images as (height, width, channels): transpose them in the env "
                    "(for example with gymnasium.wrappers.TransformObservation and "
                    "np.moveaxis(obs, 0, -1)).")
            kwargs = {"in_channels": channels} | encoder_kwargs
            if encoder == "atari":
                kwargs = {"linear_features": 512, "image_size": (height, width)} | kwargs
            if encoder.startswith(("vit-", "mae-")):
                kwargs = {"image_size": (height, width)} | kwargs
            imagenet = {}
            if weights is None:
                net, state = make_encoder(encoder, key=k, **kwargs)
            else:
                net, state = load_encoder(encoder, weights, key=k, **kwargs)
                if Path(weights).suffix.lower() in TORCH_SUFFIXES:
                    imagenet = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
            if isinstance(net, MAE):  # its ViT; the decoder only serves pre-training
                net = net.encoder
            if jax.tree.leaves(state):
                raise ValueError(
                    f"encoder={encoder!r} keeps BatchNorm statistics, which ObsEncoder does not "
                    "thread; use a stateless encoder (impala, atari, resnetv2-*, vit-*), "
                    "norm='group', or pretrained weights (their BatchNorms are frozen).")
            pixel = PixelEncoder(net, frozen=frozen, **imagenet)
            size = jax.eval_shape(pixel, jax.ShapeDtypeStruct(leaf.shape, jnp.uint8)).shape[0]
            encoders.append(pixel)
            features += size
        self.encoders = tuple(encoders)
        self.features = features

    def __call__(self, obs: Obs, *, key: PRNGKeyArray | None = None) -> Float[Array, " features"]:
        """The features of one observation: each image leaf encoded, each other leaf flattened
        to float32, concatenated in leaf order. With a `key`, each leaf's encoder gets its own
        split of it."""
        leaves = jax.tree.leaves(obs)
        keys = (None,) * len(leaves) if key is None else tuple(jax.random.split(key, len(leaves)))
        parts = [jnp.reshape(x, (-1,)).astype(jnp.float32) if enc is None else enc(x, key=k)
                 for x, enc, k in zip(leaves, self.encoders, keys, strict=True)]
        return jnp.concatenate(parts)


def encoded(spec: EnvSpec, make_head: Callable[[int], eqx.Module], *, encoder: str = "impala",
            key: PRNGKeyArray, frozen: bool = False, weights: str | Path | None = None,
            **encoder_kwargs: Any) -> eqx.Module:
    """`make_head(spec.obs_dim)` for observations without images; else
    `WithEncoder(ObsEncoder(spec, encoder, ...), make_head(features))`."""
    if not has_images(spec):
        if weights is not None or frozen:
            raise ValueError(
                "Encoder weights or freezing were asked for, but the observations hold no "
                "image (uint8, height x width x channels) to encode; drop --encoder-weights "
                "and --freeze-encoder for this env.")
        return make_head(spec.obs_dim)
    torso = ObsEncoder(spec, encoder, key=key, frozen=frozen, weights=weights,
                       **encoder_kwargs)
    return WithEncoder(torso, make_head(torso.features))

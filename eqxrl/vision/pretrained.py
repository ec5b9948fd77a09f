"""Pretrained encoder weights from local files: torchvision/timm ResNets, and eqxrl's own.

Two kinds of file load into an encoder of `ENCODERS` (no network is touched):

- **torchvision (or timm) ResNet state dicts** (`resnet18` ... `resnet152`, the names
  `conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`, `fc.weight`, ...) load into
  `resnetv1-*`, in any of three containers: `.safetensors` (the `safetensors` package: the
  `pretrained` extra), `.npz` (numpy), or `.pth`/`.pt`/`.bin` (`torch.load`, so torch must be
  installed; `read_state_dict` + `safetensors.numpy.save_file` converts one once). The
  classifier (`fc.*`) is dropped. BatchNorms become `norm="frozen_batch"` (their statistics
  folded into a per-channel affine map: a stateless encoder that fits inside any agent) or,
  with `norm="batch"`, BatchNorms whose running statistics are the file's. These weights
  expect ImageNet-normalised RGB input: `ObsEncoder` applies it for them.
- **eqxrl files** (`.eqx`), written by `save_encoder` from any encoder, for example the
  encoder of an MAE pre-trained with `eqxrl.vision.MAE`, load into the same encoder name.

    encoder, state = load_encoder("resnetv1-18", "resnet18.safetensors")
    python algorithms/bc.py --dataset d.hdf5 --encoder resnetv1-18 \
        --encoder-weights resnet18.safetensors --freeze-encoder
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from eqxrl.core.checks import ConfigError
from eqxrl.vision.encoders import ENCODERS, make_encoder
from eqxrl.vision.normalization import BatchNorm, FrozenBatchNorm
from eqxrl.vision.resnet_v1 import V1_STAGES, ResNetV1

__all__ = [
    "TORCH_SUFFIXES",
    "load_encoder",
    "read_state_dict",
    "resnet_from_torchvision",
    "save_encoder",
]

TORCH_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".bin")
"""File suffixes read as torchvision/timm state dicts (`.eqx` is eqxrl's own format)."""


class WeightsNotFound(ConfigError, FileNotFoundError):
    """--encoder-weights names no file (a command-line error, and a FileNotFoundError)."""


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise WeightsNotFound(
            f"Pretrained weights (--encoder-weights): no file at {path}. Give a local file; "
            "eqxrl downloads nothing.")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch-style state dict (name -> array) from `.safetensors`, `.npz` or `.pth/.pt/.bin`."""
    path = Path(path)
    _require_file(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise ImportError(
                f"Reading {path} needs the safetensors package: pip install -e '.[pretrained]'."
            ) from e
        try:
            return dict(load_file(str(path)))
        except Exception as e:  # safetensors' own errors are not ValueErrors
            raise ConfigError(f"Pretrained weights: {path} is not a readable .safetensors file "
                              f"({type(e).__name__}: {e}).") from None
    if suffix == ".npz":
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise ConfigError(f"Pretrained weights: {path} is not a readable .npz file "
                              f"({e}).") from None
    if suffix in (".pth", ".pt", ".bin"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"{path} is a PyTorch pickle, which only torch can read: install torch, or "
                "convert it once where torch is installed with safetensors.torch.save_file("
                "torch.load(path), 'weights.safetensors') and load that."
            ) from e
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:  # training checkpoints
            state = state["state_dict"]
        return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
    raise ValueError(
        f"Pretrained weights: {path} has suffix {path.suffix!r}; expected one of "
        f"{', '.join(TORCH_SUFFIXES)} (PyTorch state dicts) or .eqx (save_encoder).")


def _strip_prefix(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop a wrapper prefix such as `module.` or `backbone.` in front of `conv1.weight`."""
    for name in weights:
        prefix = name[: -len("conv1.weight")]
        if name.endswith("conv1.weight") and "layer" not in prefix and not prefix.endswith("_"):
            return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    raise ValueError(
        "Pretrained weights: no 'conv1.weight' entry, so this is not a torchvision/timm ResNet "
        f"state dict; its first names are {sorted(weights)[:5]}.")


def _architecture(weights: Mapping[str, np.ndarray]) -> int:
    """The ResNet depth whose block counts and block kind match the state dict's names."""
    blocks = [max((int(m.group(1)) + 1 for k in weights
                   if (m := re.match(rf"layer{stage}\.(\d+)\.", k))), default=0)
              for stage in (1, 2, 3, 4)]
    kind = "bottleneck" if "layer1.0.conv3.weight" in weights else "basic"
    for depth, (block_kind, stages) in V1_STAGES.items():
        if block_kind == kind and tuple(blocks) == stages:
            return depth
    raise ValueError(
        f"Pretrained weights: {kind} blocks per stage {tuple(blocks)} match no ResNet-v1 depth "
        f"({', '.join(f'{d}: {s}' for d, (_, s) in V1_STAGES.items())}).")


def resnet_from_torchvision(
    weights: str | Path | Mapping[str, np.ndarray],
    *,
    norm: str = "frozen_batch",
    pooling: str = "avg",
    image_size: tuple[int, int] | None = None,
    depth: int | None = None,
) -> tuple[ResNetV1, eqx.nn.State]:
    """A `ResNetV1` (depth, width and input channels read from the file) with its state.

    `weights` is a file (see `read_state_dict`) or a state dict. Every convolution and
    BatchNorm entry is used and checked for shape; any name left over other than the
    classifier (`fc.*`) and `num_batches_tracked` is an error, so is any missing one. `depth`,
    when given, must match the file's. `pooling`/`image_size` choose the head as for
    `ResNetV1` (its parameters, if any, are not in the file and start fresh).
    """
    if norm not in ("frozen_batch", "batch"):
        raise ValueError(
            f"resnet_from_torchvision: norm={norm!r}, but the file holds BatchNorm statistics; "
            "use norm='frozen_batch' (stateless, fixed statistics) or 'batch' (running "
            "statistics in the returned state).")
    if not isinstance(weights, Mapping):
        weights = read_state_dict(weights)
    weights = _strip_prefix(weights)
    file_depth = _architecture(weights)
    if depth is not None and depth != file_depth:
        raise ValueError(
            f"The weights are a ResNet-{file_depth}, but a ResNet-{depth} was asked for; use "
            f"encoder resnetv1-{file_depth} or the matching file.")
    stem = weights["conv1.weight"]
    resnet, state = eqx.nn.make_with_state(ResNetV1)(
        stem.shape[1], depth=file_depth, norm=norm, width=stem.shape[0], pooling=pooling,
        image_size=image_size, key=jax.random.key(0))

    # (path in the module, torchvision prefix) for every conv and norm, in module order.
    pairs = [(lambda r: r.stem_conv, "conv1"), (lambda r: r.stem_norm, "bn1")]
    block_names = [f"layer{s + 1}.{j}" for s, n in enumerate(V1_STAGES[file_depth][1])
                   for j in range(n)]
    for i, name in enumerate(block_names):
        block = resnet.blocks[i]
        for part in ("1", "2", "3"):
            if hasattr(block, f"conv{part}"):
                pairs.append((lambda r, i=i, p=part: getattr(r.blocks[i], f"conv{p}"),
                              f"{name}.conv{part}"))
                pairs.append((lambda r, i=i, p=part: getattr(r.blocks[i], f"norm{p}"),
                              f"{name}.bn{part}"))
        if block.proj_conv is not None:
            pairs.append((lambda r, i=i: r.blocks[i].proj_conv, f"{name}.downsample.0"))
            pairs.append((lambda r, i=i: r.blocks[i].proj_norm, f"{name}.downsample.1"))

    used: set[str] = set()

    def take(name: str, like) -> jax.Array:
        if name not in weights:
            raise ValueError(f"Pretrained weights: {name!r} is missing from the file.")
        value = np.asarray(weights[name], np.float32)
        if value.shape != like.shape:
            raise ValueError(
                f"Pretrained weights: {name!r} has shape {value.shape}; this ResNet-"
                f"{file_depth} expects {like.shape}.")
        used.add(name)
        return jnp.asarray(value)

    for where, prefix in pairs:
        module = where(resnet)
        if isinstance(module, eqx.nn.Conv2d):
            resnet = eqx.tree_at(lambda r, where=where: where(r).weight, resnet,
                                 take(f"{prefix}.weight", module.weight))
            continue
        channels = (module.scale if isinstance(module, FrozenBatchNorm) else module.weight).shape
        like = jax.ShapeDtypeStruct(channels, jnp.float32)
        weight, bias, mean, var = (take(f"{prefix}.{n}", like)
                                   for n in ("weight", "bias", "running_mean", "running_var"))
        if isinstance(module, BatchNorm):
            resnet = eqx.tree_at(lambda r, w=where: (w(r).weight, w(r).bias), resnet,
                                 (weight, bias))
            state = state.set(module.stats, (mean, var))
        else:
            resnet = eqx.tree_at(where, resnet,
                                 FrozenBatchNorm.from_statistics(weight, bias, mean, var))
    left = sorted(k for k in weights if k not in used and not k.startswith("fc.")
                  and not k.endswith("num_batches_tracked"))
    if left:
        raise ValueError(
            f"Pretrained weights: {len(left)} entries fit no layer of a ResNet-{file_depth}, "
            f"e.g. {left[:4]}; is this a torchvision/timm ResNet state dict?")
    return resnet, state


def save_encoder(path: str | Path, encoder: eqx.Module, state: eqx.nn.State | None = None) -> None:
    """Write an encoder's arrays (and its BatchNorm state, if any) for `load_encoder`."""
    path = Path(path)
    if path.suffix != ".eqx":
        raise ValueError(f"save_encoder writes eqxrl's .eqx format; got path {path}.")
    tmp = path.with_name(path.name + ".tmp")
    eqx.tree_serialise_leaves(tmp, (encoder, state))
    tmp.replace(path)  # never a half-written file under the final name


def load_encoder(
    name: str, path: str | Path, *, key: jax.Array | None = None, **kwargs
) -> tuple[eqx.Module, eqx.nn.State]:
    """Encoder `name` of `ENCODERS` with the weights of the file at `path`.

    `.eqx` files (`save_encoder`) fit any encoder built with the same `kwargs` (e.g.
    `in_channels`); torchvision/timm state dicts (`TORCH_SUFFIXES`) fit `resnetv1-*`, with
    `kwargs` `norm` (default `"frozen_batch"`), `pooling` and `image_size`.
    """
    path = Path(path)
    if name not in ENCODERS:
        raise ValueError(f"Unknown encoder {name!r}. Valid names: {', '.join(sorted(ENCODERS))}.")
    if path.suffix == ".eqx":
        _require_file(path)
        like = make_encoder(name, key=jax.random.key(0) if key is None else key, **kwargs)
        try:
            return eqx.tree_deserialise_leaves(path, like)
        except (RuntimeError, ValueError, TypeError) as e:
            raise ValueError(
                f"{path} does not fit encoder {name!r} built with {kwargs or 'its defaults'}: "
                f"{e} Build it as the file was saved (same name, in_channels and options)."
            ) from e
    _require_file(path)
    if path.suffix.lower() not in TORCH_SUFFIXES:
        raise ConfigError(
            f"Pretrained weights (--encoder-weights): {path} has suffix {path.suffix!r}; "
            f"expected .eqx (eqxrl.vision.save_encoder) or a torchvision/timm state dict "
            f"({', '.join(TORCH_SUFFIXES)}).")
    if not name.startswith("resnetv1-"):
        raise ValueError(
            f"{path} is a PyTorch state dict, which eqxrl converts for torchvision/timm "
            f"ResNets (encoders resnetv1-*), not for {name!r}; save other encoders with "
            "eqxrl.vision.save_encoder and load the .eqx file.")
    unknown = set(kwargs) - {"norm", "pooling", "image_size", "in_channels"}
    if unknown:
        raise ValueError(f"load_encoder: {sorted(unknown)} cannot be set for torchvision weights "
                         "(depth, width and layers come from the file).")
    resnet, state = resnet_from_torchvision(
        path, norm=kwargs.get("norm", "frozen_batch"), pooling=kwargs.get("pooling", "avg"),
        image_size=kwargs.get("image_size"), depth=int(name.split("-")[1]))
    channels = kwargs.get("in_channels")
    if channels is not None and channels != resnet.in_channels:
        raise ValueError(
            f"The weights in {path} take {resnet.in_channels}-channel images, but the "
            f"observation images have {channels} channels (stacked frames count frames × "
            "channels); pretrained RGB weights need single RGB frames.")
    return resnet, state

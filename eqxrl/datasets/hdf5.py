"""D4RL-style HDF5 files: read (optionally leaving image observations on disk) and write."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import h5py
import jax
import numpy as np

from eqxrl.core.types import Transition
from eqxrl.data.dataset import Dataset
from eqxrl.data.image_rows import ImageRows, is_image_node
from eqxrl.datasets.d4rl import (
    REQUIRED_KEYS,
    check_keys,
    d4rl_reference,
    from_d4rl_dict,
    named_leaves,
    to_d4rl_dict,
)
from eqxrl.datasets.episodes import episode_cuts, episode_ends
from eqxrl.datasets.info import DatasetError, DatasetInfo


def _on_disk(f: h5py.File, key: str) -> Any:
    """The node as a tree of h5py datasets (nothing read yet)."""
    node = f[key]
    return {k: _on_disk(f, f"{key}/{k}") for k in node} if isinstance(node, h5py.Group) else node


def _read_h5(node: Any, key: str = "", images: dict[str, tuple] | None = None) -> Any:
    """Read a node (a group as a dict of its arrays). With `images` (a dict), uint8 image
    arrays stay on disk: `(N, 1)` int32 row pointers stand in for them, and `images` records
    each one's row shape by HDF5 key."""
    if isinstance(node, h5py.Group):
        return {k: _read_h5(node[k], f"{key}/{k}", images) for k in node}
    if images is not None and is_image_node(node):
        images[key] = node.shape[1:]
        return np.arange(node.shape[0], dtype=np.int32)[:, None]
    return node[()]


def _attr(attrs: Any, name: str, kind: type) -> Any:
    if name not in attrs:
        return None
    value = attrs[name]
    value = value.decode() if isinstance(value, bytes) else value
    return kind(value.item() if isinstance(value, np.generic) else value)


def image_sources(data: Transition, arrays: dict[str, Any], shapes: dict[str, tuple]
                  ) -> tuple[dict[str, str], dict[str, tuple]]:
    """Map the dataset's pointer leaves (by keystr) to the HDF5 keys they index, and give
    each its row shape; `shapes` holds the row shape of each image key (`_read_h5`)."""
    by_leaf, leaf_shapes = {}, {}
    for field, key in (("obs", "observations"), ("next_obs", "next_observations")):
        # Without stored next observations, next_obs points into the observations.
        stored = key if key in arrays else "observations"
        names = [name for name, _ in named_leaves(arrays[stored], stored)]
        leaves = jax.tree_util.tree_leaves_with_path(getattr(data, field))
        for name, (path_, _) in zip(names, leaves, strict=True):
            if name in shapes:
                leaf = f".{field}{jax.tree_util.keystr(path_)}"
                by_leaf[leaf], leaf_shapes[leaf] = name, shapes[name]
    return by_leaf, leaf_shapes


def load_hdf5(path: str | os.PathLike, lazy_images: bool = False
              ) -> tuple[Dataset, DatasetInfo]:
    """Read a D4RL-style HDF5 file; return the dataset and its info.

    `infos/...` and `metadata/...` groups and other unknown keys are ignored. Reference scores
    come from the file's attributes, else from D4RL's table when the file name is a D4RL one.
    `lazy_images=True` leaves uint8 image observations in the file (`eqxrl.data.image_rows`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No HDF5 dataset file at {path!r}.")
    images, cuts = ({} if lazy_images else None), None
    try:
        with h5py.File(path, "r") as f:
            check_keys(list(f), repr(path))
            wanted = (*REQUIRED_KEYS, "timeouts", "next_observations")
            arrays = {k: _read_h5(f[k], k, images) for k in wanted if k in f}
            if lazy_images:
                if not images:
                    raise DatasetError(
                        f"{path!r} has no image observations (uint8, N x height x width x "
                        "channels) to leave on disk; load it without lazy_images "
                        "(--lazy-images).")
                if "next_observations" in arrays:  # compare the images chunk by chunk
                    cuts = episode_cuts(_on_disk(f, "observations"),
                                        _on_disk(f, "next_observations"))
            attrs = dict(f.attrs)
    except OSError as err:
        raise DatasetError(f"{path!r} is not a readable HDF5 file: {err}") from err
    try:
        dataset = from_d4rl_dict(arrays, where=repr(path), cuts=cuts)
        if lazy_images:
            dataset = dataclasses.replace(
                dataset, images=ImageRows(path, *image_sources(dataset.data, arrays, images)))
    except DatasetError as err:  # name the file in every message
        message = str(err)
        message = message if message.startswith(repr(path)) else f"{path!r}: {message}"
        raise DatasetError(message) from None
    low, high = _attr(attrs, "ref_min_score", float), _attr(attrs, "ref_max_score", float)
    if low is None and high is None and (table := d4rl_reference(path)) is not None:
        low, high = table
    info = DatasetInfo(
        env_id=_attr(attrs, "env_id", str),
        ref_min_score=low,
        ref_max_score=high,
        num_episodes=int(np.sum(np.asarray(episode_ends(dataset)))),
        source=_attr(attrs, "source", str) or "",
        description=_attr(attrs, "description", str) or "",
    )
    return dataset, info


def _write_h5(group: h5py.Group, key: str, value: Any) -> None:
    if isinstance(value, dict):
        sub = group.create_group(key)
        for k, v in value.items():
            _write_h5(sub, k, v)
    elif is_image_node(value):  # rows of images (what lazy loading reads): gzip each row
        group.create_dataset(key, data=value, chunks=(1, *value.shape[1:]),
                             compression="gzip", compression_opts=1)
    else:
        group.create_dataset(key, data=value)


def save_hdf5(path: str | os.PathLike, dataset: Dataset, info: DatasetInfo) -> None:
    """Write `dataset` as a D4RL-style HDF5 file (with `next_observations`), atomically.

    `terminated` is written as `terminals` and `truncated` as `timeouts`; `info` goes into the
    file's attributes. Image rows (uint8, `(N, height, width, channels)`) are stored one row
    per chunk, gzip level 1: rendered frames shrink to a few percent (1.8% for pixel
    CartPole), any HDF5 reader decompresses them, and lazily loaded rows are read one by one.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        for key, value in to_d4rl_dict(dataset).items():
            _write_h5(f, key, value)
        for field in dataclasses.fields(info):
            value = getattr(info, field.name)
            if value is not None:
                f.attrs[field.name] = value
        f.attrs["num_episodes"] = int(np.sum(np.asarray(episode_ends(dataset))))
        f.attrs["format"] = "eqxrl-d4rl-1"
    os.replace(tmp, path)

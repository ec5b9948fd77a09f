"""Minari datasets: read a local one (by folder or id, never downloading); `minari_save`
writes one.

Minari is an optional extra (`pip install minari`), imported only when used. Episodes become
D4RL-style arrays (`eqxrl.datasets.d4rl`), so both formats give the same `Dataset`."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import h5py
import jax
import numpy as np

from eqxrl.data.dataset import Dataset
from eqxrl.data.image_rows import EpisodeImageRows, is_image_node
from eqxrl.datasets.d4rl import from_d4rl_dict, named_leaves
from eqxrl.datasets.hdf5 import image_sources
from eqxrl.datasets.info import DatasetError, DatasetInfo


def import_minari() -> Any:
    """The minari module, or an ImportError that says how to install it."""
    try:
        import minari
    except ImportError:
        raise ImportError(
            "Minari datasets need the optional extra: pip install 'eqxrl[minari]' (or pip "
            "install minari). D4RL-style .hdf5 files work without it."
        ) from None
    return minari


def _minari_data_dir(path: pathlib.Path) -> pathlib.Path | None:
    for candidate in (path / "data", path):
        if (candidate / "metadata.json").is_file():
            return candidate
    return None


def _damaged(folder: pathlib.Path, err: BaseException) -> DatasetError:
    """The error for a Minari folder that minari or h5py cannot read."""
    said = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return DatasetError(
        f"{str(folder)!r}: the Minari dataset cannot be read ({type(err).__name__}: {said}). "
        "The folder needs metadata.json (valid JSON) and its data file (main_data.hdf5), "
        "complete; write it again (eqxrl.datasets.save_minari, eqxrl-collect) or copy it anew.")


def load_minari(path_or_id: str | os.PathLike, lazy_images: bool = False
                ) -> tuple[Dataset, DatasetInfo]:
    """Read a local Minari dataset, given its folder or its id (never downloads).

    `lazy_images=True` leaves image observations (raw or JPEG-encoded) in the dataset's HDF5
    file, Minari's `hdf5` data format (`eqxrl.data.image_rows`)."""
    minari = import_minari()
    where = str(path_or_id)
    path = pathlib.Path(path_or_id)
    if path.is_dir():
        data_dir = _minari_data_dir(path)
        if data_dir is None:
            raise DatasetError(
                f"{str(path)!r} is not a Minari dataset folder: no metadata.json in it or in "
                "its data/ folder."
            )
        try:
            source = minari.MinariDataset(data_dir.absolute())
        except Exception as err:  # minari's own: ValueError, JSONDecodeError, OSError, KeyError
            raise _damaged(data_dir, err) from None
    else:
        try:
            source = minari.load_dataset(where, download=False)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{where!r} is neither a folder nor a local Minari dataset id ({err})."
            ) from None
    try:
        if lazy_images:
            episodes, images = _episodes_from_file(source, where)
        else:
            episodes, images = _episodes(source, where), None
    except DatasetError:
        raise
    except Exception as err:  # a truncated or foreign data file, read through h5py
        raise _damaged(path if path.is_dir() else pathlib.Path(where), err) from None
    if not episodes:
        raise DatasetError(f"{where!r}: the Minari dataset has no steps.")
    try:
        arrays = jax.tree.map(lambda *xs: np.concatenate(xs), *episodes)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where!r}: episodes differ in layout ({err}).") from err
    dataset = from_d4rl_dict(arrays, where=repr(where))
    if images is not None:
        dataset = dataclasses.replace(dataset, images=images(dataset.data, arrays))
    meta = source.storage.metadata
    env_spec = source.env_spec
    as_float = lambda v: None if v is None else float(v)
    info = DatasetInfo(
        env_id=str(env_spec.id) if env_spec is not None else meta.get("eqxrl_env_id"),
        ref_min_score=as_float(meta.get("ref_min_score")),
        ref_max_score=as_float(meta.get("ref_max_score")),
        num_episodes=len(episodes),
        source=str(meta.get("eqxrl_source", meta.get("algorithm_name", ""))),
        description=str(meta.get("description", "")),
    )
    return dataset, info


def _episode_arrays(obs: Any, actions: Any, rewards: Any, terminations: Any,
                    truncations: Any, label: str) -> dict[str, Any] | None:
    """One Minari episode as D4RL-style arrays, or None if it has no steps."""
    steps = len(rewards)
    if steps == 0:
        return None
    for name, x in named_leaves(obs, f"{label} observations"):
        if x.ndim == 0 or x.shape[0] != steps + 1:
            raise DatasetError(
                f"{name!r} has shape {x.shape}, expected {steps + 1} rows (one more than "
                f"its {steps} rewards: Minari stores the final observation too)."
            )
    timeouts = np.asarray(truncations, bool).copy()
    # The episode ends here even if it was recorded unfinished: a cut, not a termination.
    timeouts[-1] |= not bool(terminations[-1])
    # Minari stores the final observation, so next_obs is exact and no row is dropped.
    return {
        "observations": jax.tree.map(lambda x: x[:-1], obs),
        "next_observations": jax.tree.map(lambda x: x[1:], obs),
        "actions": np.asarray(actions),
        "rewards": np.asarray(rewards),
        "terminals": np.asarray(terminations),
        "timeouts": timeouts,
    }


def _episodes(source: Any, where: str) -> list[dict[str, Any]]:
    """Every episode read into memory by Minari (any of its data formats)."""
    episodes = []
    for episode in source.iterate_episodes():
        if isinstance(episode.observations, tuple):
            raise DatasetError(f"{where!r}: Tuple observation spaces are not supported.")
        arrays = _episode_arrays(jax.tree.map(np.asarray, episode.observations),
                                 episode.actions, episode.rewards, episode.terminations,
                                 episode.truncations, f"episode {episode.id}")
        if arrays is not None:
            episodes.append(arrays)
    return episodes


def _episodes_from_file(source: Any, where: str) -> tuple[list[dict[str, Any]], Any]:
    """Every episode read from Minari's HDF5 file except its images, which `(N, 1)` row
    pointers stand in for; also a function `(data, arrays) -> EpisodeImageRows` that reads
    them for the dataset built from these episodes."""
    storage = source.storage
    file = pathlib.Path(storage.data_path) / "main_data.hdf5"
    data_format = storage.metadata.get("data_format", "hdf5")
    if data_format != "hdf5" or not file.is_file():
        raise DatasetError(
            f"{where!r}: lazy_images (--lazy-images) reads images from Minari's HDF5 files, but "
            f"this dataset uses its {data_format!r} data format. Load it into memory (drop "
            f"--lazy-images) or convert it once with python -m eqxrl.tools.collect concat --inputs "
            f"{where} --output data.hdf5 and load that lazily.")
    jpeg = bool(getattr(storage, "jpeg_encoding", False))
    shapes: dict[str, tuple[int, ...]] = {}
    encoded: set[str] = set()
    start = 0

    def read(node: Any, key: str, space: Any) -> Any:
        if isinstance(node, h5py.Group):
            if not hasattr(space, "spaces") or isinstance(space.spaces, tuple):
                raise DatasetError(f"{where!r}: Tuple observation spaces are not supported.")
            return {k: read(node[k], f"{key}/{k}", space.spaces[k]) for k in node}
        if jpeg and _is_image_space(space):
            if len(space.shape) != 3:
                raise DatasetError(
                    f"{where!r}: {key!r} holds images of shape {space.shape}; lazy_images "
                    "(--lazy-images) leaves (height, width, channels) images on disk. Load the "
                    "dataset without --lazy-images.")
            shapes[key] = tuple(space.shape)
            encoded.add(key)
        elif is_image_node(node):
            shapes[key] = node.shape[1:]
        else:
            return node[()]
        return np.arange(start, start + node.shape[0], dtype=np.int32)[:, None]

    episodes, groups, starts = [], [], []
    with h5py.File(file, "r") as f:
        for i in source.episode_indices:
            group = f[f"episode_{i}"]
            obs = read(group["observations"], "observations", storage.observation_space)
            arrays = _episode_arrays(obs, group["actions"][()], group["rewards"][()],
                                     group["terminations"][()], group["truncations"][()],
                                     f"episode {i}")
            if arrays is not None:
                episodes.append(arrays)
                groups.append(group.name.lstrip("/"))
                starts.append(start)
                start += len(arrays["rewards"]) + 1
    if episodes and not shapes:
        raise DatasetError(
            f"{where!r} has no image observations (uint8, height x width x channels) to leave "
            "on disk; load it without lazy_images (--lazy-images).")

    def images(data: Any, arrays: dict[str, Any]) -> EpisodeImageRows:
        # next_obs points into the same observation rows as obs, one row later.
        sources, leaf_shapes = image_sources(data, {"observations": arrays["observations"]},
                                             shapes)
        return EpisodeImageRows(str(file), sources, leaf_shapes, groups, np.asarray(starts),
                                frozenset(encoded))
    return episodes, images


def _is_image_space(space: Any) -> bool:
    """Whether Minari JPEG-encodes observations of `space` (when its jpeg_encoding is on)."""
    from minari.dataset.minari_storage import is_image_space

    return bool(is_image_space(space))

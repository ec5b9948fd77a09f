"""Minari datasets: read a local one (by folder or id, never downloading) and write one.

Minari is an optional extra (`pip install minari`); it is imported only when used. Episodes
become D4RL-style arrays (`eqxrl.d4rl`), so both formats give the same `Dataset`.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import re
from typing import Any

import jax
import numpy as np

from .d4rl import from_d4rl_dict, named_leaves, to_d4rl_dict
from .data import Dataset
from .dataset_info import DatasetError, DatasetInfo
from .episodes import with_episode_cuts


def _import_minari() -> Any:
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


def load_minari(path_or_id: str | os.PathLike) -> tuple[Dataset, DatasetInfo]:
    """Read a local Minari dataset, given its folder or its id (never downloads)."""
    minari = _import_minari()
    path = pathlib.Path(path_or_id)
    if path.is_dir():
        data_dir = _minari_data_dir(path)
        if data_dir is None:
            raise DatasetError(
                f"{str(path)!r} is not a Minari dataset folder: no metadata.json in it or in "
                "its data/ folder."
            )
        source = minari.MinariDataset(data_dir.absolute())
    else:
        try:
            source = minari.load_dataset(str(path_or_id), download=False)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{str(path_or_id)!r} is neither a folder nor a local Minari dataset id ({err})."
            ) from None
    episodes = []
    for episode in source.iterate_episodes():
        if isinstance(episode.observations, tuple):
            raise DatasetError(f"{str(path_or_id)!r}: Tuple observation spaces are not supported.")
        steps = len(episode.rewards)
        if steps == 0:
            continue
        obs = jax.tree.map(np.asarray, episode.observations)
        for name, x in named_leaves(obs, f"episode {episode.id} observations"):
            if x.ndim == 0 or x.shape[0] != steps + 1:
                raise DatasetError(
                    f"{name!r} has shape {x.shape}, expected {steps + 1} rows (one more than "
                    f"its {steps} rewards: Minari stores the final observation too)."
                )
        timeouts = np.asarray(episode.truncations, bool).copy()
        # The episode ends here even if it was recorded unfinished: a cut, not a termination.
        timeouts[-1] |= not bool(episode.terminations[-1])
        # Minari stores the final observation, so next_obs is exact and no row is dropped.
        episodes.append(
            {
                "observations": jax.tree.map(lambda x: x[:-1], obs),
                "next_observations": jax.tree.map(lambda x: x[1:], obs),
                "actions": np.asarray(episode.actions),
                "rewards": np.asarray(episode.rewards),
                "terminals": np.asarray(episode.terminations),
                "timeouts": timeouts,
            }
        )
    if not episodes:
        raise DatasetError(f"{str(path_or_id)!r}: the Minari dataset has no steps.")
    try:
        arrays = jax.tree.map(lambda *xs: np.concatenate(xs), *episodes)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{str(path_or_id)!r}: episodes differ in layout ({err}).") from err
    dataset = from_d4rl_dict(arrays, where=repr(str(path_or_id)))
    meta = source.storage.metadata
    env_spec = source.env_spec
    as_float = lambda v: None if v is None else float(v)
    info = DatasetInfo(
        env_id=None if env_spec is None else str(env_spec.id),
        ref_min_score=as_float(meta.get("ref_min_score")),
        ref_max_score=as_float(meta.get("ref_max_score")),
        num_episodes=len(episodes),
        source=str(meta.get("eqxrl_source", meta.get("algorithm_name", ""))),
        description=str(meta.get("description", "")),
    )
    return dataset, info


def _space(x: np.ndarray, bounded: bool = False) -> Any:
    import gymnasium as gym

    shape, dtype = x.shape[1:], x.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return gym.spaces.Box(info.min, info.max, shape, dtype)
    if bounded and np.all(np.abs(x) <= 1.0):
        return gym.spaces.Box(-1.0, 1.0, shape, dtype)
    return gym.spaces.Box(-np.inf, np.inf, shape, dtype)


def save_minari(
    path: str | os.PathLike,
    dataset: Dataset,
    info: DatasetInfo,
    dataset_id: str | None = None,
) -> None:
    """Write `dataset` as a Minari dataset in the folder `path` (which must not exist).

    Actions are stored as they are in the dataset (eqxrl's [-1, 1] convention of
    `make_env`); `dataset_id` defaults to `eqxrl/<folder name>-v0`.
    """
    import gymnasium as gym

    minari = _import_minari()
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    path = pathlib.Path(path).absolute()  # Minari's size bookkeeping breaks on relative paths
    if path.exists():
        raise FileExistsError(f"save_minari: {str(path)!r} already exists; choose a new folder.")
    if dataset_id is None:
        name = re.sub(r"[^A-Za-z0-9_-]", "-", path.name)
        dataset_id = f"eqxrl/{name}" if re.search(r"-v\d+$", name) else f"eqxrl/{name}-v0"
    arrays = to_d4rl_dict(with_episode_cuts(dataset))
    obs_space = jax.tree.map(_space, arrays["observations"])
    obs_space = gym.spaces.Dict(obs_space) if isinstance(obs_space, dict) else obs_space
    action = arrays["actions"]
    if action.ndim == 1:
        action_space = gym.spaces.Discrete(int(action.max()) + 1)
    else:
        action_space = _space(action, bounded=True)
    env_spec = None
    if info.env_id is not None and info.env_id in gym.registry:
        env_spec = gym.spec(info.env_id)
    path.mkdir(parents=True)
    kwargs: dict[str, Any] = {"data_format": "hdf5"}
    if "jpeg_encoding" in inspect.signature(MinariStorage.new).parameters:
        kwargs["jpeg_encoding"] = False  # lossless, so a round trip is exact
    storage = MinariStorage.new(
        path / "data",
        observation_space=obs_space,
        action_space=action_space,
        env_spec=env_spec,
        **kwargs,
    )
    metadata: dict[str, Any] = {
        "dataset_id": dataset_id,
        "minari_version": minari.__version__,
        "eqxrl_source": info.source,
        "description": info.description,
    }
    for name in ("ref_min_score", "ref_max_score"):
        if getattr(info, name) is not None:
            metadata[name] = getattr(info, name)
    storage.update_metadata(metadata)
    ends = arrays["terminals"] | arrays["timeouts"]
    ends[-1] = True
    ends = np.flatnonzero(ends)
    buffers, start = [], 0
    for end in ends:
        rows = slice(start, end + 1)
        obs = jax.tree.map(
            lambda o, no, r=rows, e=end: np.concatenate([o[r], no[e : e + 1]]),
            arrays["observations"],
            arrays["next_observations"],
        )
        buffers.append(
            EpisodeBuffer(
                observations=obs,
                actions=action[rows],
                rewards=arrays["rewards"][rows],
                terminations=arrays["terminals"][rows],
                truncations=arrays["timeouts"][rows],
            )
        )
        start = end + 1
    storage.update_episodes(buffers)

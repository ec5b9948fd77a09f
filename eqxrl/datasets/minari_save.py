"""Write a `Dataset` as a local Minari dataset (read back by `eqxrl.datasets.minari`)."""

from __future__ import annotations

import inspect
import os
import pathlib
import re
from typing import Any

import jax
import numpy as np

from eqxrl.data.dataset import Dataset
from eqxrl.datasets.d4rl import to_d4rl_dict
from eqxrl.datasets.episodes import with_episode_cuts
from eqxrl.datasets.info import DatasetInfo
from eqxrl.datasets.minari import import_minari


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

    minari = import_minari()
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
        try:
            env_spec.to_json()
        except ValueError:  # registered with a callable entry point: Minari cannot store it
            env_spec = None  # the id still goes in the metadata (eqxrl_env_id)
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
        "eqxrl_env_id": info.env_id,
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

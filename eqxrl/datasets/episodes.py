"""Episodes of a dataset (where they end, their returns, joining datasets) and preprocessing.

A row ends its episode when `terminated | truncated`; the last row of a dataset always ends one.
The preprocessing presets are those of IQL; `check_unit_actions` and `rescale_actions` bring a
dataset's actions to eqxrl's [-1, 1] convention (that of `make_env`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from eqxrl.core.types import SarsaTransition
from eqxrl.data.dataset import Dataset, Normalizer
from eqxrl.datasets.info import DatasetError

PRESETS = ("none", "locomotion", "antmaze")


def _with(dataset: Dataset, **fields: Any) -> Dataset:
    """The dataset with some `Transition` fields replaced (its other attributes kept)."""
    return dataclasses.replace(dataset, data=dataclasses.replace(dataset.data, **fields))


def _rows(x: Any) -> Any:
    """Row-sliceable data: arrays as they are, HDF5 datasets left on disk (read by chunk)."""
    return x if hasattr(x, "id") and hasattr(x, "chunks") else np.asarray(x)


def episode_cuts(obs: Any, next_obs: Any, chunk: int = 4096) -> np.ndarray:
    """(n,) bool: rows whose next_obs is not the following row's obs (the last row: True).

    Leaves may be h5py datasets: they are read `chunk` rows at a time."""
    leaves = [_rows(x) for x in jax.tree.leaves(obs)]
    next_leaves = [_rows(x) for x in jax.tree.leaves(next_obs)]
    n = leaves[0].shape[0]
    gap = np.zeros(max(n - 1, 0))
    for x, y in zip(leaves, next_leaves, strict=True):
        for start in range(0, n - 1, chunk):  # in chunks: image datasets are large
            stop = min(start + chunk, n - 1)
            a = y[start:stop].reshape(stop - start, -1).astype(np.float64)
            b = x[start + 1 : stop + 1].reshape(stop - start, -1).astype(np.float64)
            gap[start:stop] += np.sum((a - b) ** 2, axis=1)
    # jaxrl_m's tolerance: an L2 distance above 1e-6 starts a new episode.
    return np.append(np.sqrt(gap) > 1e-6, True)


def with_episode_cuts(dataset: Dataset) -> Dataset:
    """Mark as truncated every non-terminal row that ends an episode without a flag.

    That is a row whose `next_obs` is not the following row's `obs`, and the last row. Use it
    on data gathered elsewhere (a replay buffer, a concatenation) before `episode_ends`.
    """
    if dataset.images is not None:
        raise DatasetError(
            "with_episode_cuts compares observations, but this dataset's images are still in "
            f"{dataset.images.path}; load it without lazy_images (its loader already cut the "
            "episodes).")
    data = dataset.data
    cut = episode_cuts(data.obs, data.next_obs) & ~np.asarray(data.terminated)
    truncated = np.asarray(data.truncated) | cut
    return _with(dataset, truncated=jnp.asarray(truncated))


def episode_ends(dataset: Dataset) -> Bool[Array, " n"]:
    """(n,) bool: True on the last row of each episode (terminated, truncated, or last row).

    Only the flags count. The loaders and `eqxrl.tools.collect` flag every end; for data from
    elsewhere (such as `ReplayBuffer.to_dataset()`) call `with_episode_cuts` first.
    """
    ends = np.asarray(dataset.data.terminated) | np.asarray(dataset.data.truncated)
    ends[-1] = True
    return jnp.asarray(ends)


def with_next_actions(dataset: Dataset) -> Dataset:
    """The dataset with each row's next action a′: its rows become `SarsaTransition`s.

    a′ is the following row's action when that row continues the episode. A row that ends its
    episode (flagged terminated or truncated, the last row, or a `next_obs` that is not the
    following row's `obs`) has no a′ in the data: `has_next_action` is False there. A dataset
    that already has next actions is returned as it is.

    Raises:
        DatasetError: for a dataset whose images are still in their file (lazy_images).
    """
    data = dataset.data
    if isinstance(data, SarsaTransition):
        return dataset
    if dataset.images is not None:
        raise DatasetError(
            "with_next_actions compares observations, but this dataset's images are still in "
            f"{dataset.images.path}; load it without lazy_images.")
    ends = np.asarray(episode_ends(dataset)) | episode_cuts(data.obs, data.next_obs)
    action = np.asarray(data.action)
    following = np.concatenate([action[1:], action[-1:]])
    ends_rows = ends.reshape((-1,) + (1,) * (action.ndim - 1))
    next_action = np.where(ends_rows, action, following)
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    return dataclasses.replace(dataset, data=SarsaTransition(
        **fields, next_action=jnp.asarray(next_action), has_next_action=jnp.asarray(~ends)))


def episode_returns(dataset: Dataset) -> Float[Array, " episodes"]:
    """Undiscounted return of each episode, in order (a cut episode's partial return)."""
    ends = np.asarray(episode_ends(dataset))
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    rewards = np.asarray(dataset.data.reward, np.float64)
    return jnp.asarray(np.add.reduceat(rewards, starts), jnp.float32)


def concatenate(datasets: Sequence[Dataset]) -> Dataset:
    """Join datasets (for example medium + expert); episodes never run across a join."""
    if not datasets:
        raise ValueError("concatenate needs at least one dataset, got none.")
    lazy = [i for i, d in enumerate(datasets) if d.images is not None]
    if lazy:
        raise DatasetError(
            f"concatenate: dataset {lazy[0]} keeps its images in its file (lazy_images); join "
            "the files first (python -m eqxrl.tools.collect concat), then load the result.")
    structure = jax.tree.structure(datasets[0].data)
    parts = []
    for i, part in enumerate(datasets):
        if jax.tree.structure(part.data) != structure:
            raise DatasetError(
                f"concatenate: dataset {i} has structure {jax.tree.structure(part.data)}, but "
                f"dataset 0 has {structure}."
            )
        data = part.data
        last = np.zeros(part.size, bool)
        last[-1] = not bool(data.terminated[-1])
        parts.append(dataclasses.replace(data, truncated=data.truncated | jnp.asarray(last)))
    try:
        joined = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    except (TypeError, ValueError) as err:
        shapes = [jax.tree.map(jnp.shape, p) for p in parts]
        raise DatasetError(f"concatenate: the datasets' row shapes differ: {shapes}.") from err
    return Dataset(joined)


def clip_actions(dataset: Dataset, limit: float = 1.0 - 1e-5) -> Dataset:
    """Clip continuous actions to ±`limit` (IQL's ±(1 − 1e-5): atanh stays finite)."""
    data = dataset.data
    if not jnp.issubdtype(data.action.dtype, jnp.floating):
        return dataset
    return _with(dataset, action=jnp.clip(data.action, -limit, limit))


def return_range_scale(dataset: Dataset, target: float = 1000.0) -> float:
    """`target / (max episode return − min episode return)`: IQL's reward scale for locomotion."""
    returns = np.asarray(episode_returns(dataset), np.float64)
    spread = float(returns.max() - returns.min())
    if not spread > 0:
        raise DatasetError(
            f"Reward scaling by the return range needs episodes with different returns, but the "
            f"{returns.size} episode(s) all return {returns.max()} (max − min = {spread})."
        )
    return target / spread


def scale_rewards_by_return_range(dataset: Dataset, target: float = 1000.0) -> Dataset:
    """Multiply rewards by `target / (max episode return − min episode return)` (IQL)."""
    scale = return_range_scale(dataset, target)
    return _with(dataset, reward=(dataset.data.reward * jnp.float32(scale)).astype(jnp.float32))


def preset_rewards(dataset: Dataset, preset: str) -> tuple[float, float]:
    """`(scale, shift)` such that `preprocess(dataset, preset)` maps each reward r to
    r·scale + shift: what rewards collected later (fine-tuning online) need to match it.

    Raises:
        ValueError: for a preset that is not one of `PRESETS`.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not known; choose one of {list(PRESETS)}.")
    if preset == "locomotion":
        return return_range_scale(dataset), 0.0
    return (1.0, -1.0) if preset == "antmaze" else (1.0, 0.0)


def shift_rewards(dataset: Dataset, shift: float = -1.0) -> Dataset:
    """Add `shift` to every reward (IQL's AntMaze recipe: reward − 1)."""
    data = dataset.data
    return _with(dataset, reward=data.reward + jnp.float32(shift))


def preprocess(dataset: Dataset, preset: str) -> Dataset:
    """Apply a named preset.

    'none': unchanged. 'locomotion' (IQL on D4RL MuJoCo): clip actions to ±(1 − 1e-5) and
    scale rewards by 1000 / (max − min episode return). 'antmaze' (IQL on AntMaze): clip
    actions and subtract 1 from every reward.
    """
    scale, shift = preset_rewards(dataset, preset)  # the one definition of each preset
    if preset == "none":
        return dataset
    dataset = clip_actions(dataset)
    reward = dataset.data.reward
    if scale != 1.0:
        reward = (reward * jnp.float32(scale)).astype(jnp.float32)
    if shift:
        reward = reward + jnp.float32(shift)
    return _with(dataset, reward=reward)


def obs_normalizer(dataset: Dataset, eps: float = 1e-3) -> Normalizer:
    """Observation normalisation statistics of the dataset (`Normalizer.from_data`)."""
    return Normalizer.from_data(dataset.data.obs, eps)


def check_unit_actions(dataset: Dataset, where: str = "dataset") -> None:
    """Raise `DatasetError` unless every continuous action is in [-1, 1] (exactly).

    Discrete (integer) actions are not checked. `where` names the data in the message.
    """
    action = np.asarray(dataset.data.action)
    if not np.issubdtype(action.dtype, np.floating) or action.size == 0:
        return
    low, high = float(action.min()), float(action.max())
    if not (low >= -1.0 and high <= 1.0):  # also catches NaN
        inside = (action >= -1.0) & (action <= 1.0)
        outside = int(np.sum(~inside.reshape(action.shape[0], -1).all(axis=1)))
        raise DatasetError(
            f"{where}: actions range from {low} to {high} ({outside} of {action.shape[0]} rows "
            "outside [-1, 1]), but eqxrl's envs take actions in [-1, 1]. Fix: pass "
            "--rescale-actions to map the env's action bounds [low, high] to [-1, 1], or "
            "rescale the file yourself."
        )


def rescale_actions(
    dataset: Dataset, low: ArrayLike | Sequence[float], high: ArrayLike | Sequence[float]
) -> Dataset:
    """Map continuous actions linearly from the box [`low`, `high`] to [-1, 1].

    `low` and `high` are floats or per-dimension arrays (shape `(action_dim,)`); each action
    `a` becomes `2 (a - low) / (high - low) - 1`.
    """
    data = dataset.data
    action = np.asarray(data.action)
    if not np.issubdtype(action.dtype, np.floating):
        raise DatasetError(
            f"rescale_actions: actions have dtype {action.dtype} (discrete); only continuous "
            "actions can be rescaled."
        )
    shape = action.shape[1:]
    try:
        lo = np.broadcast_to(np.asarray(low, np.float64), shape)
        hi = np.broadcast_to(np.asarray(high, np.float64), shape)
    except ValueError:
        raise ValueError(
            f"rescale_actions: low has shape {np.shape(low)} and high {np.shape(high)}, but "
            f"actions have shape {shape}; pass floats or arrays of shape {shape}."
        ) from None
    low, high = lo, hi
    bad = ~(np.isfinite(low) & np.isfinite(high) & (low < high))
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), shape)
        raise ValueError(
            f"rescale_actions: the bounds must be finite with low < high in every dimension, "
            f"but dimension {tuple(map(int, i))} has low {low[i]} and high {high[i]}."
        )
    wide = action.astype(np.float64)
    outside = (wide < low) | (wide > high)
    if outside.any():
        row, *dim = np.unravel_index(int(np.argmax(outside)), action.shape)
        dim = tuple(map(int, dim))
        raise DatasetError(
            f"rescale_actions: {int(np.sum(outside))} action entries lie outside the bounds "
            f"[low, high], first at row {int(row)}, dimension {dim}: {wide[(row, *dim)]} not in "
            f"[{low[dim]}, {high[dim]}]; check that the bounds are the env's action space."
        )
    # In float64, so that low maps to exactly -1 and high to exactly 1.
    unit = (2.0 * (wide - low) / (high - low) - 1.0).astype(np.float32)
    return _with(dataset, action=jnp.asarray(unit))

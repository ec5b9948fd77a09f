"""Offline datasets: read and write D4RL-style HDF5 files and Minari datasets.

Every reader returns a `Dataset` whose `data` is a batched `Transition` (float32 observations
or a dict of them, float32 actions, float32 rewards, bool `terminated` and `truncated`), plus a
`DatasetInfo` with the env id and the reference returns of the D4RL normalised score.

Episode boundaries. A row ends its episode when `terminated | truncated`; the last row of a
dataset always ends one. `terminals` become `terminated` and `timeouts` become `truncated`, kept
apart. Where `next_observations` is stored, a row whose next observation is not the following
row's observation is also an episode end (jaxrl_m's rule); such a cut is marked `truncated`
(the bootstrap continues), never `terminated`. Where it is not stored, `next_obs[i] = obs[i+1]`,
and rows whose successor is unknown are dropped: timeouts (the following row is the next
episode's reset) and the last row unless it is terminal; the row before a dropped row is then
marked `truncated`, so the shortened episode still ends. Terminal rows are kept (their reward
matters); their `next_obs` is a placeholder (the following row's observation, as D4RL's
`qlearning_dataset` does), which the bootstrap never reads.

Minari is an optional extra (`pip install minari`); it is imported only when used.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .data import Dataset, Normalizer
from .evaluation import normalized_score
from .types import Transition

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
PRESETS = ("none", "locomotion", "antmaze")

# D4RL's reference returns (d4rl/infos.py): random policy and expert policy, per environment.
# Used only for D4RL files that carry no reference attributes of their own.
D4RL_REFERENCE: dict[str, tuple[float, float]] = {
    "antmaze": (0.0, 1.0),
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


class DatasetError(ValueError):
    """A dataset file or array that is missing keys, has wrong shapes, or holds bad values."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: its env, how it was made, and the reference returns of its score."""

    env_id: str | None = None
    """gymnasium id of the env the data comes from (None if unknown)"""
    ref_min_score: float | None = None
    """mean episode return of a uniformly random policy (0 of the normalised score)"""
    ref_max_score: float | None = None
    """mean episode return of the expert policy (100 of the normalised score)"""
    num_episodes: int = 0
    """episodes in the dataset (a cut or unfinished episode counts as one)"""
    source: str = ""
    """how the data was made, for example 'random' or 'checkpoint runs/x step 100000'"""
    description: str = ""
    """free text"""

    def __post_init__(self):
        low, high = self.ref_min_score, self.ref_max_score
        if low is not None and high is not None and low == high:
            raise ValueError(
                f"DatasetInfo: ref_min_score and ref_max_score are both {low}; the normalised "
                "score divides by their difference, so they must differ."
            )

    @property
    def reference(self) -> tuple[float, float] | None:
        """`(ref_min_score, ref_max_score)`, or None when either is unknown."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return (self.ref_min_score, self.ref_max_score)

    def normalized_score(self, returns: ArrayLike | Sequence[float]) -> np.ndarray:
        """D4RL normalised score `100 * (return - ref_min) / (ref_max - ref_min)`."""
        if self.reference is None:
            raise ValueError(
                f"DatasetInfo(env_id={self.env_id!r}) has no reference scores (ref_min_score="
                f"{self.ref_min_score}, ref_max_score={self.ref_max_score}); pass them when "
                "making the dataset (python -m eqxrl.collect ... --ref-max-score X)."
            )
        returns = np.asarray(returns, np.float64)
        # Flattened so the result is an array even for a single return.
        return normalized_score(returns.reshape(-1), self.reference).reshape(returns.shape)


def d4rl_reference(name: str) -> tuple[float, float] | None:
    """D4RL's `(random, expert)` returns for a dataset name such as 'hopper_medium-v2'."""
    stem = pathlib.Path(name).name.lower().replace("_", "-")
    if stem.startswith(("antmaze", "ant-maze")):
        return D4RL_REFERENCE["antmaze"]
    for env, reference in D4RL_REFERENCE.items():
        if stem.startswith(env + "-"):
            return reference
    return None


# ---------------------------------------------------------------------------- episodes
def _cuts(obs: Any, next_obs: Any, chunk: int = 4096) -> np.ndarray:
    """(n,) bool: rows whose next_obs is not the following row's obs (the last row: True)."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(obs)]
    next_leaves = [np.asarray(x) for x in jax.tree.leaves(next_obs)]
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
    data = dataset.data
    cut = _cuts(data.obs, data.next_obs) & ~np.asarray(data.terminated)
    truncated = np.asarray(data.truncated) | cut
    return Dataset(dataclasses.replace(data, truncated=jnp.asarray(truncated)))


def episode_ends(dataset: Dataset) -> Bool[Array, " n"]:
    """(n,) bool: True on the last row of each episode (terminated, truncated, or last row).

    Only the flags count. The loaders and `eqxrl.collect` flag every end; for data from
    elsewhere (such as `ReplayBuffer.to_dataset()`) call `with_episode_cuts` first.
    """
    ends = np.asarray(dataset.data.terminated) | np.asarray(dataset.data.truncated)
    ends[-1] = True
    return jnp.asarray(ends)


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


# ---------------------------------------------------------------------------- D4RL arrays
def _leaves(tree: Any, key: str) -> list[tuple[str, np.ndarray]]:
    """`(name, array)` for each leaf of a (possibly nested dict) entry, named like HDF5 paths."""
    if isinstance(tree, dict):
        if not tree:
            raise DatasetError(f"Key {key!r} is an empty group; expected arrays in it.")
        return [pair for k in sorted(tree) for pair in _leaves(tree[k], f"{key}/{k}")]
    return [(key, np.asarray(tree))]


def _check_rows(key: str, x: np.ndarray, n: int, trailing: tuple[int, ...] | None) -> None:
    """Check that `x` has `n` rows, and exactly `trailing` after them when that is given."""
    if x.ndim == 0 or x.shape[0] != n:
        raise DatasetError(
            f"Key {key!r} has shape {x.shape}, expected {n} rows (the length of "
            f"'observations'); every key needs one row per transition."
        )
    if trailing is not None and x.shape[1:] != trailing:
        want = (n, *trailing)
        hint = " Squeeze the trailing axis of size 1." if x.shape == (*want, 1) else ""
        raise DatasetError(f"Key {key!r} has shape {x.shape}, expected {want}.{hint}")


def _check_finite(key: str, x: np.ndarray) -> None:
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        if bad.any():
            raise DatasetError(
                f"Key {key!r} holds NaN or infinite values in {int(bad.sum())} rows, first at "
                f"row {int(np.argmax(bad))} (value {x[int(np.argmax(bad))]}); clean the data."
            )


def _flags(key: str, x: np.ndarray) -> np.ndarray:
    """0/1 episode flags as bool, with an error naming a value that is neither."""
    if x.dtype == bool:
        return x
    bad = ~np.isin(x, (0, 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetError(
            f"Key {key!r} must hold booleans or 0/1, but row {i} is {x[i]!r} (dtype {x.dtype})."
        )
    return x.astype(bool)


def _observations(tree: Any, key: str, n: int) -> Any:
    """Validated observations: float leaves become float32, integer leaves (images) stay."""
    leaves = _leaves(tree, key)
    for name, x in leaves:
        if x.ndim < 2:
            raise DatasetError(
                f"Key {name!r} has shape {x.shape}, expected (N, ...) with N = {n} rows and at "
                "least one feature axis, for example (N, obs_dim)."
            )
        _check_rows(name, x, n, None)
        _check_finite(name, x)
    convert = lambda x: x.astype(np.float32) if np.issubdtype(x.dtype, np.floating) else x
    return jax.tree.map(lambda x: convert(np.asarray(x)), tree)


def _check_keys(keys: list[str], where: str) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if "timeouts" not in keys and "next_observations" not in keys:
        missing.append("timeouts")
    if missing:
        raise DatasetError(
            f"{where}: missing key {missing[0]!r} (all missing: {missing}); found keys "
            f"{sorted(keys)}. A D4RL-style dataset needs {list(REQUIRED_KEYS)} and "
            "'timeouts' (which may be left out only when 'next_observations' is stored)."
        )


def from_d4rl_dict(arrays: dict[str, Any], where: str = "dataset") -> Dataset:
    """A `Dataset` of Transitions from D4RL-style arrays (as `env.get_dataset()` returns).

    Keys: `observations`, `actions`, `rewards`, `terminals`, `timeouts` (optional only when
    `next_observations` is given) and `next_observations`; observations may be dicts of arrays.
    Episode boundaries are recovered as described in this module's docstring. `where` names
    the source in error messages.
    """
    _check_keys(list(arrays), where)
    first = _leaves(arrays["observations"], "observations")[0][1]
    n = first.shape[0] if first.ndim else 0
    if n == 0:
        raise DatasetError(f"{where}: key 'observations' has shape {first.shape}: no rows.")
    obs = _observations(arrays["observations"], "observations", n)
    actions = np.asarray(arrays["actions"])
    if np.issubdtype(actions.dtype, np.integer):  # discrete actions: one index per row
        _check_rows("actions", actions, n, ())
        actions = actions.astype(np.int32)
    else:
        if actions.ndim < 2:
            raise DatasetError(
                f"Key 'actions' has shape {actions.shape}, expected ({n}, action_dim) for "
                "continuous actions (integer actions of shape (N,) are read as discrete)."
            )
        _check_rows("actions", actions, n, None)
        _check_finite("actions", actions)
        actions = actions.astype(np.float32)
    rewards = np.asarray(arrays["rewards"])
    _check_rows("rewards", rewards, n, ())
    _check_finite("rewards", rewards)
    rewards = rewards.astype(np.float32)
    flags = {}
    for key in ("terminals", "timeouts"):
        x = np.asarray(arrays[key]) if key in arrays else np.zeros(n, bool)
        _check_rows(key, x, n, ())
        flags[key] = _flags(key, x)
    terminated, truncated = flags["terminals"], flags["timeouts"]

    if "next_observations" in arrays:
        next_obs = _observations(arrays["next_observations"], "next_observations", n)
        if jax.tree.structure(next_obs) != jax.tree.structure(obs):
            raise DatasetError(
                f"Key 'next_observations' has structure {jax.tree.structure(next_obs)}, "
                f"expected {jax.tree.structure(obs)} (that of 'observations')."
            )
        for (name, x), (_, y) in zip(
            _leaves(next_obs, "next_observations"), _leaves(obs, "observations"), strict=True
        ):
            if x.shape != y.shape or x.dtype != y.dtype:
                raise DatasetError(
                    f"Key {name!r} has shape {x.shape} and dtype {x.dtype}, expected {y.shape} "
                    f"and {y.dtype} (those of the matching observations)."
                )
        truncated = truncated | (_cuts(obs, next_obs) & ~terminated)
        keep = np.ones(n, bool)
    else:
        # The successor of row i is row i + 1, unless row i ends its episode.
        next_obs = jax.tree.map(lambda x: np.concatenate([x[1:], x[-1:]]), obs)
        # A timeout's following row is the next episode's reset, and nothing follows the last
        # row: their successors are unknown. Terminal rows stay (the bootstrap ignores s').
        drop = truncated & ~terminated
        drop[-1] |= not terminated[-1]
        # The row before a dropped row of the same episode now ends that episode.
        shortened = np.append(drop[1:] & ~drop[:-1] & ~terminated[:-1], False)
        truncated = (truncated & terminated) | shortened
        keep = ~drop
        if not keep.any():
            raise DatasetError(
                f"{where}: every one of the {n} rows ends an episode by a timeout or is the "
                "last row, so no transition has a known next observation."
            )
    take = (lambda x: jnp.asarray(x)) if keep.all() else (lambda x: jnp.asarray(x[keep]))
    transition = Transition(
        obs=jax.tree.map(take, obs),
        action=take(actions),
        reward=take(rewards),
        next_obs=jax.tree.map(take, next_obs),
        terminated=take(terminated),
        truncated=take(truncated),
    )
    return Dataset(transition)


def to_d4rl_dict(dataset: Dataset) -> dict[str, Any]:
    """The dataset as D4RL-style numpy arrays, `next_observations` included."""
    data = dataset.data
    host = lambda tree: jax.tree.map(np.asarray, tree)
    return {
        "observations": host(data.obs),
        "actions": np.asarray(data.action),
        "rewards": np.asarray(data.reward),
        "next_observations": host(data.next_obs),
        "terminals": np.asarray(data.terminated),
        "timeouts": np.asarray(data.truncated),
    }


# ---------------------------------------------------------------------------- HDF5
def _read_h5(node: Any) -> Any:
    if isinstance(node, h5py.Group):
        return {k: _read_h5(node[k]) for k in node}
    return node[()]


def _attr(attrs: Any, name: str, kind: type) -> Any:
    if name not in attrs:
        return None
    value = attrs[name]
    value = value.decode() if isinstance(value, bytes) else value
    return kind(value.item() if isinstance(value, np.generic) else value)


def load_hdf5(path: str | os.PathLike) -> tuple[Dataset, DatasetInfo]:
    """Read a D4RL-style HDF5 file; return the dataset and its info.

    `infos/...` and `metadata/...` groups and other unknown keys are ignored. Reference scores
    come from the file's attributes, else from D4RL's table when the file name is a D4RL one.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No HDF5 dataset file at {path!r}.")
    try:
        with h5py.File(path, "r") as f:
            _check_keys(list(f), repr(path))
            wanted = (*REQUIRED_KEYS, "timeouts", "next_observations")
            arrays = {k: _read_h5(f[k]) for k in wanted if k in f}
            attrs = dict(f.attrs)
    except OSError as err:
        raise DatasetError(f"{path!r} is not a readable HDF5 file: {err}") from err
    try:
        dataset = from_d4rl_dict(arrays, where=repr(path))
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
    else:
        group.create_dataset(key, data=value)


def save_hdf5(path: str | os.PathLike, dataset: Dataset, info: DatasetInfo) -> None:
    """Write `dataset` as a D4RL-style HDF5 file (with `next_observations`), atomically.

    `terminated` is written as `terminals` and `truncated` as `timeouts`; `info` goes into the
    file's attributes.
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


# ---------------------------------------------------------------------------- Minari
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
        for name, x in _leaves(obs, f"episode {episode.id} observations"):
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


# ---------------------------------------------------------------------------- any format
def load_dataset(path: str | os.PathLike) -> tuple[Dataset, DatasetInfo]:
    """Load a `.hdf5`/`.h5` file, a Minari dataset folder, or a local Minari dataset id."""
    text = os.fspath(path)
    if text.endswith((".hdf5", ".h5")):
        return load_hdf5(text)
    if os.path.isdir(text):
        return load_minari(text)
    if os.path.exists(text):
        raise DatasetError(f"{text!r} is neither a .hdf5/.h5 file nor a Minari dataset folder.")
    try:
        return load_minari(text)
    except ImportError:
        raise FileNotFoundError(
            f"No dataset at {text!r}: not a file or folder (and Minari, which could resolve a "
            "dataset id, is not installed)."
        ) from None


def save_dataset(path: str | os.PathLike, dataset: Dataset, info: DatasetInfo) -> None:
    """Write a `.hdf5`/`.h5` file, or else a Minari dataset folder, by the path's ending."""
    if os.fspath(path).endswith((".hdf5", ".h5")):
        save_hdf5(path, dataset, info)
    else:
        save_minari(path, dataset, info)


# ---------------------------------------------------------------------------- preprocessing
def clip_actions(dataset: Dataset, limit: float = 1.0 - 1e-5) -> Dataset:
    """Clip continuous actions to ±`limit` (IQL's ±(1 − 1e-5): atanh stays finite)."""
    data = dataset.data
    if not jnp.issubdtype(data.action.dtype, jnp.floating):
        return dataset
    return Dataset(dataclasses.replace(data, action=jnp.clip(data.action, -limit, limit)))


def scale_rewards_by_return_range(dataset: Dataset, target: float = 1000.0) -> Dataset:
    """Multiply rewards by `target / (max episode return − min episode return)` (IQL)."""
    returns = np.asarray(episode_returns(dataset), np.float64)
    spread = float(returns.max() - returns.min())
    if not spread > 0:
        raise DatasetError(
            f"Reward scaling by the return range needs episodes with different returns, but the "
            f"{returns.size} episode(s) all return {returns.max()} (max − min = {spread})."
        )
    data = dataset.data
    reward = (data.reward * jnp.float32(target / spread)).astype(jnp.float32)
    return Dataset(dataclasses.replace(data, reward=reward))


def shift_rewards(dataset: Dataset, shift: float = -1.0) -> Dataset:
    """Add `shift` to every reward (IQL's AntMaze recipe: reward − 1)."""
    data = dataset.data
    return Dataset(dataclasses.replace(data, reward=data.reward + jnp.float32(shift)))


def preprocess(dataset: Dataset, preset: str) -> Dataset:
    """Apply a named preset.

    'none': unchanged. 'locomotion' (IQL on D4RL MuJoCo): clip actions to ±(1 − 1e-5) and
    scale rewards by 1000 / (max − min episode return). 'antmaze' (IQL on AntMaze): clip
    actions and subtract 1 from every reward.
    """
    if preset == "none":
        return dataset
    if preset == "locomotion":
        return scale_rewards_by_return_range(clip_actions(dataset))
    if preset == "antmaze":
        return shift_rewards(clip_actions(dataset))
    raise ValueError(f"preset={preset!r} is not known; choose one of {list(PRESETS)}.")


def obs_normalizer(dataset: Dataset, eps: float = 1e-3) -> Normalizer:
    """Observation normalisation statistics of the dataset (`Normalizer.from_data`)."""
    return Normalizer.from_data(dataset.data.obs, eps)

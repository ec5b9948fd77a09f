"""D4RL-style datasets: arrays (as `env.get_dataset()` returns them) and HDF5 files.

`terminals` become `terminated` and `timeouts` become `truncated`, kept apart. Where
`next_observations` is stored, a row whose next observation is not the following row's
observation is also an episode end (jaxrl_m's rule); such a cut is marked `truncated` (the
bootstrap continues), never `terminated`. Where it is not stored, `next_obs[i] = obs[i+1]`, and
rows whose successor is unknown are dropped: timeouts (the following row is the next episode's
reset) and the last row unless it is terminal; the row before a dropped row is then marked
`truncated`, so the shortened episode still ends. Terminal rows are kept (their reward matters);
their `next_obs` is a placeholder (the following row's observation, as D4RL's
`qlearning_dataset` does), which the bootstrap never reads.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eqxrl.core.types import Transition
from eqxrl.data.dataset import Dataset
from eqxrl.datasets.episodes import episode_cuts
from eqxrl.datasets.info import DatasetError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


# D4RL's reference returns (d4rl/infos.py): random policy and expert policy, per environment.
# Used only for D4RL files that carry no reference attributes of their own.
D4RL_REFERENCE: dict[str, tuple[float, float]] = {
    "antmaze": (0.0, 1.0),
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


def d4rl_reference(name: str) -> tuple[float, float] | None:
    """D4RL's `(random, expert)` returns for a dataset name such as 'hopper_medium-v2'."""
    stem = pathlib.Path(name).name.lower().replace("_", "-")
    if stem.startswith(("antmaze", "ant-maze")):
        return D4RL_REFERENCE["antmaze"]
    for env, reference in D4RL_REFERENCE.items():
        if stem.startswith(env + "-"):
            return reference
    return None


def named_leaves(tree: Any, key: str) -> list[tuple[str, np.ndarray]]:
    """`(name, array)` for each leaf of a (possibly nested dict) entry, named like HDF5 paths."""
    if isinstance(tree, dict):
        if not tree:
            raise DatasetError(f"Key {key!r} is an empty group; expected arrays in it.")
        return [pair for k in sorted(tree) for pair in named_leaves(tree[k], f"{key}/{k}")]
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
    leaves = named_leaves(tree, key)
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


def check_keys(keys: list[str], where: str) -> None:
    """Refuse arrays that lack a key of a D4RL-style dataset.

    Args:
        keys: the keys present (of a dict of arrays, or of an HDF5 file).
        where: names the dataset in the message (its path, or `"dataset"`).

    Raises:
        DatasetError: naming every missing key of `REQUIRED_KEYS`, and `timeouts` unless
            `next_observations` is there instead.
    """
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if "timeouts" not in keys and "next_observations" not in keys:
        missing.append("timeouts")
    if missing:
        raise DatasetError(
            f"{where}: missing key {missing[0]!r} (all missing: {missing}); found keys "
            f"{sorted(keys)}. A D4RL-style dataset needs {list(REQUIRED_KEYS)} and "
            "'timeouts' (which may be left out only when 'next_observations' is stored)."
        )


def from_d4rl_dict(arrays: dict[str, Any], where: str = "dataset",
                   cuts: np.ndarray | None = None) -> Dataset:
    """A `Dataset` of Transitions from D4RL-style arrays (as `env.get_dataset()` returns).

    Keys: `observations`, `actions`, `rewards`, `terminals`, `timeouts` (optional only when
    `next_observations` is given) and `next_observations`; observations may be dicts of arrays.
    Episode boundaries are recovered as described in this module's docstring. `where` names
    the source in error messages. `cuts` (with `next_observations`) gives `episode_cuts` of
    the observations when the arrays cannot tell it (lazily loaded images).
    """
    check_keys(list(arrays), where)
    first = named_leaves(arrays["observations"], "observations")[0][1]
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
            named_leaves(next_obs, "next_observations"),
            named_leaves(obs, "observations"),
            strict=True,
        ):
            if x.shape != y.shape or x.dtype != y.dtype:
                raise DatasetError(
                    f"Key {name!r} has shape {x.shape} and dtype {x.dtype}, expected {y.shape} "
                    f"and {y.dtype} (those of the matching observations)."
                )
        if cuts is None:
            cuts = episode_cuts(obs, next_obs)
        truncated = truncated | (cuts & ~terminated)
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

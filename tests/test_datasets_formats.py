import dataclasses
import sys

import equinox as eqx
import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from eqxrl import Dataset, Normalizer, Transition
from eqxrl import datasets as ds
from eqxrl.datasets.info import DatasetError, DatasetInfo


def write_h5(path, arrays, attrs=None):
    """A D4RL-style file from a dict of arrays (nested dicts become HDF5 groups)."""

    def put(group, key, value):
        if isinstance(value, dict):
            sub = group.create_group(key)
            for k, v in value.items():
                put(sub, k, v)
        else:
            group.create_dataset(key, data=value)

    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            put(f, key, value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return str(path)


def obs_rows(n):
    return np.stack([np.arange(n), 10 * np.arange(n)], axis=1).astype(
        np.float64
    )  # obs[i] = (i, 10i)


def no_next_obs_arrays():
    """7 rows: an episode that terminates at row 2, one that times out at row 5, one more row."""
    return {
        "observations": obs_rows(7),
        "actions": np.linspace(-1, 1, 7)[:, None],
        "rewards": np.arange(1.0, 8.0),
        "terminals": np.array([0, 0, 1, 0, 0, 0, 0], np.float32),
        "timeouts": np.array([0, 0, 0, 0, 0, 1, 0], bool),
    }


def next_obs_arrays():
    """6 rows with next_observations: a cut after row 2, a terminal at row 4, data ends at 5."""
    obs = obs_rows(6)
    next_obs = obs_rows(7)[1:]
    next_obs[2] = [99.0, 99.0]  # not obs[3]: the episode was cut here
    next_obs[4] = [50.0, 50.0]  # a terminal's next obs may be anything
    return {
        "observations": obs,
        "next_observations": next_obs,
        "actions": np.array([[-1.0], [-0.5], [0.0], [0.5], [1.0], [1.0]]),
        "rewards": np.arange(1.0, 7.0),
        "terminals": np.array([0, 0, 0, 0, 1, 0], bool),
        "timeouts": np.zeros(6, bool),
    }


# ---------------------------------------------------------------- episode boundaries
def test_boundaries_without_next_observations(tmp_path):
    data, info = ds.load_hdf5(write_h5(tmp_path / "d.hdf5", no_next_obs_arrays()))
    t = data.data
    # Row 5 (timeout: row 6 is a reset) and row 6 (last row) have unknown successors: dropped.
    np.testing.assert_array_equal(t.obs, obs_rows(5))
    np.testing.assert_array_equal(t.next_obs, obs_rows(6)[1:])  # the terminal row's is obs[3]
    np.testing.assert_array_equal(t.terminated, [False, False, True, False, False])
    # Row 4 now ends the timed-out episode, as a truncation.
    np.testing.assert_array_equal(t.truncated, [False, False, False, False, True])
    np.testing.assert_array_equal(ds.episode_ends(data), [False, False, True, False, True])
    np.testing.assert_allclose(ds.episode_returns(data), [1 + 2 + 3, 4 + 5])
    assert info.num_episodes == 2
    assert t.obs.dtype == jnp.float32 and t.action.dtype == jnp.float32
    assert t.reward.dtype == jnp.float32 and t.terminated.dtype == jnp.bool_


def test_boundaries_without_next_observations_edge_cases():
    arrays = {
        "observations": obs_rows(5),
        "actions": np.zeros((5, 1)),
        "rewards": np.ones(5),
        "terminals": np.array([0, 1, 0, 0, 1]),
        "timeouts": np.array([0, 1, 1, 0, 0]),
    }
    t = ds.from_d4rl_dict(arrays).data
    # Row 1 is terminal and timed out: kept with both flags. Row 2 is a one-row episode that
    # times out: dropped, and row 1 (already an end) is unchanged. The last row is terminal:
    # kept, with its own observation as the placeholder next observation.
    np.testing.assert_array_equal(t.obs[:, 0], [0, 1, 3, 4])
    np.testing.assert_array_equal(t.next_obs[:, 0], [1, 2, 4, 4])
    np.testing.assert_array_equal(t.terminated, [False, True, False, True])
    np.testing.assert_array_equal(t.truncated, [False, True, False, False])


def test_boundaries_with_next_observations(tmp_path):
    data, info = ds.load_hdf5(write_h5(tmp_path / "d.hdf5", next_obs_arrays()))
    t = data.data
    assert data.size == 6  # nothing is dropped when next observations are stored
    np.testing.assert_array_equal(t.next_obs, next_obs_arrays()["next_observations"])
    np.testing.assert_array_equal(t.terminated, [False, False, False, False, True, False])
    # The cut after row 2 and the end of the data are truncations, not terminations.
    np.testing.assert_array_equal(t.truncated, [False, False, True, False, False, True])
    np.testing.assert_allclose(ds.episode_returns(data), [1 + 2 + 3, 4 + 5, 6])
    assert info.num_episodes == 3


def test_timeouts_are_optional_with_next_observations():
    arrays = next_obs_arrays()
    del arrays["timeouts"]
    t = ds.from_d4rl_dict(arrays).data
    np.testing.assert_array_equal(t.truncated, [False, False, True, False, False, True])


def test_nested_observation_groups(tmp_path):
    rng = np.random.default_rng(0)
    n = 5
    pixels = rng.integers(0, 255, (n + 1, 4, 4, 1), dtype=np.uint8)
    state = rng.normal(size=(n + 1, 3))
    arrays = {
        "observations": {"pixels": pixels[:-1], "state": state[:-1]},
        "next_observations": {"pixels": pixels[1:], "state": state[1:]},
        "actions": rng.uniform(-1, 1, (n, 2)),
        "rewards": rng.normal(size=n),
        "terminals": np.zeros(n, bool),
        "timeouts": np.eye(n, dtype=bool)[2],
    }
    data, _ = ds.load_hdf5(write_h5(tmp_path / "d.hdf5", arrays))
    obs = data.data.obs
    assert set(obs) == {"pixels", "state"}
    assert obs["pixels"].dtype == jnp.uint8 and obs["state"].dtype == jnp.float32
    np.testing.assert_array_equal(obs["pixels"], pixels[:-1])
    np.testing.assert_array_equal(data.data.truncated, [False, False, True, False, True])
    # A saved and reloaded copy is identical, groups included.
    ds.save_hdf5(tmp_path / "copy.hdf5", data, DatasetInfo())
    again, _ = ds.load_hdf5(tmp_path / "copy.hdf5")
    assert eqx.tree_equal(data, again)
    with h5py.File(tmp_path / "copy.hdf5") as f:
        assert f["observations/pixels"].dtype == np.uint8


# ---------------------------------------------------------------- errors
def _without(key):
    def change(arrays):
        del arrays[key]

    return change


def _set(key, value):
    def change(arrays):
        arrays[key] = value(arrays[key]) if callable(value) else value

    return change


def _nan_at(key, row):
    def change(arrays):
        x = np.array(arrays[key], np.float64)
        x[row] = np.nan
        arrays[key] = x

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (
            _without("rewards"),
            r"missing key 'rewards'.*found keys \['actions', 'next_observations', 'observations', ",
        ),
        (_without("timeouts"), r"missing key 'timeouts'.*left out only when 'next_observations'"),
        (_set("rewards", lambda x: x[:-1]), r"Key 'rewards' has shape \(6,\), expected 7 rows"),
        (
            _set("rewards", lambda x: x[:, None]),
            r"Key 'rewards' has shape \(7, 1\), expected \(7,\)\. Squeeze",
        ),
        (_set("actions", lambda x: x[:-2]), r"Key 'actions' has shape \(5, 1\), expected 7 rows"),
        (
            _set("actions", lambda x: x[:, 0]),
            r"Key 'actions' has shape \(7,\), expected \(7, action_dim\)",
        ),
        (
            _set("observations", lambda x: x[:, 0]),
            r"Key 'observations' has shape \(7,\), expected \(N, \.\.\.\)",
        ),
        (
            _nan_at("observations", 3),
            r"Key 'observations' holds NaN or infinite values in 1 rows, first at row 3",
        ),
        (
            _nan_at("rewards", 0),
            r"Key 'rewards' holds NaN or infinite values in 1 rows, first at row 0",
        ),
        (
            _set("actions", lambda x: np.where(np.arange(7)[:, None] == 4, np.inf, x)),
            r"Key 'actions' holds NaN or infinite values in 1 rows, first at row 4",
        ),
        (
            _set("terminals", lambda x: np.where(np.arange(7) == 4, 2.0, x)),
            r"Key 'terminals' must hold booleans or 0/1, but row 4 is np.float32\(2.0\)",
        ),
        (_set("timeouts", lambda x: x[:3]), r"Key 'timeouts' has shape \(3,\), expected 7 rows"),
        (
            _set("next_observations", lambda x: np.zeros((7, 3))),
            r"Key 'next_observations' has shape \(7, 3\) and dtype float32, expected \(7, 2\)",
        ),
        (
            _set("next_observations", lambda x: np.zeros((6, 2))),
            r"Key 'next_observations' has shape \(6, 2\), expected 7 rows",
        ),
        (
            _set("next_observations", lambda x: {"a": np.zeros((7, 2))}),
            r"Key 'next_observations' has structure .*expected",
        ),
        (_set("observations", np.zeros((0, 2))), r"key 'observations' has shape \(0, 2\): no rows"),
    ],
)
def test_malformed_files_name_the_key(tmp_path, change, message):
    arrays = no_next_obs_arrays()
    arrays["next_observations"] = obs_rows(8)[1:]
    if "missing key 'timeouts'" in message:
        del arrays["next_observations"]  # timeouts may be left out only with next_observations
    change(arrays)
    with pytest.raises(DatasetError, match=message):
        ds.load_hdf5(write_h5(tmp_path / "bad.hdf5", arrays))


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="is not a readable HDF5 file"):
        ds.load_hdf5(tmp_path / "text.hdf5")
    with pytest.raises(FileNotFoundError, match="No HDF5 dataset file at"):
        ds.load_dataset(tmp_path / "nope.hdf5")
    with pytest.raises(DatasetError, match=r"missing key 'observations' .*found keys \['foo'\]"):
        ds.load_hdf5(write_h5(tmp_path / "other.hdf5", {"foo": np.zeros(3)}))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="neither a .hdf5/.h5 file nor a Minari dataset folder"):
        ds.load_dataset(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="nope-v0"):
        ds.load_dataset(str(tmp_path / "nope-v0"))


def test_infos_and_metadata_groups_are_ignored(tmp_path):
    arrays = no_next_obs_arrays() | {
        "infos": {"qpos": np.zeros((7, 3))},
        "metadata": {"algorithm": np.zeros(1)},
    }
    data, _ = ds.load_hdf5(write_h5(tmp_path / "d.hdf5", arrays))
    assert data.size == 5


# ---------------------------------------------------------------- round trips and info
def test_hdf5_round_trip_keeps_data_and_info(tmp_path):
    data, _ = ds.load_hdf5(write_h5(tmp_path / "d.hdf5", next_obs_arrays()))
    info = DatasetInfo(
        env_id="Hopper-v5",
        ref_min_score=-20.0,
        ref_max_score=3000.0,
        num_episodes=3,
        source="test",
        description="hand made",
    )
    ds.save_hdf5(tmp_path / "out.h5", data, info)
    again, again_info = ds.load_dataset(tmp_path / "out.h5")
    assert eqx.tree_equal(data, again)
    assert again_info == info
    with h5py.File(tmp_path / "out.h5") as f:
        assert {
            "observations",
            "actions",
            "rewards",
            "terminals",
            "timeouts",
            "next_observations",
        } <= set(f)
        np.testing.assert_array_equal(f["terminals"][()], data.data.terminated)


def test_info_defaults_and_d4rl_reference_by_file_name(tmp_path):
    path = write_h5(tmp_path / "hopper_medium-v2.hdf5", no_next_obs_arrays())
    _, info = ds.load_hdf5(path)
    assert info.env_id is None and info.reference == (-20.272305, 3234.3)
    assert ds.d4rl_reference("Ant_maze_big-maze_noisy_multistart_True.hdf5") == (0.0, 1.0)
    assert ds.d4rl_reference("halfcheetah-medium-expert-v2") == (-280.178953, 12135.0)
    assert ds.d4rl_reference("pendulum-random.hdf5") is None
    _, plain = ds.load_hdf5(write_h5(tmp_path / "mine.hdf5", no_next_obs_arrays()))
    assert plain.reference is None


def test_normalized_score_reuses_reference():
    info = DatasetInfo(ref_min_score=-100.0, ref_max_score=300.0)
    np.testing.assert_allclose(info.normalized_score([-100.0, 100.0, 300.0]), [0.0, 50.0, 100.0])
    np.testing.assert_allclose(info.normalized_score(200.0), 75.0)
    with pytest.raises(ValueError, match=r"no reference scores \(ref_min_score=None"):
        DatasetInfo(env_id="X-v0").normalized_score([1.0])
    with pytest.raises(ValueError, match="ref_min_score and ref_max_score are both 5.0"):
        DatasetInfo(ref_min_score=5.0, ref_max_score=5.0)


def test_concatenate_and_episode_cuts():
    a = ds.from_d4rl_dict(next_obs_arrays())
    # A replay-buffer-like dataset whose last row ends no episode by a flag.
    t = a.data
    raw = Dataset(dataclasses.replace(t, truncated=jnp.zeros_like(t.truncated)))
    assert not bool(raw.data.truncated[-1])
    cut = ds.with_episode_cuts(raw)
    np.testing.assert_array_equal(cut.data.truncated, t.truncated)
    # Episode ends come from the flags only: raw's unflagged cut after row 2 merges episodes.
    np.testing.assert_array_equal(ds.episode_returns(raw), [1 + 2 + 3 + 4 + 5, 6])
    np.testing.assert_array_equal(ds.episode_returns(cut), [6, 9, 6])
    joined = ds.concatenate([cut, a])
    assert joined.size == 12
    np.testing.assert_array_equal(ds.episode_returns(joined), [6, 9, 6, 6, 9, 6])
    # The join never merges two episodes: the first part's unflagged last row becomes a cut.
    first = ds.concatenate([raw, a])
    assert bool(first.data.truncated[5]) and not bool(raw.data.truncated[5])
    np.testing.assert_array_equal(ds.episode_returns(first), [15, 6, 6, 9, 6])
    with pytest.raises(ValueError, match="at least one dataset"):
        ds.concatenate([])


# ---------------------------------------------------------------- preprocessing
def test_presets_by_hand():
    data = ds.from_d4rl_dict(next_obs_arrays())  # episode returns 6, 9, 6
    assert ds.preprocess(data, "none") is data
    loco = ds.preprocess(data, "locomotion")
    np.testing.assert_allclose(loco.data.reward, np.arange(1.0, 7.0) * 1000.0 / (9 - 6), rtol=1e-6)
    np.testing.assert_array_equal(
        loco.data.action[:, 0], np.float32([-(1 - 1e-5), -0.5, 0, 0.5, 1 - 1e-5, 1 - 1e-5])
    )
    ant = ds.preprocess(data, "antmaze")
    np.testing.assert_allclose(ant.data.reward, np.arange(0.0, 6.0))
    assert float(jnp.max(jnp.abs(ant.data.action))) == np.float32(1 - 1e-5)
    for out in (loco, ant):
        assert out.data.reward.dtype == jnp.float32
        np.testing.assert_array_equal(out.data.terminated, data.data.terminated)
    with pytest.raises(ValueError, match=r"preset='iql' is not known; choose one of \['none'"):
        ds.preprocess(data, "iql")


def test_reward_scaling_needs_different_returns():
    arrays = next_obs_arrays() | {"rewards": np.array([1.0, 1.0, 1.0, 2.0, 1.0, 3.0])}
    with pytest.raises(DatasetError, match=r"3 episode\(s\) all return 3.0"):
        ds.scale_rewards_by_return_range(ds.from_d4rl_dict(arrays))


def test_obs_normalizer_uses_dataset_statistics():
    data = ds.from_d4rl_dict(next_obs_arrays())
    norm = ds.obs_normalizer(data)
    assert isinstance(norm, Normalizer)
    np.testing.assert_allclose(norm.mean, obs_rows(6).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.std, obs_rows(6).std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(jnp.mean(norm(data.data.obs), axis=0), [0.0, 0.0], atol=1e-6)


def test_check_unit_actions_by_hand():
    data = ds.from_d4rl_dict(next_obs_arrays())  # actions -1 ... 1, both ends included
    assert ds.check_unit_actions(data) is None
    wide = np.array([[-1.0], [-0.5], [0.0], [0.5], [1.0], [1.5]])
    with pytest.raises(DatasetError) as e:
        ds.check_unit_actions(ds.from_d4rl_dict(next_obs_arrays() | {"actions": wide}), "x.hdf5")
    message = str(e.value)
    assert message.startswith("x.hdf5: actions range from -1.0 to 1.5 (1 of 6 rows")
    assert "eqxrl's envs take actions in [-1, 1]" in message
    assert "pass --rescale-actions to map the env's action bounds [low, high] to [-1, 1]" in message
    assert "or rescale the file yourself" in message
    # No tolerance: the float32 just above 1 is outside.
    above = wide.astype(np.float32)
    above[5, 0] = np.nextafter(np.float32(1), np.float32(2))
    with pytest.raises(DatasetError, match=r"dataset: actions range from -1.0 to 1.00000011"):
        ds.check_unit_actions(ds.from_d4rl_dict(next_obs_arrays() | {"actions": above}))
    discrete = next_obs_arrays() | {"actions": np.array([0, 1, 2, 1, 0, 2])}
    assert ds.check_unit_actions(ds.from_d4rl_dict(discrete)) is None


def test_rescale_actions_by_hand():
    actions = np.array([[0.0, -2.0], [4.0, 2.0], [1.0, 0.0], [2.0, 1.0], [3.0, -1.0], [0.5, 2.0]])
    data = ds.from_d4rl_dict(next_obs_arrays() | {"actions": actions})
    unit = ds.rescale_actions(data, np.array([0.0, -2.0]), np.array([4.0, 2.0]))
    expected = [[-1.0, -1.0], [1.0, 1.0], [-0.5, 0.0], [0.0, 0.5], [0.5, -0.5], [-0.75, 1.0]]
    np.testing.assert_array_equal(unit.data.action, np.float32(expected))
    assert unit.data.action.dtype == jnp.float32
    ds.check_unit_actions(unit)
    same = dataclasses.replace(unit.data, action=data.data.action)
    assert eqx.tree_equal(same, data.data)  # only the actions change
    # Floats apply to every dimension.
    one = ds.rescale_actions(ds.from_d4rl_dict(next_obs_arrays()), -2.0, 2.0)
    np.testing.assert_array_equal(one.data.action[:, 0], [-0.5, -0.25, 0, 0.25, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"dimension \(1,\) has low 2.0 and high 2.0"):
        ds.rescale_actions(data, [0.0, 2.0], [4.0, 2.0])
    with pytest.raises(ValueError, match=r"dimension \(0,\) has low -inf and high 4.0"):
        ds.rescale_actions(data, [-np.inf, -2.0], [4.0, 2.0])
    with pytest.raises(
        DatasetError, match=r"first at row 1, dimension \(0,\): 4.0 not in \[0.0, 3.0\]"
    ):
        ds.rescale_actions(data, [0.0, -2.0], [3.0, 2.0])
    with pytest.raises(ValueError, match=r"low has shape \(3,\) .* actions have shape \(2,\)"):
        ds.rescale_actions(data, [0.0, 0.0, 0.0], 1.0)
    discrete = ds.from_d4rl_dict(next_obs_arrays() | {"actions": np.array([0, 1, 2, 1, 0, 2])})
    with pytest.raises(DatasetError, match="int32 \\(discrete\\)"):
        ds.rescale_actions(discrete, 0.0, 2.0)


def test_discrete_actions_stay_integers():
    arrays = next_obs_arrays() | {"actions": np.array([0, 1, 2, 1, 0, 2])}
    t = ds.from_d4rl_dict(arrays).data
    assert t.action.dtype == jnp.int32 and t.action.shape == (6,)
    assert isinstance(t, Transition)


# ---------------------------------------------------------------- Minari
def test_minari_missing_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "minari", None)  # makes `import minari` fail
    with pytest.raises(ImportError, match=r"pip install 'eqxrl\[minari\]'"):
        ds.load_minari(tmp_path)


def test_minari_round_trip(tmp_path, monkeypatch):
    pytest.importorskip("minari")
    monkeypatch.chdir(tmp_path)  # a relative folder, as a user would type it
    data = ds.from_d4rl_dict(next_obs_arrays())
    info = DatasetInfo(
        env_id="Pendulum-v1",
        ref_min_score=-1000.0,
        ref_max_score=-100.0,
        num_episodes=3,
        source="hand",
    )
    ds.save_minari("pend", data, info)
    again, again_info = ds.load_dataset("pend")
    assert eqx.tree_equal(data, again)
    assert again_info == info
    half = dataclasses.replace(info, ref_max_score=None)
    ds.save_dataset("half", data, half)
    assert ds.load_dataset(tmp_path / "half")[1] == half
    with pytest.raises(FileExistsError, match="already exists"):
        ds.save_minari(tmp_path / "pend", data, info)
    with pytest.raises(DatasetError, match="not a Minari dataset folder"):
        ds.load_dataset(tmp_path)


def test_reads_a_dataset_written_by_minari_itself(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    rng = np.random.default_rng(0)
    episodes = []
    for length, terminal in ((4, True), (3, False)):
        obs = rng.normal(size=(length + 1, 3)).astype(np.float32)
        episodes.append(
            EpisodeBuffer(
                observations=obs,
                actions=rng.uniform(-2, 2, (length, 1)).astype(np.float32),
                rewards=rng.normal(size=length),
                terminations=np.eye(length, dtype=bool)[-1] & terminal,
                truncations=np.zeros(length, bool),
            )
        )  # the second episode was recorded unfinished
    with pytest.warns(UserWarning):
        minari.create_dataset_from_buffers(
            "test/pendulum/mine-v0",
            episodes,
            env="Pendulum-v1",
            ref_min_score=-1.0,
            ref_max_score=1.0,
        )
    data, info = ds.load_dataset("test/pendulum/mine-v0")  # by id, from the local store
    by_path, _ = ds.load_dataset(tmp_path / "test" / "pendulum" / "mine-v0")
    assert eqx.tree_equal(data, by_path)
    assert data.size == 7 and info.env_id == "Pendulum-v1" and info.reference == (-1.0, 1.0)
    np.testing.assert_array_equal(data.data.terminated, [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(data.data.truncated, [0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(data.data.next_obs[:4], episodes[0].observations[1:])
    np.testing.assert_allclose(
        ds.episode_returns(data), [np.sum(e.rewards) for e in episodes], rtol=1e-6
    )

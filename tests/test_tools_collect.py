import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import equinox as eqx
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import datasets as ds
from eqxrl.algorithms import sac
from eqxrl.datasets import rollouts
from eqxrl.datasets.info import DatasetError
from eqxrl.tools import collect

PENDULUM = "Pendulum-v1"  # 200-step episodes, truncated by the time limit, never terminated


def random_pendulum():
    return rollouts.random_policy(rollouts.env_spec(PENDULUM))


def assert_consistent(dataset):
    """Within an episode, each row's next observation is the following row's observation."""
    t = dataset.data
    ends = np.asarray(ds.episode_ends(dataset))
    inside = np.flatnonzero(~ends[:-1])
    np.testing.assert_array_equal(np.asarray(t.next_obs)[inside], np.asarray(t.obs)[inside + 1])


# ---------------------------------------------------------------- collection
def test_random_collection_marks_episode_ends_and_is_reproducible():
    data = rollouts.collect_episodes(PENDULUM, random_pendulum(), 300, seed=3)
    t = data.data
    assert data.size == 300 and t.obs.shape == (300, 3) and t.action.shape == (300, 1)
    assert t.obs.dtype == jnp.float32 and t.action.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(t.action))) <= 1.0 and float(jnp.max(t.reward)) <= 0.0
    assert not bool(jnp.any(t.terminated))
    # Row 199 is the time limit; row 299 ends the unfinished second episode (a cut).
    np.testing.assert_array_equal(np.flatnonzero(t.truncated), [199, 299])
    assert_consistent(data)
    assert eqx.tree_equal(data, rollouts.collect_episodes(PENDULUM, random_pendulum(), 300, seed=3))
    other = rollouts.collect_episodes(PENDULUM, random_pendulum(), 300, seed=4)
    assert not np.array_equal(other.data.action, t.action)


def test_rollout_returns_are_full_episodes_and_reproducible():
    returns = rollouts.rollout_returns(PENDULUM, random_pendulum(), 3, seed=0)
    assert returns.shape == (3,) and np.all(returns < 0)
    # 6 episodes (1200 steps) outgrow the first 1024-row allocation; the copy keeps the data.
    longer = rollouts.rollout_returns(PENDULUM, random_pendulum(), 6, seed=0)
    assert longer.shape == (6,)
    np.testing.assert_array_equal(longer[:3], returns)


def test_add_noise_clips_and_mixes_random_actions():
    big = lambda obs, key: jnp.full((2,), 5.0)
    zero = lambda obs, key: jnp.zeros((2,))
    keys = jax.random.split(jax.random.key(0), 2000)

    @jax.jit
    def actions(keys):  # (3 policies, 2000 keys, 2)
        policies = (
            rollouts.add_noise(big),
            rollouts.add_noise(big, epsilon=1.0),
            rollouts.add_noise(zero, noise_std=0.1),
        )
        return jnp.stack([jax.vmap(p, in_axes=(None, 0))(jnp.zeros(3), keys) for p in policies])

    clipped, uniform, noisy = actions(keys)
    np.testing.assert_array_equal(clipped, 1.0)
    assert float(jnp.max(uniform)) < 1.0 and float(jnp.min(uniform)) > -1.0
    assert abs(float(jnp.mean(uniform))) < 0.05  # uniform in [-1, 1], not the policy's 5
    np.testing.assert_allclose(jnp.std(noisy), 0.1, rtol=0.05)
    np.testing.assert_allclose(jnp.mean(noisy), 0.0, atol=0.01)


def test_discrete_actions_are_collected_as_integers_and_saved(tmp_path):
    policy = rollouts.random_policy(rollouts.env_spec("CartPole-v1"))
    data = rollouts.collect_episodes("CartPole-v1", policy, 120, seed=0)
    assert data.data.action.dtype == jnp.int32 and data.data.action.shape == (120,)
    assert set(np.unique(np.asarray(data.data.action))) == {0, 1}
    assert_consistent(data)
    ds.save_dataset(tmp_path / "cartpole.hdf5", data, ds.DatasetInfo(env_id="CartPole-v1"))
    loaded, _ = ds.load_dataset(tmp_path / "cartpole.hdf5")
    assert eqx.tree_equal(loaded, data)
    noisy = rollouts.add_noise(lambda o, k: jnp.int32(1), epsilon=0.5,
                               spec=rollouts.env_spec("CartPole-v1"))
    actions = [int(noisy(None, jax.random.key(i))) for i in range(400)]
    assert 0.2 < actions.count(0) / 400 < 0.3  # half random, of which half are 0
    with pytest.raises(ValueError, match=r"Gaussian noise.*Discrete\(2\).*use epsilon"):
        rollouts.add_noise(policy, noise_std=0.1, spec=rollouts.env_spec("CartPole-v1"))


def test_collection_rejects_bad_policies_and_flags(tmp_path):
    with pytest.raises(ValueError, match=r"float32 actions.*takes integer actions of "
                                         r"Discrete\(2\)"):
        rollouts.collect_episodes("CartPole-v1", random_pendulum(), 10, 0)
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        rollouts.collect_episodes(PENDULUM, random_pendulum(), 0, 0)
    with pytest.raises(ValueError, match=r"--epsilon must be in \[0, 1\], got 2.0"):
        collect.Policy(run_dir="x", output="y.hdf5", epsilon=2.0)
    with pytest.raises(ValueError, match="--noise-std must be >= 0, got -1.0"):
        collect.Policy(run_dir="x", output="y.hdf5", noise_std=-1.0)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        eqxrl.load_run(str(tmp_path))


def test_random_cli_writes_a_dataset_with_reference(tmp_path, capsys):
    out = tmp_path / "pendulum-random.hdf5"
    info = collect.cli(
        [
            "random",
            "--env-id",
            PENDULUM,
            "--num-steps",
            "250",
            "--output",
            str(out),
            "--ref-episodes",
            "2",
            "--seed",
            "1",
        ]
    )
    assert "wrote" in capsys.readouterr().out
    data, loaded = ds.load_dataset(out)
    assert loaded == info
    assert data.size == 250 and info.env_id == PENDULUM and info.source == "random"
    assert info.num_episodes == 2 and info.ref_max_score is None
    expected = rollouts.rollout_returns(PENDULUM, random_pendulum(), 2, seed=1)
    assert info.ref_min_score == pytest.approx(float(np.mean(expected)))
    assert eqx.tree_equal(data, rollouts.collect_episodes(PENDULUM, random_pendulum(), 250, 1))
    assert os.listdir(tmp_path) == ["pendulum-random.hdf5"]  # the write check left nothing


def test_unwritable_output_fails_before_collection(tmp_path, capsys):
    # No such env: had collection started, gymnasium would fail first, with another message.
    args = ["random", "--env-id", "NoSuchEnv-v0", "--num-steps", "10", "--output"]

    def refused(output, *extra):
        """The command line's one error line (exit code 2, no traceback)."""
        with pytest.raises(SystemExit) as exit_:
            collect.cli([*args, str(output), *extra])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        return err

    (tmp_path / "afile").write_text("")
    under_file = tmp_path / "afile" / "out.hdf5"  # a file's "folder": unwritable even for root
    message = refused(under_file)
    assert re.search(r"--output .*afile/out\.hdf5.* cannot be written", message)
    assert "cannot be created" in message and "is a file, not a folder" in message
    assert "Fix:" in message
    (tmp_path / "adir.hdf5").mkdir()
    assert re.search(r"--output .*adir\.hdf5.* already exists; pass --overwrite",
                     refused(tmp_path / "adir.hdf5"))
    assert re.search(r"--output .*adir\.hdf5.*existing directory.*Fix:",
                     refused(tmp_path / "adir.hdf5", "--overwrite"))
    (tmp_path / "minari-folder").mkdir()
    assert re.search(r"--output .*minari-folder.*already exists.*Fix:",
                     refused(tmp_path / "minari-folder", "--overwrite"))
    with pytest.raises(ValueError, match=r"--output .*afile/out\.hdf5.* cannot be written"):
        collect.main(collect.Random(env_id="NoSuchEnv-v0", output=str(under_file)))  # Python API
    assert sorted(os.listdir(tmp_path)) == ["adir.hdf5", "afile", "minari-folder"]


def test_help_lists_the_subcommands():
    root = os.path.dirname(os.path.dirname(__file__))
    out = subprocess.run(
        [sys.executable, "-m", "eqxrl.tools.collect", "policy", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    )
    for text in ("--run-dir", "--noise-std", "--epsilon", "--ref-max-score", "--reference-run"):
        assert text in out.stdout


# ---------------------------------------------------------------- from a SAC run
@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("sac") / "run")
    config = sac.Config(
        run=eqxrl.OnlineRun(
            env_id=PENDULUM,
            total_steps=300,
            start_steps=100,
            batch_size=32,
            buffer_size=1000,
            eval_interval=300,
            eval_episodes=1,
            checkpoint_interval=150,
            log_interval=100,
            run_dir=run_dir,
            tensorboard=False,
            progress=False,
        ),
        hidden_dims=(32, 32),
    )
    sac.main(config)
    return run_dir


def test_load_run_restores_the_newest_checkpoint(sac_run):
    run = eqxrl.load_run(sac_run, buffer=True)
    assert run.step == 300 and run.config.run.env_id == PENDULUM
    assert int(run.buffer.size) == 300 and int(run.state.critic.step) > 0
    older = eqxrl.load_run(sac_run, 150, buffer=True)
    assert older.step == 150 and int(older.buffer.size) == 150
    with pytest.raises(ValueError, match=r"step=7: no such checkpoint.*\[150, 300\]"):
        eqxrl.load_run(sac_run, 7)


def test_deterministic_policy_collection_follows_sac_act(sac_run):
    run = eqxrl.load_run(sac_run, buffer=True)
    data = rollouts.collect_episodes(PENDULUM, collect.run_policy(run, deterministic=True), 50, 0)
    mode = sac.act(run.state, data.data.obs, jax.random.key(0), deterministic=True)
    np.testing.assert_allclose(data.data.action, jnp.clip(mode, -1, 1), atol=1e-6)


def test_policy_cli_with_noise_and_reference(sac_run, tmp_path):
    out = str(tmp_path / "pendulum-expert.hdf5")
    config = collect.Policy(
        run_dir=sac_run,
        output=out,
        num_steps=220,
        noise_std=0.1,
        epsilon=0.1,
        ref_episodes=1,
        progress=False,
    )
    info = collect.main(config)
    data, loaded = ds.load_dataset(out)
    assert loaded == info and data.size == 220 and "step 300" in info.source
    np.testing.assert_array_equal(np.flatnonzero(data.data.truncated), [199, 219])
    assert_consistent(data)
    run = eqxrl.load_run(sac_run, buffer=True)
    expert = rollouts.rollout_returns(PENDULUM, collect.run_policy(run, deterministic=True), 1, 0)
    assert info.ref_max_score == pytest.approx(float(expert[0]))
    assert info.ref_min_score == pytest.approx(
        float(rollouts.rollout_returns(PENDULUM, random_pendulum(), 1, 0)[0])
    )
    again, _ = collect.make(config)
    assert eqx.tree_equal(data, again)  # same seed, same dataset


def test_reference_run_is_its_newest_checkpoint_even_for_an_older_step(sac_run, tmp_path):
    # A "medium" dataset from an older checkpoint of the expert's own run: the reference
    # (expert) return must come from the newest checkpoint, not from the medium policy.
    info = collect.main(
        collect.Replay(
            run_dir=sac_run,
            step=150,
            reference_run=sac_run,
            output=str(tmp_path / "medium-replay.hdf5"),
            ref_min_score=-1500.0,
            ref_episodes=1,
            progress=False,
        )
    )
    newest = eqxrl.load_run(sac_run, buffer=True)
    expert_policy = collect.run_policy(newest, deterministic=True)
    expert = rollouts.rollout_returns(PENDULUM, expert_policy, 1, 0)
    assert "step 150" in info.source
    assert info.ref_max_score == pytest.approx(float(expert[0]))


def test_replay_and_concat(sac_run, tmp_path):
    replay_out = str(tmp_path / "replay.hdf5")
    replay = collect.Replay(
        run_dir=sac_run,
        output=replay_out,
        ref_min_score=-1500.0,
        ref_max_score=-150.0,
        progress=False,
    )
    info = collect.main(replay)
    data, _ = ds.load_dataset(replay_out)
    run = eqxrl.load_run(sac_run, buffer=True)
    assert data.size == 300 and info.reference == (-1500.0, -150.0)
    np.testing.assert_array_equal(data.data.obs, run.buffer.data.obs[:300])
    np.testing.assert_array_equal(data.data.action, run.buffer.data.action[:300])
    np.testing.assert_array_equal(np.flatnonzero(ds.episode_ends(data)), [199, 299])
    assert_consistent(data)

    policy_out = str(tmp_path / "policy.hdf5")
    collect.main(
        collect.Policy(
            run_dir=sac_run,
            output=policy_out,
            num_steps=100,
            ref_min_score=-1500.0,
            ref_max_score=-150.0,
            progress=False,
        )
    )
    both_out = str(tmp_path / "both.hdf5")
    both = collect.main(
        collect.Concat(inputs=(replay_out, policy_out), output=both_out)
    )
    joined, _ = ds.load_dataset(both_out)
    assert joined.size == 400 and both.reference == (-1500.0, -150.0)
    assert both.env_id == PENDULUM and both.num_episodes == 3
    np.testing.assert_array_equal(joined.data.obs[300:], ds.load_dataset(policy_out)[0].data.obs)

    other_out = str(tmp_path / "other.hdf5")
    collect.main(dataclasses.replace(replay, output=other_out, ref_min_score=-1000.0))
    with pytest.raises(DatasetError, match=r"disagree on ref_min_score \(\[-1000.0, -1500.0\]\)"):
        collect.make(collect.Concat(inputs=(replay_out, other_out), output="x.hdf5"))
    fixed = collect.make(
        collect.Concat(inputs=(replay_out, other_out), output="x.hdf5", ref_min_score=-1200.0)
    )[1]
    assert fixed.reference == (-1200.0, -150.0)


def test_replay_to_minari_folder(sac_run, tmp_path):
    pytest.importorskip("minari")
    out = str(tmp_path / "pendulum-replay")
    collect.main(
        collect.Replay(
            run_dir=sac_run, output=out, ref_min_score=-1500.0, ref_max_score=-150.0, progress=False
        )
    )
    data, info = ds.load_dataset(out)
    assert data.size == 300 and info.env_id == PENDULUM and info.num_episodes == 2
    assert eqx.tree_equal(data, collect.replay_dataset(eqxrl.load_run(sac_run, buffer=True)))


class DictObs(gym.ObservationWrapper):
    """Pendulum with dict observations {"state": (3,), "angle": (2,)}."""

    def __init__(self, env):
        super().__init__(env)
        box = env.observation_space
        self.observation_space = gym.spaces.Dict(
            {"state": box, "angle": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)}
        )

    def observation(self, obs):
        return {"state": obs, "angle": obs[:2]}


def test_dict_observations_are_collected_and_saved(monkeypatch, tmp_path):
    make_env = rollouts.make_env
    monkeypatch.setattr(rollouts, "make_env", lambda env_id: DictObs(make_env(env_id)))
    data = rollouts.collect_episodes(PENDULUM, random_pendulum(), 250, seed=0)
    obs = data.data.obs
    assert set(obs) == {"state", "angle"} and obs["state"].shape == (250, 3)
    np.testing.assert_array_equal(obs["angle"], obs["state"][:, :2])
    np.testing.assert_array_equal(data.data.next_obs["state"][:199], obs["state"][1:200])
    ds.save_hdf5(tmp_path / "dict.hdf5", data, ds.DatasetInfo(env_id=PENDULUM))
    assert eqx.tree_equal(data, ds.load_dataset(tmp_path / "dict.hdf5")[0])
    if importlib.util.find_spec("minari") is not None:
        ds.save_minari(tmp_path / "dict-minari", data, ds.DatasetInfo(env_id=PENDULUM))
        assert eqx.tree_equal(data, ds.load_dataset(tmp_path / "dict-minari")[0])

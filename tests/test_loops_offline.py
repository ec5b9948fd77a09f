"""The offline loop through its public seams: dataset files, the command line, load_policy."""

import dataclasses
import importlib
import os
import signal
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import Dataset, Transition
from eqxrl.algorithms import bc, cql, iql, td3_bc
from eqxrl.datasets.files import save_dataset
from eqxrl.datasets.info import DatasetError, DatasetInfo
from eqxrl.run import checkpoints as ck

from .conftest import assert_trees_equal

REFERENCE = (-1200.0, -150.0)


def random_pendulum_dataset(n=600, seed=0, scale=1.0):
    """Random Pendulum-v1 transitions (actions in [-1, 1], times `scale`)."""
    env = eqxrl.make_env("Pendulum-v1")
    rng = np.random.default_rng(seed)
    rows = []
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        action = rng.uniform(-1, 1, size=(1,)).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action * scale, np.float32(reward), next_obs, terminated, truncated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    cols = [np.stack(c) for c in zip(*rows, strict=True)]
    return Dataset(Transition(*[jnp.asarray(c) for c in cols[:4]],
                              jnp.asarray(cols[4], bool), jnp.asarray(cols[5], bool)))


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "pendulum-random.hdf5")
    info = DatasetInfo(env_id="Pendulum-v1", ref_min_score=REFERENCE[0],
                       ref_max_score=REFERENCE[1])
    save_dataset(path, random_pendulum_dataset(), info)
    return path


def run_settings(tmp_path, name, dataset, **kw):
    return eqxrl.OfflineRun(**(dict(
        dataset=dataset, total_updates=60, batch_size=32, updates_per_call=25, eval_interval=30,
        eval_episodes=2, log_interval=10, checkpoint_interval=20, progress=False,
        run_dir=str(tmp_path / name)) | kw))


def iql_config(tmp_path, name, dataset, **kw):
    return iql.Config(run=run_settings(tmp_path, name, dataset, **kw), hidden_dims=(32, 32))


def test_offline_run_writes_everything(tmp_path, dataset_file):
    summary = iql.main(iql_config(tmp_path, "a", dataset_file))
    run = tmp_path / "a"
    assert summary["steps"] == 60 and summary["unit"] == "update"
    assert summary["final_normalized_score"] is not None and summary["env_id"] == "Pendulum-v1"
    assert {"config.json", "train.csv", "eval.csv", "summary.json"} <= set(os.listdir(run))
    train_csv = eqxrl.run.read_metrics(str(run / "train.csv"))
    # Chunks stop at every log boundary (10) even though updates_per_call is 25.
    assert train_csv["step"].tolist() == [10, 20, 30, 40, 50, 60]
    assert [s for s, _ in ck.list_checkpoints(str(run / "checkpoints"))] == [40, 60]


def interrupting(algorithm):
    """The algorithm, with a real Ctrl-C while its deterministic policy is first traced (the
    first evaluation): a public seam, since the loop calls `act` there and nowhere else."""
    module = types.ModuleType(algorithm.__name__.split(".")[-1])
    module.init, module.update, module.Config = algorithm.init, algorithm.update, algorithm.Config
    module.State = algorithm.State
    sent = []

    def act(state, obs, key, deterministic=False):
        if not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGINT)
        return algorithm.act(state, obs, key, deterministic=deterministic)

    module.act = act
    return module


def test_offline_interrupted_and_resumed_equals_uninterrupted(tmp_path, dataset_file):
    iql.main(iql_config(tmp_path, "straight", dataset_file))
    broken = iql_config(tmp_path, "broken", dataset_file)
    summary = eqxrl.train_offline(broken, interrupting(iql))
    assert summary["interrupted"] and summary["steps"] == 30  # after the evaluation at 30
    summary = iql.main(iql.Config(run=eqxrl.OfflineRun(resume=str(tmp_path / "broken"))))
    assert summary["steps"] == 60 and not summary["interrupted"]
    a = ck.list_checkpoints(str(tmp_path / "straight" / "checkpoints"))[-1][1]
    b = ck.list_checkpoints(str(tmp_path / "broken" / "checkpoints"))[-1][1]
    assert ck.read_header(a)[1] == ck.read_header(b)[1]  # bit-identical state and key
    assert (tmp_path / "straight" / "eval.csv").read_text() == (
        tmp_path / "broken" / "eval.csv"
    ).read_text()


def test_dataset_that_does_not_fit_the_env_is_named(tmp_path):
    data = random_pendulum_dataset(n=50)
    wide = Dataset(dataclasses.replace(data.data, action=jnp.zeros((50, 2))))
    config = iql_config(tmp_path, "bad", "", env_id="Pendulum-v1")
    with pytest.raises(ValueError, match=r"dataset.action has shape \(50, 2\), expected \(50, 1\)"):
        eqxrl.train_offline(config, iql, dataset=wide, reference=REFERENCE)
    assert not os.path.exists(tmp_path / "bad")


def test_actions_outside_the_unit_box_are_refused_or_rescaled(tmp_path):
    path = str(tmp_path / "env-units.hdf5")  # Pendulum's own action units: [-2, 2]
    save_dataset(path, random_pendulum_dataset(n=300, scale=2.0), DatasetInfo(env_id="Pendulum-v1"))
    with pytest.raises(DatasetError, match=r"outside \[-1, 1\].*--rescale-actions"):
        iql.main(iql_config(tmp_path, "refused", path))
    assert not os.path.exists(tmp_path / "refused")
    summary = iql.main(iql_config(tmp_path, "rescaled", path, rescale_actions=True,
                                  total_updates=20))
    assert summary["status"] == "done"


def test_a_dataset_without_an_env_id_needs_one(tmp_path):
    path = str(tmp_path / "anonymous.hdf5")
    save_dataset(path, random_pendulum_dataset(n=100), DatasetInfo())
    with pytest.raises(ValueError, match=r"names no env id.*--env-id"):
        iql.main(iql_config(tmp_path, "anon", path))
    summary = iql.main(iql_config(tmp_path, "named", path, env_id="Pendulum-v1",
                                  total_updates=20))
    assert summary["env_id"] == "Pendulum-v1"


def test_no_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--dataset is required"):
        iql.main(iql_config(tmp_path, "none", ""))


@pytest.mark.parametrize("algorithm", [  # cql and td3_bc (10 s, 9 s) in the slow step
    iql, pytest.param(cql, marks=pytest.mark.slow), bc,
    pytest.param(td3_bc, marks=pytest.mark.slow)])
def test_load_policy_of_an_offline_run(algorithm, tmp_path, dataset_file):
    run_dir = tmp_path / "run"
    config = algorithm.Config(
        run=run_settings(tmp_path, "run", dataset_file, total_updates=20, eval_interval=20),
        hidden_dims=(32, 32),
    )
    algorithm.main(config)
    policy, loaded = eqxrl.load_policy(str(run_dir))
    # The saved config is the one the run used: its env id was read from the dataset.
    assert loaded == dataclasses.replace(
        config, run=dataclasses.replace(config.run, env_id="Pendulum-v1")
    )
    state = eqxrl.load_run(str(run_dir)).state
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    expected = algorithm.act(state, obs, jax.random.key(0), deterministic=True)
    np.testing.assert_allclose(policy(obs), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy(obs[0]), expected[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sac", "td3", "iql", "cql", "bc", "td3_bc"])
def test_compiled_init_equals_eager_init(name):
    # The loops build a run's state in one compiled call (eager construction compiles dozens
    # of tiny programs); it must be the state a notebook gets from calling init directly.
    module = importlib.import_module(f"tests.test_{name}")
    algo = importlib.import_module(f"eqxrl.algorithms.{name}")
    key = jax.random.key(7)
    eager = algo.init(key, module.SPEC, module.SMALL)
    compiled = eqxrl.jit(algo.init)(key, module.SPEC, module.SMALL)
    assert_trees_equal(compiled, eager)

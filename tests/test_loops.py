"""The offline loop's mechanics (the online loop is exercised through tests/test_sac.py)."""

import dataclasses
import importlib
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from algorithms import sac
from eqxrl import Dataset, Transition
from eqxrl import checkpoints as ck

from .conftest import assert_trees_equal


@dataclasses.dataclass(frozen=True)
class OfflineSAC(sac.Config):
    """SAC's config plus the offline loop's settings (SAC's update works on any batch)."""

    total_updates: int = 60
    updates_per_call: int = 25


def random_pendulum_dataset(n=600, seed=0):
    env = eqxrl.make_env("Pendulum-v1")
    rng = np.random.default_rng(seed)
    rows = []
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        action = rng.uniform(-1, 1, size=(1,)).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, np.float32(reward), next_obs, terminated, truncated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    cols = [np.stack(c) for c in zip(*rows, strict=True)]
    return Dataset(
        Transition(
            *[jnp.asarray(c) for c in cols[:4]],
            jnp.asarray(cols[4], bool),
            jnp.asarray(cols[5], bool),
        )
    )


def config(tmp_path, name, **kw):
    fields = dict(
        env_id="Pendulum-v1",
        hidden_dims=(32, 32),
        batch_size=32,
        eval_interval=30,
        eval_episodes=2,
        log_interval=10,
        checkpoint_interval=20,
        progress=False,
        run_dir=str(tmp_path / name),
    )
    return OfflineSAC(**(fields | kw))


def train(cfg, data, resume=False):
    return eqxrl.train_offline(
        cfg,
        data,
        init=sac.init,
        update=sac.update,
        act=sac.act,
        algo="sac-offline",
        resume=resume,
        reference=(-1200.0, -150.0),
    )


def test_offline_run_writes_everything(tmp_path):
    summary = train(config(tmp_path, "a"), random_pendulum_dataset())
    run = tmp_path / "a"
    assert summary["steps"] == 60 and summary["unit"] == "update"
    assert summary["final_normalized_score"] is not None
    assert {"config.json", "train.csv", "eval.csv", "summary.json"} <= set(os.listdir(run))
    train_csv = eqxrl.logging.read_metrics(str(run / "train.csv"))
    # Chunks stop at every log boundary (10) even though updates_per_call is 25.
    assert train_csv["step"].tolist() == [10, 20, 30, 40, 50, 60]
    assert [s for s, _ in ck.list_checkpoints(str(run / "checkpoints"))] == [40, 60]


def test_offline_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    data = random_pendulum_dataset()
    train(config(tmp_path, "straight"), data)

    # A Ctrl-C right after the evaluation at update 30: the loop stops and checkpoints.
    broken = config(tmp_path, "broken")
    real_evaluate = eqxrl.loops.evaluate

    def evaluate_then_interrupt(*args, **kwargs):
        stats = real_evaluate(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # after the eval at update 30
        return stats

    monkeypatch.setattr(eqxrl.loops, "evaluate", evaluate_then_interrupt)
    summary = train(broken, data)
    monkeypatch.setattr(eqxrl.loops, "evaluate", real_evaluate)
    assert summary["interrupted"] and summary["steps"] == 30
    summary = train(broken, data, resume=True)
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
    with pytest.raises(ValueError, match=r"dataset.action has shape \(50, 2\), expected \(50, 1\)"):
        train(config(tmp_path, "bad"), wide)


@pytest.mark.parametrize("name", ["sac", "iql", "cql", "bc", "td3_bc"])
def test_compiled_init_equals_eager_init(name):
    # The loops build a run's state in one compiled call (eager construction compiles dozens
    # of tiny programs); it must be the state a notebook gets from calling init directly.
    module = importlib.import_module(f"tests.test_{name}")
    algo = importlib.import_module(f"algorithms.{name}")
    key = jax.random.key(7)
    eager = algo.init(key, module.SPEC, module.SMALL)
    compiled = eqxrl.jit(algo.init)(key, module.SPEC, module.SMALL)
    assert_trees_equal(compiled, eager)

import dataclasses
import json
import os
import signal
import subprocess
import sys
import types

import equinox as eqx
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import CheckpointError, EnvSpec
from eqxrl.algorithms import sac
from eqxrl.run import checkpoints as ck

from .conftest import assert_vmap_equals_separate_runs, constant_critic, make_batch

SPEC = EnvSpec(
    jax.ShapeDtypeStruct((3,), np.dtype("float32")),
    (2,),
    action_low=(-1.0, -1.0),
    action_high=(1.0, 1.0),
)
SMALL = sac.Config(run=eqxrl.OnlineRun(batch_size=16, buffer_size=1000), hidden_dims=(32, 32))


# ---------------------------------------------------------------- config and init
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("tau", 0.0, r"--tau must be in \(0, 1\], got 0.0"),
        ("tau", 1.5, r"--tau must be in \(0, 1\], got 1.5"),
        ("actor_lr", -1e-3, r"--actor-lr must be a finite number > 0, got -0.001"),
        ("num_min_critics", 3, r"--num-min-critics must be in \[1, 2\], got 3"),
        ("critic_dropout", 1.0, r"--critic-dropout must be in \[0, 1\), got 1.0"),
        ("init_temperature", float("inf"), r"--init-temperature must be a finite number > 0"),
        ("init_temperature", float("nan"), r"--init-temperature must be a finite number > 0"),
        ("log_std_min", 5.0, r"--log-std-min \(5.0\) must be finite and <= --log-std-max \(2.0\)"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 2000, r"--batch-size \(2000\) must not exceed --buffer-size \(1000\)"),
        ("utd", 0, r"--utd must be >= 1, got 0"),
        ("start_steps", 10**6, r"--start-steps \(1000000\) must be < --total-steps \(1000000\)"),
    ],
)
def test_invalid_run_settings_name_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL.run, **{field: value})


def test_init_rejects_discrete_and_unscaled_actions():
    discrete = EnvSpec(SPEC.observation, (), discrete=True, num_actions=3)
    with pytest.raises(ValueError, match=r"continuous \(Box\) action space.*Discrete\(3\)"):
        sac.init(jax.random.key(0), discrete, SMALL)
    wide = dataclasses.replace(SPEC, action_low=(-2.0, -2.0), action_high=(2.0, 2.0))
    with pytest.raises(ValueError, match="RescaleAction"):
        sac.init(jax.random.key(0), wide, SMALL)


# ---------------------------------------------------------------- losses by hand
def test_td_target_bootstraps_through_truncation_only():
    target = eqxrl.td_target(
        jnp.array([1.0, 2.0]), jnp.array([False, True]), jnp.array([10.0, 10.0]), 0.9
    )
    np.testing.assert_allclose(target, [10.0, 2.0])


def test_critic_loss_by_hand():
    critic = constant_critic([1.0, 3.0], jax.random.key(0))
    batch = make_batch(jax.random.key(1), n=4)
    target = jnp.array([0.0, 1.0, 2.0, 3.0])
    loss, aux = eqxrl.critic_td_loss(critic, batch.obs, batch.action, target)
    # critic 1: mean((1-y)^2) = (1+0+1+4)/4 = 1.5; critic 2: mean((3-y)^2) = (9+4+1+0)/4 = 3.5
    np.testing.assert_allclose(loss, 5.0, rtol=1e-6)
    np.testing.assert_allclose(aux["q_mean"], 2.0, rtol=1e-6)


def test_actor_loss_by_hand():
    critic = constant_critic([1.0, 3.0], jax.random.key(0))
    actor = eqxrl.GaussianPolicy(3, 2, (8,), key=jax.random.key(2))
    obs = make_batch(jax.random.key(1), n=4).obs
    alpha = jnp.asarray(0.5)
    loss, aux = sac.actor_loss(actor, critic, obs, alpha, jax.random.key(3))
    _, log_prob = eqxrl.sample_actions(actor, obs, jax.random.key(3))
    np.testing.assert_allclose(loss, jnp.mean(0.5 * log_prob - 1.0), rtol=1e-5)  # min Q = 1
    np.testing.assert_allclose(aux["entropy"], -jnp.mean(log_prob), rtol=1e-5)
    loss_mean, _ = sac.actor_loss(actor, critic, obs, alpha, jax.random.key(3), "mean")
    np.testing.assert_allclose(loss_mean, jnp.mean(0.5 * log_prob - 2.0), rtol=1e-5)


def test_temperature_loss_and_gradient_by_hand():
    temp = eqxrl.LogScalar.create(2.0)
    loss, aux = eqxrl.temperature_loss(temp, jnp.asarray(1.5), jnp.asarray(-1.0))
    np.testing.assert_allclose(loss, 5.0, rtol=1e-6)  # 2 * (1.5 - (-1))
    grad = eqx.filter_grad(
        lambda t: eqxrl.temperature_loss(t, jnp.asarray(1.5), jnp.asarray(-1.0))[0]
    )(temp)
    np.testing.assert_allclose(grad.log_value, 5.0, rtol=1e-6)  # d/dlogα of α·2.5


# ---------------------------------------------------------------- update and act
def test_update_compiles_once_and_learns_something():
    state = sac.init(jax.random.key(0), SPEC, SMALL)
    update = eqx.debug.assert_max_traces(sac.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    batch = make_batch(jax.random.key(1))
    losses = []
    for i in range(30):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["critic/loss"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert losses[-1] < losses[0]
    assert int(state.critic.step) == 30
    assert {"critic/loss", "actor/loss", "actor/entropy", "temperature/value"} <= set(metrics)


def test_sweep_of_hyperparameters_is_one_program():
    lrs, taus = [1e-4, 1e-3, 1e-2], [0.005, 0.01, 0.05]
    states = eqxrl.tree_stack(
        [
            sac.init(jax.random.key(0), SPEC, dataclasses.replace(SMALL, critic_lr=lr, tau=tau))
            for lr, tau in zip(lrs, taus, strict=True)
        ]
    )
    np.testing.assert_allclose(states.critic.opt_state.hyperparams["learning_rate"], lrs)
    batch = make_batch(jax.random.key(1))
    update = eqx.debug.assert_max_traces(sac.update, max_traces=1)
    sweep = eqxrl.jit(jax.vmap(lambda s, k: update(s, batch, k, SMALL)[0], in_axes=(0, None)))
    new = sweep(states, jax.random.key(2))
    # The same gradients scaled by different learning rates move the critics by different amounts.
    moved = [
        float(
            jnp.abs(
                n.critic.model.members[0].net.layers[0].weight
                - o.critic.model.members[0].net.layers[0].weight
            ).mean()
        )
        for n, o in zip(eqxrl.tree_unstack(new), eqxrl.tree_unstack(states), strict=True)
    ]
    assert moved[0] < moved[1] < moved[2]


def test_reward_with_trailing_axis_fails_at_trace_time():
    state = sac.init(jax.random.key(0), SPEC, SMALL)
    bad = eqx.tree_at(lambda b: b.reward, make_batch(jax.random.key(1)), jnp.zeros((16, 1)))
    with pytest.raises(ValueError, match=r"batch.reward has shape \(16, 1\), expected \(16,\)"):
        eqxrl.jit(lambda s, b: sac.update(s, b, jax.random.key(0), SMALL))(state, bad)


def test_act_checks_observations_and_stays_in_bounds():
    state = sac.init(jax.random.key(0), SPEC, SMALL)
    obs = jnp.ones((5, 3))
    a = sac.act(state, obs, jax.random.key(1))
    assert a.shape == (5, 2) and jnp.all(jnp.abs(a) <= 1)
    mode = sac.act(state, obs, jax.random.key(1), deterministic=True)
    np.testing.assert_array_equal(mode, sac.act(state, obs, jax.random.key(2), deterministic=True))
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        sac.act(state, jnp.ones((5, 4)), jax.random.key(1))
    with pytest.raises(ValueError, match="obs has dtype float16, expected float32"):
        sac.act(state, jnp.ones((5, 3), jnp.float16), jax.random.key(1))


@pytest.mark.slow  # ~10 s: two ensembles compiled
def test_redq_and_droq_options_run():
    config = dataclasses.replace(
        SMALL,
        num_critics=5,
        num_min_critics=2,
        critic_dropout=0.01,
        critic_layer_norm=True,
        actor_q_reduction="mean",
    )
    state = sac.init(jax.random.key(0), SPEC, config)
    state, metrics = eqxrl.jit(lambda s, b, k: sac.update(s, b, k, config))(
        state, make_batch(jax.random.key(1)), jax.random.key(2)
    )
    assert np.isfinite(float(metrics["critic/loss"]))
    assert state.critic.model.num == 5


def test_vmap_over_seeds_equals_separate_runs():
    batch = make_batch(jax.random.key(1))
    assert_vmap_equals_separate_runs(sac, SPEC, SMALL, batch, updates=3, seeds=4)


# ---------------------------------------------------------------- the script
def tiny(tmp_path, name="run", **kw):
    run = dict(
        env_id="Pendulum-v1",
        total_steps=400,
        start_steps=100,
        batch_size=32,
        buffer_size=1000,
        eval_interval=200,
        eval_episodes=2,
        log_interval=50,
        checkpoint_interval=100,
        run_dir=str(tmp_path / name),
        progress=False,
    )
    return sac.Config(run=eqxrl.OnlineRun(**(run | kw)), hidden_dims=(32, 32))


def test_main_writes_the_run_folder(tmp_path):
    summary = sac.main(tiny(tmp_path))
    run = tmp_path / "run"
    names = set(os.listdir(run))
    assert {"config.json", "train.csv", "eval.csv", "summary.json", "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert summary["steps"] == 400 and summary["final_eval_return"] is not None
    assert summary["status"] == "done" and not summary["interrupted"]
    record = json.loads((run / "config.json").read_text())
    assert record["algorithm"] == "sac" and record["module"] == "eqxrl.algorithms.sac"
    assert record["config"]["run"]["env_id"] == "Pendulum-v1"
    assert record["config"]["hidden_dims"] == [32, 32]


class InterruptAt(gym.Wrapper):
    """Sends this process a real SIGINT (Ctrl-C) on the given env step."""

    def __init__(self, env, at):
        super().__init__(env)
        self.at, self.count = at, 0

    def step(self, action):
        self.count += 1
        if self.count == self.at:
            signal.raise_signal(signal.SIGINT)
        return self.env.step(action)


def final_state(run_dir):
    path = ck.list_checkpoints(os.path.join(run_dir, "checkpoints"))[-1][1]
    header, _ = ck.read_header(path)
    return path, header["meta"]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    straight = tiny(tmp_path, "straight")
    sac.main(straight)

    broken = tiny(tmp_path, "broken")
    interrupting = lambda env_id: InterruptAt(eqxrl.make_env(env_id), 250)
    summary = eqxrl.train_online(broken, sac, make_env=interrupting)
    assert summary["interrupted"] and summary["steps"] == 250  # mid-episode, after learning began
    summary = sac.main(sac.Config(run=eqxrl.OnlineRun(resume=str(tmp_path / "broken"))))
    assert summary["steps"] == 400 and not summary["interrupted"]

    a, meta_a = final_state(tmp_path / "straight")
    b, meta_b = final_state(tmp_path / "broken")
    _, payload_a = ck.read_header(a)
    _, payload_b = ck.read_header(b)
    assert payload_a == payload_b  # bit-exact: every network, optimiser, buffer row and key
    assert meta_a["agents"][0]["last_eval"] == meta_b["agents"][0]["last_eval"]
    assert (tmp_path / "straight" / "eval.csv").read_text() == (
        tmp_path / "broken" / "eval.csv"
    ).read_text()


def test_resume_with_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    config = tiny(tmp_path, total_steps=200)
    sac.main(config)
    path = ck.list_checkpoints(os.path.join(config.run.run_dir, "checkpoints"))[-1][1]
    with open(path, "r+b") as f:
        f.seek(-100, os.SEEK_END)
        f.write(b"\0" * 100)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        sac.main(sac.Config(run=eqxrl.OnlineRun(resume=config.run.run_dir)))


def test_nan_check_names_the_metric_and_step(tmp_path):
    def poisoned(state, batch, key, config):
        state, metrics = sac.update(state, batch, key, config)
        return state, metrics | {"critic/loss": metrics["critic/loss"] * jnp.nan}

    algorithm = types.ModuleType("poisoned")  # SAC with a poisoned update
    algorithm.init, algorithm.update, algorithm.act = sac.init, poisoned, sac.act
    algorithm.Config, algorithm.State = sac.Config, sac.State
    config = tiny(tmp_path, nan_check=True)
    with pytest.raises(FloatingPointError, match=r"Non-finite \['critic/loss'\] at step 100"):
        eqxrl.train_online(config, algorithm)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "Non-finite" in summary["error"]


def test_unknown_env_and_discrete_env_errors(tmp_path):
    with pytest.raises(ValueError, match="env_id='Nope-v0'"):
        sac.main(tiny(tmp_path, env_id="Nope-v0"))
    with pytest.raises(ValueError, match="Discrete"):
        sac.main(tiny(tmp_path, "cartpole", env_id="CartPole-v1"))
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "cartpole")


def test_help_documents_every_flag():
    out = subprocess.run(
        [sys.executable, "algorithms/sac.py", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    for text in ("--env-id", "--num-min-critics", "REDQ", "--resume", "update-to-data",
                 "--total-steps", "--wandb-group"):
        assert text in out.stdout
    assert "--run." not in out.stdout  # run settings are flat flags

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import EnvSpec, OfflineRun
from eqxrl.algorithms import iql

from .conftest import (
    assert_vmap_equals_separate_runs,
    constant_critic,
    make_batch,
    pendulum_dataset_file,
)

SPEC = EnvSpec(
    jax.ShapeDtypeStruct((3,), np.dtype("float32")),
    (2,),
    action_low=(-1.0, -1.0),
    action_high=(1.0, 1.0),
)
SMALL = iql.Config(run=OfflineRun(dataset="unused.hdf5", batch_size=16), hidden_dims=(32, 32))


def inexact_leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))


# ---------------------------------------------------------------- config and init
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("expectile", 1.0, r"--expectile must be in \(0, 1\), got 1.0"),
        ("temperature", -1.0, r"--temperature must be a finite number >= 0, got -1.0"),
        ("value_lr", 0.0, r"--value-lr must be a finite number > 0, got 0.0"),
        ("num_critics", 0, r"--num-critics must be >= 1, got 0"),
        ("tau", 2.0, r"--tau must be in \(0, 1\], got 2.0"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


def test_defaults_are_locomotion_and_antmaze_settings_are_flags():
    assert iql.Config().run.preset == "locomotion"
    antmaze = dataclasses.replace(SMALL, expectile=0.9, temperature=10.0,
                                  run=dataclasses.replace(SMALL.run, preset="antmaze"))
    state = iql.init(jax.random.key(0), SPEC, antmaze)
    np.testing.assert_allclose([state.expectile, state.temperature], [0.9, 10.0])


def test_init_rejects_discrete_and_unscaled_actions():
    discrete = EnvSpec(SPEC.observation, (), discrete=True, num_actions=3)
    with pytest.raises(ValueError, match=r"continuous \(Box\) action space.*Discrete\(3\)"):
        iql.init(jax.random.key(0), discrete, SMALL)
    wide = dataclasses.replace(SPEC, action_low=(-2.0, -2.0), action_high=(2.0, 2.0))
    with pytest.raises(ValueError, match="RescaleAction"):
        iql.init(jax.random.key(0), wide, SMALL)


# ---------------------------------------------------------------- losses by hand
def test_expectile_loss_by_hand():
    diff = jnp.array([2.0, -2.0, 0.5, 0.0])
    np.testing.assert_allclose(iql.expectile_loss(diff, 0.7), [2.8, 1.2, 0.175, 0.0], rtol=1e-6)
    np.testing.assert_allclose(iql.expectile_loss(diff, 0.5), 0.5 * diff**2, rtol=1e-6)


def test_awr_weights_are_clipped_at_max_weight():
    weights = iql.awr_weights(jnp.array([0.0, 1.0, -1.0, 10.0]), 3.0, 100.0)
    np.testing.assert_allclose(weights, [1.0, np.exp(3.0), np.exp(-3.0), 100.0], rtol=1e-6)


def test_value_loss_by_hand():
    critic = constant_critic([1.0, 3.0], jax.random.key(0))  # min Q = 1
    value = eqxrl.ValueFunction(3, (4,), key=jax.random.key(1))
    value = jax.tree.map(lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, value)
    value = eqx.tree_at(lambda v: v.net.layers[-1].bias, value, jnp.array([0.5]))
    batch = make_batch(jax.random.key(2), n=4)
    loss, aux = iql.value_loss(value, critic, batch, 0.7)
    np.testing.assert_allclose(loss, 0.7 * 0.5**2, rtol=1e-6)  # Q − V = +0.5 > 0: weight 0.7
    np.testing.assert_allclose(aux["v_mean"], 0.5, rtol=1e-6)
    high = eqx.tree_at(lambda v: v.net.layers[-1].bias, value, jnp.array([2.0]))
    np.testing.assert_allclose(iql.value_loss(high, critic, batch, 0.7)[0], 0.3 * 1.0, rtol=1e-6)


def test_actor_loss_is_weighted_gaussian_log_likelihood():
    actor = eqxrl.GaussianPolicy(
        3,
        2,
        (8,),
        tanh_squash=False,
        state_dependent_std=False,
        log_std_min=-5.0,
        key=jax.random.key(0),
    )
    actor = jax.tree.map(lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, actor)
    mean, log_std = jnp.array([0.1, -0.2]), jnp.array([-0.5, 0.3])
    actor = eqx.tree_at(lambda a: (a.mean_head.bias, a.log_std), actor, (mean, log_std))
    batch = make_batch(jax.random.key(1), n=4)
    weights = jnp.array([1.0, 2.0, 0.5, 100.0])
    loss, aux = iql.actor_loss(actor, batch.obs, batch.action, weights)
    a, m, s = np.asarray(batch.action), np.asarray(mean), np.exp(np.asarray(log_std))
    log_prob = np.sum(-0.5 * ((a - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi), axis=1)
    np.testing.assert_allclose(loss, -np.mean(np.asarray(weights) * log_prob), rtol=1e-5)
    np.testing.assert_allclose(aux["log_prob"], np.mean(log_prob), rtol=1e-5)


def test_td_target_bootstraps_through_truncation_only():
    target = eqxrl.td_target(
        jnp.array([1.0, 2.0]), jnp.array([False, True]), jnp.array([10.0, 10.0]), 0.9
    )
    np.testing.assert_allclose(target, [10.0, 2.0])


def test_critic_regresses_onto_the_new_value_of_next_obs():
    state = iql.init(jax.random.key(0), SPEC, SMALL)
    batch = make_batch(jax.random.key(1))
    new, metrics = eqxrl.jit(iql.update)(state, batch, jax.random.key(2), SMALL)
    next_v = jax.vmap(new.value.model)(batch.next_obs)
    target = eqxrl.td_target(batch.reward, batch.terminated, next_v, 0.99)
    np.testing.assert_allclose(metrics["critic/target_q_mean"], jnp.mean(target), rtol=1e-5)
    expected, _ = eqxrl.critic_td_loss(state.critic.model, batch.obs, batch.action, target)
    np.testing.assert_allclose(metrics["critic/loss"], expected, rtol=1e-5)


def test_actor_learning_rate_decays_to_zero_by_cosine():
    config = dataclasses.replace(SMALL, run=dataclasses.replace(SMALL.run, total_updates=2))
    state = iql.init(jax.random.key(0), SPEC, config)
    assert float(state.actor.opt_state.hyperparams["learning_rate"]) == pytest.approx(3e-4)
    step = eqxrl.jit(lambda s, b, k: iql.update(s, b, k, config))
    batch = make_batch(jax.random.key(1))
    moved = []
    for i in range(4):
        new, _ = step(state, batch, jax.random.key(i))
        moved.append(
            float(
                jnp.max(jnp.abs(new.actor.model.mean_head.bias - state.actor.model.mean_head.bias))
            )
        )
        state = new
    # Adam's first step moves each parameter by ≈ lr; the decay factors are 1, 0.5, 0, 0.
    np.testing.assert_allclose(moved[0], 3e-4, rtol=1e-3)
    assert 0 < moved[1] < moved[0] and moved[2] == moved[3] == 0.0


# ---------------------------------------------------------------- update and act
def test_update_compiles_once_and_learns_something():
    state = iql.init(jax.random.key(0), SPEC, SMALL)
    update = eqx.debug.assert_max_traces(iql.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    batch = make_batch(jax.random.key(1))
    first = None
    for i in range(30):
        state, metrics = step(state, batch, jax.random.key(i))
        first = first if first is not None else {k: float(v) for k, v in metrics.items()}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["critic/loss"]) < first["critic/loss"]
    assert float(metrics["value/loss"]) < first["value/loss"]
    # The actor's loss moves with its weights; the likelihood of the batch's actions must rise.
    assert float(metrics["actor/log_prob"]) > first["actor/log_prob"]
    assert int(state.critic.step) == int(state.actor.step) == int(state.value.step) == 30
    assert {"actor/weight_mean", "actor/advantage_mean", "value/v_mean"} <= set(metrics)


def test_sweep_of_expectile_and_temperature_is_one_program():
    settings = [(0.5, 1.0), (0.7, 3.0), (0.9, 10.0)]
    states = eqxrl.tree_stack(
        [
            iql.init(
                jax.random.key(0), SPEC, dataclasses.replace(SMALL, expectile=e, temperature=t)
            )
            for e, t in settings
        ]
    )
    batch = make_batch(jax.random.key(1))
    update = eqx.debug.assert_max_traces(iql.update, max_traces=1)
    sweep = eqxrl.jit(jax.vmap(lambda s, k: update(s, batch, k, SMALL), in_axes=(0, None)))
    _, metrics = sweep(states, jax.random.key(2))
    # Same networks and batch: a higher expectile penalises V below Q more, so the losses differ;
    # a higher β makes the advantage weights more extreme.
    assert len(set(np.asarray(metrics["value/loss"]).round(6).tolist())) == 3
    assert np.all(np.diff(np.asarray(metrics["actor/weight_max"])) > 0)


def test_reward_with_trailing_axis_fails_at_trace_time():
    state = iql.init(jax.random.key(0), SPEC, SMALL)
    bad = eqx.tree_at(lambda b: b.reward, make_batch(jax.random.key(1)), jnp.zeros((16, 1)))
    with pytest.raises(ValueError, match=r"batch.reward has shape \(16, 1\), expected \(16,\)"):
        eqxrl.jit(lambda s, b: iql.update(s, b, jax.random.key(0), SMALL))(state, bad)


def test_act_checks_observations_and_stays_in_bounds():
    state = iql.init(jax.random.key(0), SPEC, SMALL)
    # A wide std so that unclipped samples would leave [-1, 1].
    state = eqx.tree_at(lambda s: s.actor.model.log_std, state, jnp.full((2,), 1.5))
    obs = jnp.ones((64, 3))
    a = iql.act(state, obs, jax.random.key(1))
    assert a.shape == (64, 2) and jnp.all(jnp.abs(a) <= 1) and jnp.any(jnp.abs(a) == 1)
    mode = iql.act(state, obs, jax.random.key(1), deterministic=True)
    np.testing.assert_array_equal(mode, iql.act(state, obs, jax.random.key(2), deterministic=True))
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        iql.act(state, jnp.ones((5, 4)), jax.random.key(1))


@pytest.mark.slow  # 10 s; the default run stays within ~6 minutes on 2 cores
def test_vmap_over_seeds_equals_separate_runs():
    batch = make_batch(jax.random.key(1))
    assert_vmap_equals_separate_runs(iql, SPEC, SMALL, batch, updates=2, seeds=4)


# ---------------------------------------------------------------- the script
def test_cli_trains_on_a_dataset_and_resume_extends_the_run(tmp_path, capsys):
    data, run_dir = pendulum_dataset_file(tmp_path / "d.hdf5"), str(tmp_path / "run")
    eqxrl.cli(iql.main, iql.Config, [
        "--dataset", data, "--total-updates", "20", "--updates-per-call", "10",
        "--batch-size", "16", "--hidden-dims", "16", "16", "--eval-interval", "20",
        "--eval-episodes", "1", "--log-interval", "10", "--run-dir", run_dir,
        "--no-progress", "--no-tensorboard",
    ])
    assert "iql on Pendulum-v1 (seed 0): done" in capsys.readouterr().out
    eqxrl.cli(iql.main, iql.Config, ["--resume", run_dir, "--total-updates", "30",
                                     "--no-progress"])
    with open(f"{run_dir}/summary.json") as f:
        summary = json.load(f)
    assert summary["steps"] == 30 and summary["status"] == "done"
    assert summary["final_normalized_score"] is not None
    with open(f"{run_dir}/config.json") as f:  # the run kept IQL's preset and the dataset's env
        run = json.load(f)["config"]["run"]
    assert run["preset"] == "locomotion" and run["env_id"] == "Pendulum-v1"


def test_main_without_a_dataset_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--dataset is required"):
        iql.main(iql.Config(run=OfflineRun(run_dir=str(tmp_path / "run"))))
    assert not (tmp_path / "run").exists()

"""TD3: losses by hand, the delayed actor, exploration, compile-once and vmap over seeds."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import EnvSpec
from eqxrl.algorithms import td3

from .conftest import (
    assert_trees_equal,
    assert_vmap_equals_separate_runs,
    constant_critic,
    make_batch,
)

SPEC = EnvSpec(
    jax.ShapeDtypeStruct((3,), np.dtype("float32")),
    (2,),
    action_low=(-1.0, -1.0),
    action_high=(1.0, 1.0),
)
SMALL = td3.Config(run=eqxrl.OnlineRun(batch_size=16, buffer_size=1000), hidden_dims=(32, 32))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("policy_delay", 0, r"--policy-delay must be >= 1, got 0"),
        ("policy_noise", -0.1, r"--policy-noise must be a finite number >= 0, got -0.1"),
        ("exploration_noise", float("nan"), r"--exploration-noise must be a finite number >= 0"),
        ("tau", 1.5, r"--tau must be in \(0, 1\], got 1.5"),
        ("actor_lr", 0.0, r"--actor-lr must be a finite number > 0, got 0.0"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


def test_paper_defaults():
    config = td3.Config()
    assert (config.policy_noise, config.noise_clip, config.policy_delay) == (0.2, 0.5, 2)
    assert config.exploration_noise == 0.1 and config.run.start_steps == 25_000


def test_critic_layer_norm_is_an_mlp_option():
    state = td3.init(jax.random.key(0), SPEC, dataclasses.replace(SMALL, critic_layer_norm=True))
    assert all(m.net.norms is not None for m in state.critic.model.members)
    assert state.actor.model.net.norms is None
    with pytest.raises(ValueError, match=r"--critic-layer-norm is an option of the plain MLP"):
        td3.Config(net=eqxrl.Networks(network="simba"), critic_layer_norm=True)


def test_critic_and_actor_losses_by_hand():
    critic = constant_critic([1.0, 3.0], jax.random.key(0))
    batch = make_batch(jax.random.key(1), n=4)
    loss, aux = eqxrl.critic_td_loss(critic, batch.obs, batch.action, jnp.arange(4.0))
    # critic 1: mean((1-y)^2) = 1.5; critic 2: mean((3-y)^2) = 3.5
    np.testing.assert_allclose(loss, 5.0, rtol=1e-6)
    actor = eqxrl.DeterministicPolicy(3, 2, (8,), key=jax.random.key(2))
    loss, aux = td3.actor_loss(actor, critic, batch.obs)
    np.testing.assert_allclose(loss, -1.0, rtol=1e-6)  # −Q_1, the first critic only
    np.testing.assert_allclose(aux["q_mean"], 1.0, rtol=1e-6)


def test_smoothed_target_action_is_clipped_twice():
    actor = lambda obs: jnp.full((2,), 0.9)
    action = eqxrl.smoothed_target_action(actor, jnp.zeros((1000, 3)), jax.random.key(0), 10.0, 0.5)
    noise = action - 0.9
    assert float(jnp.max(action)) == 1.0  # μ + ε clipped to the action box
    np.testing.assert_allclose(float(jnp.min(noise)), -0.5, rtol=1e-6)  # ε clipped to ±c


def test_actor_and_targets_move_every_policy_delay_steps():
    state = td3.init(jax.random.key(0), SPEC, SMALL)
    update = eqx.debug.assert_max_traces(td3.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    batch = make_batch(jax.random.key(1))
    new, metrics = step(state, batch, jax.random.key(2))  # step 1: critics only
    assert_trees_equal(new.actor, state.actor)
    assert_trees_equal(new.target_critic, state.target_critic)
    assert int(new.critic.step) == 1 and float(metrics["actor/loss"]) == 0.0
    newer, metrics = step(new, batch, jax.random.key(3))  # step 2: actor and targets too
    assert int(newer.actor.step) == 1 and int(newer.critic.step) == 2
    assert float(metrics["actor/loss"]) != 0.0
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         eqx.filter(newer.target_actor, eqx.is_inexact_array),
                         eqx.filter(new.target_actor, eqx.is_inexact_array))
    assert any(jax.tree.leaves(moved))
    third, metrics3 = step(newer, batch, jax.random.key(4))  # step 3: the actor waits again
    assert_trees_equal(third.actor, newer.actor)
    assert float(metrics3["actor/loss"]) == float(metrics["actor/loss"])  # latest actor update


def test_act_explores_only_when_asked():
    state = td3.init(jax.random.key(0), SPEC, SMALL)
    obs = jnp.ones((5, 3))
    mode = td3.act(state, obs, jax.random.key(1), deterministic=True)
    np.testing.assert_array_equal(mode, td3.act(state, obs, jax.random.key(2), deterministic=True))
    noisy = td3.act(state, obs, jax.random.key(1))
    assert noisy.shape == (5, 2) and jnp.all(jnp.abs(noisy) <= 1)
    assert not np.allclose(noisy, mode)
    with pytest.raises(ValueError, match=r"obs has shape \(3,\), which is one observation"):
        td3.act(state, jnp.ones(3), jax.random.key(1))


def test_short_run_from_the_command_line(tmp_path):
    code = None
    try:
        eqxrl.cli(td3.main, td3.Config, [
            "--env-id", "Pendulum-v1", "--total-steps", "250", "--start-steps", "100",
            "--batch-size", "32", "--buffer-size", "500", "--hidden-dims", "32", "32",
            "--eval-interval", "250", "--eval-episodes", "1", "--log-interval", "50",
            "--run-dir", str(tmp_path / "td3"), "--no-progress",
        ])
    except SystemExit as exit:
        code = exit.code
    assert code is None
    metrics = eqxrl.run.read_metrics(str(tmp_path / "td3" / "train.csv"))
    assert {"critic/loss", "actor/loss", "actor/q_mean"} <= set(metrics)


@pytest.mark.slow  # 11 s; the default run stays within ~6 minutes on 2 cores
def test_vmap_over_seeds_equals_separate_runs():
    batch = make_batch(jax.random.key(1))
    assert_vmap_equals_separate_runs(td3, SPEC, SMALL, batch, updates=3, seeds=3)

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import Dataset, EnvSpec, Normalizer, OfflineRun
from eqxrl.algorithms import td3_bc

from .conftest import (
    assert_trees_equal,
    assert_vmap_equals_separate_runs,
    constant_critic,
    make_batch,
    pendulum_dataset_file,
)

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,),
               action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
SMALL = td3_bc.Config(run=OfflineRun(dataset="unused.hdf5", batch_size=16), hidden_dims=(32, 32))
UPDATE = eqxrl.jit(td3_bc.update)
NORM = Normalizer(jnp.array([1.0, -2.0, 0.5]), jnp.array([2.0, 0.5, 3.0]))


# ---------------------------------------------------------------- config and init
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("alpha", -1.0, r"--alpha must be a finite number >= 0, got -1.0"),
        ("policy_delay", 0, r"--policy-delay must be >= 1, got 0"),
        ("noise_clip", -0.5, r"--noise-clip must be a finite number >= 0, got -0.5"),
        ("critic_lr", 0.0, r"--critic-lr must be a finite number > 0, got 0.0"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


def test_init_normalises_with_the_dataset_statistics_or_not_at_all():
    state = td3_bc.init(jax.random.key(0), SPEC, SMALL)
    obs = jnp.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(state.obs_norm(obs), obs)  # no dataset: the identity
    assert int(state.td3.step) == 0
    batch = make_batch(jax.random.key(1), n=64)
    state = td3_bc.init(jax.random.key(0), SPEC, SMALL, dataset=Dataset(batch))
    data_obs = np.asarray(batch.obs)
    np.testing.assert_allclose(state.obs_norm.mean, data_obs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.obs_norm.std, data_obs.std(0), rtol=1e-5)
    off = dataclasses.replace(SMALL, normalize_obs=False)
    state = td3_bc.init(jax.random.key(0), SPEC, off, dataset=Dataset(batch))
    np.testing.assert_array_equal(state.obs_norm(obs), obs)


# ---------------------------------------------------------------- losses by hand
@pytest.mark.parametrize("q1", [2.0, -4.0])
def test_actor_loss_normalises_q_by_its_mean_absolute_value(q1):
    critic = constant_critic([q1, 7.0], jax.random.key(0))  # only the first critic is used
    actor = eqxrl.DeterministicPolicy(3, 2, (8,), key=jax.random.key(1))
    batch = make_batch(jax.random.key(2), n=4)
    loss, aux = td3_bc.actor_loss(actor, critic, batch.obs, batch.action, 2.5)
    pi = jax.vmap(actor)(batch.obs)
    bc = float(jnp.mean((pi - batch.action) ** 2))
    lam = 2.5 / abs(q1)
    np.testing.assert_allclose(aux["lambda"], lam, rtol=1e-6)
    np.testing.assert_allclose(loss, -lam * q1 + bc, rtol=1e-5)


def test_actor_loss_treats_lambda_as_a_constant():
    critic = eqxrl.Ensemble(lambda k: eqxrl.QFunction(3, 2, (8,), key=k), 2, key=jax.random.key(0))
    actor = eqxrl.DeterministicPolicy(3, 2, (8,), key=jax.random.key(1))
    batch = make_batch(jax.random.key(2), n=8)
    q = eqxrl.ensemble_q(critic, batch.obs, jax.vmap(actor)(batch.obs))[0]
    lam = 2.5 / jnp.mean(jnp.abs(q))

    def fixed_lambda(actor):
        pi = jax.vmap(actor)(batch.obs)
        q = eqxrl.ensemble_q(critic, batch.obs, pi)[0]
        return -lam * jnp.mean(q) + jnp.mean((pi - batch.action) ** 2)

    grad = eqx.filter_grad(lambda a: td3_bc.actor_loss(a, critic, batch.obs, batch.action, 2.5)[0])
    expected = eqx.filter_grad(fixed_lambda)(actor)
    for a, b in zip(jax.tree.leaves(grad(actor)), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_target_policy_smoothing_noise_is_clipped():
    actor = eqxrl.DeterministicPolicy(3, 2, (8,), key=jax.random.key(1))
    obs = jax.random.normal(jax.random.key(2), (256, 3))
    mu = jax.vmap(actor)(obs)
    a = eqxrl.smoothed_target_action(actor, obs, jax.random.key(3), 100.0, 0.5)
    assert jnp.all(jnp.abs(a) <= 1.0)
    diff = jnp.abs(a - mu)
    assert jnp.all(diff <= 0.5 + 1e-6) and jnp.any(jnp.abs(a) == 1.0)
    same = eqxrl.smoothed_target_action(actor, obs, jax.random.key(3), 0.0, 0.5)
    np.testing.assert_allclose(same, mu, rtol=1e-6)


# ---------------------------------------------------------------- update and act
def test_actor_and_targets_move_only_every_policy_delay_steps():
    state = td3_bc.init(jax.random.key(0), SPEC, SMALL)
    batch = make_batch(jax.random.key(1))
    one, _ = UPDATE(state, batch, jax.random.key(2), SMALL)
    assert int(one.td3.step) == 1 and int(one.td3.critic.step) == 1
    assert_trees_equal(one.td3.actor, state.td3.actor)
    assert_trees_equal(one.td3.target_critic, state.td3.target_critic)
    two, metrics = UPDATE(one, batch, jax.random.key(3), SMALL)
    assert int(two.td3.actor.step) == 1  # the actor's first optimiser step, on update 2
    assert not np.array_equal(two.td3.actor.model.net.layers[0].weight,
                              one.td3.actor.model.net.layers[0].weight)
    assert not np.array_equal(two.td3.target_actor.net.layers[0].weight,
                              one.td3.target_actor.net.layers[0].weight)
    # The actor's metrics are those of its latest update, also on the steps that skip it.
    expected, _ = td3_bc.actor_loss(one.td3.actor.model, two.td3.critic.model, batch.obs,
                                    batch.action, 2.5)
    np.testing.assert_allclose(metrics["actor/loss"], expected, rtol=1e-5)
    three, later = UPDATE(two, batch, jax.random.key(4), SMALL)
    assert int(three.td3.actor.step) == 1
    for name, value in metrics.items():
        if name.startswith("actor/"):
            np.testing.assert_array_equal(later[name], value)


def test_update_normalises_observations_with_the_state_statistics():
    state = td3_bc.init(jax.random.key(0), SPEC, SMALL)
    batch = make_batch(jax.random.key(1))
    normed = dataclasses.replace(state, obs_norm=NORM)
    by_state, m1 = UPDATE(normed, batch, jax.random.key(2), SMALL)
    pre = dataclasses.replace(batch, obs=NORM(batch.obs), next_obs=NORM(batch.next_obs))
    by_hand, m2 = UPDATE(state, pre, jax.random.key(2), SMALL)
    np.testing.assert_allclose(m1["critic/loss"], m2["critic/loss"], rtol=1e-5)
    inexact = lambda tree: jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    for a, b in zip(inexact(by_state.td3.critic), inexact(by_hand.td3.critic), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_act_uses_the_normaliser_and_checks_observations():
    state = dataclasses.replace(td3_bc.init(jax.random.key(0), SPEC, SMALL), obs_norm=NORM)
    obs = jax.random.normal(jax.random.key(1), (5, 3)) * 3
    a = td3_bc.act(state, obs, jax.random.key(1))
    np.testing.assert_allclose(a, jax.vmap(state.td3.actor.model)(NORM(obs)), rtol=1e-6)
    assert not np.allclose(a, jax.vmap(state.td3.actor.model)(obs))
    assert a.shape == (5, 2) and jnp.all(jnp.abs(a) <= 1)
    np.testing.assert_array_equal(a, td3_bc.act(state, obs, jax.random.key(2), deterministic=True))
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        td3_bc.act(state, jnp.ones((5, 4)), jax.random.key(1))


def test_update_compiles_once_and_learns_something():
    state = td3_bc.init(jax.random.key(0), SPEC, SMALL)
    update = eqx.debug.assert_max_traces(td3_bc.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    batch = make_batch(jax.random.key(1))
    losses = []
    for i in range(30):  # both the delayed and the skipped actor step, one program
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["critic/loss"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert losses[-1] < losses[0]
    assert int(state.td3.step) == 30 and int(state.td3.actor.step) == 15


@pytest.mark.slow  # 12 s; the default run stays within ~6 minutes on 2 cores
def test_vmap_over_seeds_equals_separate_runs():
    batch = make_batch(jax.random.key(1))
    with_norm = lambda k, spec, config: dataclasses.replace(
        td3_bc.init(k, spec, config), obs_norm=NORM
    )  # a normaliser that is not the identity
    assert_vmap_equals_separate_runs(td3_bc, SPEC, SMALL, batch, updates=3, seeds=4,
                                     init=with_norm)


# ---------------------------------------------------------------- the script
def test_main_keeps_the_dataset_statistics_through_resume(tmp_path):
    path = pendulum_dataset_file(tmp_path / "d.hdf5", loc=3.0, scale=2.0)  # far from N(0, 1)
    obs = np.asarray(eqxrl.load_dataset(path)[0].data.obs)
    run_dir = str(tmp_path / "run")
    run = OfflineRun(dataset=path, total_updates=20, updates_per_call=10, batch_size=16,
                     eval_interval=20, eval_episodes=1, log_interval=10, run_dir=run_dir,
                     tensorboard=False, progress=False)
    summary = td3_bc.main(dataclasses.replace(SMALL, run=run, hidden_dims=(16, 16)))
    assert summary["steps"] == 20 and summary["final_normalized_score"] is not None
    summary = td3_bc.main(td3_bc.Config(run=OfflineRun(resume=run_dir, total_updates=30,
                                                       progress=False)))
    assert summary["steps"] == 30 and summary["status"] == "done"
    loaded = eqxrl.load_run(run_dir)
    assert loaded.step == 30 and int(loaded.state.td3.step) == 30
    np.testing.assert_allclose(loaded.state.obs_norm.mean, obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(loaded.state.obs_norm.std, obs.std(0), rtol=1e-5)
    with open(f"{run_dir}/train.csv") as f:
        assert "actor/bc_mse" in f.readline()
    with open(f"{run_dir}/config.json") as f:
        assert json.load(f)["config"]["run"]["total_updates"] == 30

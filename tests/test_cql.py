import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import EnvSpec, OfflineRun
from eqxrl.algorithms import cql

from .conftest import assert_vmap_equals_separate_runs, make_batch, pendulum_dataset_file

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,),
               action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
SMALL = cql.Config(run=OfflineRun(dataset="unused.hdf5", batch_size=16), hidden_dims=(32, 32),
                   num_sampled_actions=4)
LAGRANGE = dataclasses.replace(SMALL, cql_lagrange=True, cql_target_gap=1.0)
UPDATE = eqxrl.jit(cql.update)  # shared, so tests with the same config compile it once


def inexact_leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))


def np_logsumexp(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


# ---------------------------------------------------------------- config and init
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cql_alpha", -1.0, r"--cql-alpha must be a finite number >= 0, got -1.0"),
        ("num_sampled_actions", 0, r"--num-sampled-actions must be >= 1, got 0"),
        ("cql_temperature", 0.0, r"--cql-temperature must be a finite number > 0, got 0.0"),
        ("cql_lagrange_lr", -1.0, r"--cql-lagrange-lr must be a finite number > 0, got -1.0"),
        ("discount", 1.5, r"--discount must be in \[0, 1\], got 1.5"),
        ("log_std_min", 3.0, r"--log-std-min \(3.0\) must be finite and <= --log-std-max"),
        ("critic_dropout", 0.01, r"--critic-dropout must be 0 for CQL, got 0.01"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


def test_init_rejects_discrete_and_unscaled_actions():
    discrete = EnvSpec(SPEC.observation, (), discrete=True, num_actions=3)
    with pytest.raises(ValueError, match=r"continuous \(Box\) action space.*Discrete\(3\)"):
        cql.init(jax.random.key(0), discrete, SMALL)
    wide = dataclasses.replace(SPEC, action_low=(-2.0, -2.0), action_high=(2.0, 2.0))
    with pytest.raises(ValueError, match="RescaleAction"):
        cql.init(jax.random.key(0), wide, SMALL)


# ---------------------------------------------------------------- losses by hand
def test_cql_gap_matches_a_direct_numpy_computation():
    critic = eqxrl.Ensemble(lambda k: eqxrl.QFunction(3, 2, (8,), key=k), 2, key=jax.random.key(0))
    batch = make_batch(jax.random.key(1), n=3)
    sampled = jax.random.uniform(jax.random.key(2), (3, 5, 2), minval=-1, maxval=1)
    log_density = jax.random.normal(jax.random.key(3), (3, 5))
    q_data = eqxrl.ensemble_q(critic, batch.obs, batch.action)
    gap = cql.cql_gap(critic, batch.obs, q_data, sampled, log_density, 0.5)
    # One critic, one state, one action at a time.
    q = np.array([[[float(critic.member(j)(batch.obs[b], sampled[b, k])) for k in range(5)]
                   for b in range(3)] for j in range(2)])
    q_d = np.array([[float(critic.member(j)(batch.obs[b], batch.action[b])) for b in range(3)]
                    for j in range(2)])
    expected = np.mean(0.5 * np_logsumexp((q - np.asarray(log_density)[None]) / 0.5, axis=2),
                       axis=1) - np.mean(q_d, axis=1)
    np.testing.assert_allclose(gap, expected, rtol=1e-5, atol=1e-6)


def test_critic_loss_is_td_error_plus_weighted_gap():
    critic = eqxrl.Ensemble(lambda k: eqxrl.QFunction(3, 2, (8,), key=k), 2, key=jax.random.key(0))
    batch = make_batch(jax.random.key(1), n=4)
    sampled = jax.random.uniform(jax.random.key(2), (4, 6, 2), minval=-1, maxval=1)
    log_density = jnp.full((4, 6), 2 * np.log(0.5), jnp.float32)
    target = jnp.array([0.0, 1.0, 2.0, 3.0])
    loss, aux = cql.critic_loss(critic, batch, target, sampled, log_density, jnp.asarray(5.0),
                                2.0, 1.0)
    q = eqxrl.ensemble_q(critic, batch.obs, batch.action)
    gap = cql.cql_gap(critic, batch.obs, q, sampled, log_density, 1.0)
    td = float(jnp.sum(jnp.mean((q - target[None]) ** 2, axis=1)))
    np.testing.assert_allclose(aux["td_loss"], td, rtol=1e-5)
    np.testing.assert_allclose(loss, td + 5.0 * float(jnp.sum(gap - 2.0)), rtol=1e-5)
    np.testing.assert_allclose(aux["cql_gap"], jnp.mean(gap), rtol=1e-5)


def test_update_uses_uniform_and_policy_importance_weights():
    """Rebuild the update's sampled actions and log-densities by hand from the same keys."""
    state = cql.init(jax.random.key(0), SPEC, SMALL)
    batch = make_batch(jax.random.key(1))
    key = jax.random.key(2)
    _, metrics = UPDATE(state, batch, key, SMALL)

    @eqxrl.jit
    def by_hand(state, batch, key):
        _, k_penalty = jax.random.split(key)  # update's split: SAC's key, the penalty's key
        k_random, k_curr, k_later = jax.random.split(k_penalty, 3)
        n, num = 16, SMALL.num_sampled_actions
        random = jax.random.uniform(k_random, (n, num, 2), minval=-1.0, maxval=1.0)
        curr, curr_lp = eqxrl.sample_actions(state.sac.actor.model, batch.obs, k_curr, num)
        later, later_lp = eqxrl.sample_actions(state.sac.actor.model, batch.next_obs, k_later, num)
        log_uniform = jnp.full((n, num), np.log(0.5**2), jnp.float32)  # density 1/2 per dim
        sampled = jnp.concatenate([random, curr, later], axis=1)
        log_density = jnp.concatenate([log_uniform, curr_lp, later_lp], axis=1)
        q = eqxrl.ensemble_q(state.sac.critic.model, batch.obs, batch.action)
        return cql.cql_gap(state.sac.critic.model, batch.obs, q, sampled, log_density, 1.0)

    np.testing.assert_allclose(metrics["critic/cql_gap"], jnp.mean(by_hand(state, batch, key)),
                               rtol=1e-4)


def test_multiplier_loss_raises_alpha_prime_when_the_gap_is_too_large():
    mult = eqxrl.LogScalar(jnp.log(jnp.asarray(2.0)))
    loss, aux = cql.multiplier_loss(mult, jnp.asarray(7.0), 5.0, 4.0)
    np.testing.assert_allclose(loss, -2.0 * 5.0 * 3.0, rtol=1e-6)
    np.testing.assert_allclose(aux["value"], 2.0, rtol=1e-6)
    grad = eqx.filter_grad(lambda m: cql.multiplier_loss(m, jnp.asarray(7.0), 5.0, 4.0)[0])(mult)
    assert float(grad.log_value) < 0  # descent increases log α'
    grad = eqx.filter_grad(lambda m: cql.multiplier_loss(m, jnp.asarray(1.0), 5.0, 4.0)[0])(mult)
    assert float(grad.log_value) > 0


def test_lagrange_moves_the_multiplier_and_fixed_alpha_does_not():
    batch = make_batch(jax.random.key(1))
    fixed = cql.init(jax.random.key(0), SPEC, SMALL)
    fixed, metrics = UPDATE(fixed, batch, jax.random.key(2), SMALL)
    assert float(fixed.cql_multiplier.model()) == 1.0 and "cql_multiplier/value" not in metrics
    tuned = cql.init(jax.random.key(0), SPEC, LAGRANGE)
    np.testing.assert_allclose(tuned.cql_target_gap, 1.0)
    tuned, metrics = UPDATE(tuned, batch, jax.random.key(2), LAGRANGE)
    gap = float(metrics["critic/cql_gap"])
    # Adam's first step moves log α' by ≈ lr against the sign of the gradient −α'·α·(gap − target).
    expected = np.exp(np.sign(gap - 1.0) * LAGRANGE.cql_lagrange_lr)
    np.testing.assert_allclose(tuned.cql_multiplier.model(), expected, rtol=1e-5)


# ---------------------------------------------------------------- update and act
def test_update_compiles_once_and_learns_something():
    state = cql.init(jax.random.key(0), SPEC, LAGRANGE)
    update = eqx.debug.assert_max_traces(cql.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, LAGRANGE))
    batch = make_batch(jax.random.key(1))
    losses = []
    for i in range(30):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["critic/td_loss"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert losses[-1] < losses[0]
    assert int(state.sac.critic.step) == int(state.cql_multiplier.step) == 30
    assert {"critic/cql_gap", "actor/entropy", "temperature/value",
            "cql_multiplier/value"} <= set(metrics)


def test_sweep_of_cql_alpha_is_one_program():
    alphas = [0.0, 1.0, 10.0]
    states = eqxrl.tree_stack([cql.init(jax.random.key(0), SPEC,
                                        dataclasses.replace(SMALL, cql_alpha=a)) for a in alphas])
    batch = make_batch(jax.random.key(1))
    update = eqx.debug.assert_max_traces(cql.update, max_traces=1)
    sweep = eqxrl.jit(jax.vmap(lambda s, k: update(s, batch, k, SMALL)[1], in_axes=(0, None)))
    metrics = sweep(states, jax.random.key(2))
    # Same critics and samples: the loss is td + α·Σ gap, linear in α.
    td, gap = np.asarray(metrics["critic/td_loss"]), np.asarray(metrics["critic/cql_gap"])
    np.testing.assert_allclose(metrics["critic/loss"], td + np.array(alphas) * 2 * gap, rtol=1e-5)


def test_act_checks_observations_and_stays_in_bounds():
    state = cql.init(jax.random.key(0), SPEC, SMALL)
    obs = jnp.ones((5, 3))
    a = cql.act(state, obs, jax.random.key(1))
    assert a.shape == (5, 2) and jnp.all(jnp.abs(a) <= 1)
    mode = cql.act(state, obs, jax.random.key(1), deterministic=True)
    np.testing.assert_array_equal(mode, cql.act(state, obs, jax.random.key(2), deterministic=True))
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        cql.act(state, jnp.ones((5, 4)), jax.random.key(1))


@pytest.mark.slow  # 10 s; SAC, TD3 and IQL keep theirs in the default suite (~10 min)
def test_vmap_over_seeds_equals_separate_runs():
    batch = make_batch(jax.random.key(1))
    assert_vmap_equals_separate_runs(cql, SPEC, LAGRANGE, batch, updates=2, seeds=4)


# ---------------------------------------------------------------- the script
def test_main_trains_lagrange_cql_on_a_dataset(tmp_path):
    run = OfflineRun(dataset=pendulum_dataset_file(tmp_path / "d.hdf5"), total_updates=20,
                     updates_per_call=10, batch_size=16, eval_interval=20, eval_episodes=1,
                     log_interval=10, run_dir=str(tmp_path / "run"), tensorboard=False,
                     progress=False)
    config = dataclasses.replace(LAGRANGE, run=run, hidden_dims=(16, 16))
    summary = cql.main(config)
    assert summary["steps"] == 20 and summary["status"] == "done"
    assert summary["env_id"] == "Pendulum-v1" and summary["final_normalized_score"] is not None
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["config"]["cql_lagrange"] is True

import dataclasses
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import EnvSpec
from eqxrl.algorithms import tqc

from .conftest import assert_trees_equal, assert_vmap_equals_separate_runs, make_batch

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,), action_low=(-1.0, -1.0),
               action_high=(1.0, 1.0))
SMALL = tqc.Config(run=eqxrl.OnlineRun(batch_size=16, buffer_size=1000), hidden_dims=(16, 16),
                   critic_hidden_dims=(32, 32), num_critics=3, num_quantiles=5, drop_per_critic=1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- the quantile blocks by hand
def test_quantile_midpoints():
    np.testing.assert_allclose(eqxrl.quantile_midpoints(4), [0.125, 0.375, 0.625, 0.875])


def test_quantile_huber_loss_by_hand():
    quantiles = jnp.array([[0.0, 1.0]])  # τ = 0.25, 0.75
    targets = jnp.array([[0.5, 3.0]])
    # u = y − θ: (θ0: 0.5, 3.0), (θ1: −0.5, 2.0); Huber(κ=1): 0.125, 2.5, 0.125, 1.5
    # weights |τ − 1{u<0}|: θ0: 0.25, 0.25; θ1: |0.75 − 1| = 0.25, 0.75
    expected = (0.25 * 0.125 + 0.25 * 2.5 + 0.25 * 0.125 + 0.75 * 1.5) / 4
    np.testing.assert_allclose(eqxrl.quantile_huber_loss(quantiles, targets), expected, rtol=1e-6)
    # κ = 2: every |u| ≤ 2 is quadratic (½u²), 3.0 is linear: 2·(3 − 1) = 4; all divided by κ
    expected2 = (0.25 * 0.125 + 0.25 * 4.0 + 0.25 * 0.125 + 0.75 * 2.0) / 4 / 2
    np.testing.assert_allclose(eqxrl.quantile_huber_loss(quantiles, targets, 2.0), expected2,
                               rtol=1e-6)


def test_truncated_quantiles_pools_sorts_and_drops_the_top():
    z = jnp.array([[[3.0, 9.0, 1.0]], [[7.0, 2.0, 8.0]]])  # (critics=2, batch=1, quantiles=3)
    np.testing.assert_allclose(eqxrl.truncated_quantiles(z, 1), [[1.0, 2.0, 3.0, 7.0]])
    np.testing.assert_allclose(eqxrl.truncated_quantiles(z, 0), [[1, 2, 3, 7, 8, 9]])
    with pytest.raises(ValueError, match=r"drop_per_critic must be in \[0, 2\] for 3 quantiles"):
        eqxrl.truncated_quantiles(z, 3)


def test_quantile_td_target_bootstraps_through_truncation_only():
    y = eqxrl.quantile_td_target(jnp.array([1.0, 2.0]), jnp.array([False, True]),
                                 jnp.array([[10.0, 20.0], [10.0, 20.0]]), 0.5)
    np.testing.assert_allclose(y, [[6.0, 11.0], [2.0, 2.0]])


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("drop_per_critic", 5, r"--drop-per-critic \(5\) must be < --num-quantiles \(5\)"),
        ("num_quantiles", 0, r"--num-quantiles must be >= 1, got 0"),
        ("tau", 0.0, r"--tau must be in \(0, 1\], got 0.0"),
        ("drop_per_critic", -1, r"--drop-per-critic must be >= 0, got -1"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


# ---------------------------------------------------------------- losses by hand
def constant_quantile_critic(rows):
    """An ensemble of quantile critics whose member j outputs rows[j] for every input."""
    ens = eqxrl.Ensemble(lambda k: eqxrl.QuantileQFunction(3, 2, len(rows[0]), (4,), key=k),
                         len(rows), key=jax.random.key(0))  # members as a tuple
    ens = jax.tree.map(lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, ens)
    return eqx.tree_at(lambda e: tuple(m.net.layers[-1].bias for m in e.members), ens,
                       tuple(jnp.asarray(r, jnp.float32) for r in rows))


def test_critic_target_by_hand():
    config = dataclasses.replace(SMALL, num_quantiles=3, vectorise_critics=False)
    state = tqc.init(jax.random.key(0), SPEC, config)
    rows = [[0.0, 4.0, 8.0], [1.0, 2.0, 9.0], [3.0, 5.0, 6.0]]
    state = dataclasses.replace(state, target_critic=constant_quantile_critic(rows))
    batch = make_batch(jax.random.key(1))
    target = tqc.critic_target(state, batch, jax.random.key(2), config)
    _, log_prob = eqxrl.sample_actions(state.actor.model, batch.next_obs, jax.random.key(2))
    atoms = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # 9 pooled, the top 3 (one per critic) gone
    next_value = atoms[None] - 1.0 * np.asarray(log_prob)[:, None]  # α starts at 1
    keep = np.where(np.asarray(batch.terminated), 0.0, 0.99)[:, None]
    np.testing.assert_allclose(target, np.asarray(batch.reward)[:, None] + keep * next_value,
                               rtol=1e-5, atol=1e-5)


def test_critic_and_actor_losses_by_hand():
    critic = constant_quantile_critic([[0.0, 2.0], [1.0, 5.0]])
    batch = make_batch(jax.random.key(1), n=4)
    target = jnp.array([[1.0, 3.0]] * 4)
    loss, aux = tqc.critic_loss(critic, batch, target)
    by_hand = sum(eqxrl.quantile_huber_loss(jnp.array([row] * 4), target)
                  for row in ([0.0, 2.0], [1.0, 5.0]))
    np.testing.assert_allclose(loss, by_hand, rtol=1e-6)
    np.testing.assert_allclose(aux["q_mean"], 2.0)
    actor = eqxrl.GaussianPolicy(3, 2, (8,), key=jax.random.key(2))
    loss, aux = tqc.actor_loss(actor, critic, batch.obs, jnp.float32(0.5), jax.random.key(3))
    _, log_prob = eqxrl.sample_actions(actor, batch.obs, jax.random.key(3))
    np.testing.assert_allclose(loss, jnp.mean(0.5 * log_prob - 2.0), rtol=1e-5)  # mean of all


# ---------------------------------------------------------------- update and act
def test_update_compiles_once_and_learns_something():
    config = dataclasses.replace(SMALL, discount=0.0)  # a fixed target (the rewards) to fit
    state = tqc.init(jax.random.key(0), SPEC, config)
    update = eqx.debug.assert_max_traces(tqc.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, config))
    batch = make_batch(jax.random.key(1))
    losses = []
    for i in range(30):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["critic/loss"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert losses[-1] < losses[0] and int(state.actor.step) == 30


@pytest.mark.slow  # ~10-15 s; SAC's equivalent runs in the default suite
def test_vmap_over_seeds_equals_separate_runs():
    assert_vmap_equals_separate_runs(tqc, SPEC, SMALL, make_batch(jax.random.key(1)), updates=3,
                                     seeds=3)


# ---------------------------------------------------------------- the script
def tiny(tmp_path, name="run", **kw):
    run = dict(env_id="Pendulum-v1", total_steps=300, start_steps=100, batch_size=32,
               buffer_size=1000, eval_interval=150, eval_episodes=1, log_interval=50,
               checkpoint_interval=100, run_dir=str(tmp_path / name), progress=False)
    return tqc.Config(run=eqxrl.OnlineRun(**(run | kw)), hidden_dims=(16, 16),
                      critic_hidden_dims=(32, 32), num_critics=2, num_quantiles=5)


@pytest.mark.slow  # ~10-15 s; SAC's equivalent runs in the default suite
def test_main_resumes_bit_exactly_and_loads_as_a_policy(tmp_path):
    from .conftest import whole_and_resumed

    whole, part = whole_and_resumed(tqc, tiny, tmp_path, part_steps=200)
    assert_trees_equal(whole.state, part.state)
    policy, _ = eqxrl.load_policy(str(tmp_path / "whole"))
    assert policy(np.zeros(3, np.float32)).shape == (1,)


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, "algorithms/tqc.py", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    for field in dataclasses.fields(tqc.Config):
        if field.name != "run":
            assert "--" + field.name.replace("_", "-") in out, field.name

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
from eqxrl.algorithms import crossq

from .conftest import assert_trees_equal, assert_vmap_equals_separate_runs, make_batch

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,), action_low=(-1.0, -1.0),
               action_high=(1.0, 1.0))
SMALL = crossq.Config(run=eqxrl.OnlineRun(batch_size=16, buffer_size=1000), hidden_dims=(16, 16),
                      critic_hidden_dims=(32, 32), renorm_warmup_steps=2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("adam_b1", 1.0, r"--adam-b1 must be in \[0, 1\), got 1.0"),
        ("adam_b1", -0.1, r"--adam-b1 must be in \[0, 1\), got -0.1"),
        ("bn_momentum", 1.0, r"--bn-momentum must be in \[0, 1\), got 1.0"),
        ("policy_delay", 0, r"--policy-delay must be >= 1, got 0"),
        ("renorm_warmup_steps", -1, r"--renorm-warmup-steps must be >= 0, got -1"),
        ("critic_hidden_dims", (), r"--critic-hidden-dims"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


def test_a_batch_of_one_is_refused_before_training():
    with pytest.raises(ValueError, match=r"--batch-size must be >= 2 for CrossQ, got 1"):
        dataclasses.replace(SMALL, run=dataclasses.replace(SMALL.run, batch_size=1))


def test_adam_b1_lives_in_the_optimiser_state():
    state = crossq.init(jax.random.key(0), SPEC, SMALL)
    for train_state, b1 in ((state.actor, 0.5), (state.critic, 0.5), (state.temperature, 0.9)):
        np.testing.assert_allclose(train_state.opt_state.hyperparams["b1"], b1)


# ---------------------------------------------------------------- losses by hand
def test_critic_loss_uses_one_joint_pass_and_a_fixed_target():
    state = crossq.init(jax.random.key(0), SPEC, SMALL)
    critic = state.critic.model
    batch = make_batch(jax.random.key(1))
    next_action = jax.random.uniform(jax.random.key(2), (16, 2), minval=-1, maxval=1)
    next_log_prob = jax.random.normal(jax.random.key(3), (16,))
    alpha, discount = jnp.float32(0.3), jnp.float32(0.9)
    loss, (aux, after) = crossq.critic_loss(critic, batch, next_action, next_log_prob, alpha,
                                            discount)
    # By hand: each critic's BRN layers see the 32 rows (s, a) then (s', a') in one batch.
    q_all, expected_after = critic.train_batch(
        jnp.concatenate([batch.obs, batch.next_obs]), jnp.concatenate([batch.action, next_action]))
    q_now, q_next = np.asarray(q_all[:, :16]), np.asarray(q_all[:, 16:])
    y = np.asarray(batch.reward) + 0.9 * np.where(
        np.asarray(batch.terminated), 0.0, q_next.min(0) - 0.3 * np.asarray(next_log_prob))
    np.testing.assert_allclose(loss, ((q_now - y[None]) ** 2).mean(1).sum(), rtol=1e-5)
    np.testing.assert_allclose(aux["target_q_mean"], y.mean(), rtol=1e-5, atol=1e-6)
    assert_trees_equal(split(after), split(expected_after))
    # Two separate passes would give other predictions: the statistics are the joint batch's.
    q_sep, _ = critic.train_batch(batch.obs, batch.action)
    assert float(jnp.max(jnp.abs(q_sep - q_now))) > 1e-3
    # The target is held fixed: the gradient is that of the loss with y as a constant.
    grad = eqx.filter_grad(lambda c: crossq.critic_loss(
        c, batch, next_action, next_log_prob, alpha, discount)[0])(critic)

    def fixed(c):
        q, _ = c.train_batch(jnp.concatenate([batch.obs, batch.next_obs]),
                             jnp.concatenate([batch.action, next_action]))
        return jnp.sum(jnp.mean((q[:, :16] - jnp.asarray(y, jnp.float32)[None]) ** 2, axis=1))

    expected = eqx.filter_grad(fixed)(critic)
    for a, b in zip(jax.tree.leaves(eqxrl.nn.trainable(grad)),
                    jax.tree.leaves(eqxrl.nn.trainable(expected)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def split(model):
    return eqxrl.nn.split_stats(model)[0]


def test_actor_loss_trains_the_actor_against_critics_in_evaluation_mode():
    state = crossq.init(jax.random.key(0), SPEC, SMALL)
    obs = make_batch(jax.random.key(1)).obs
    loss, (aux, after) = crossq.actor_loss(state.actor.model, state.critic.model, obs,
                                           jnp.float32(0.5), jax.random.key(4))
    dist, expected_after = state.actor.model.train_batch(obs)
    action, log_prob = dist.sample_and_log_prob(seed=jax.random.key(4))
    q = jax.vmap(state.critic.model)(obs, action)  # per example: running statistics
    np.testing.assert_allclose(loss, jnp.mean(0.5 * log_prob - jnp.min(q, axis=1)), rtol=1e-5)
    np.testing.assert_allclose(aux["entropy"], -jnp.mean(log_prob), rtol=1e-5)
    assert_trees_equal(split(after), split(expected_after))


# ---------------------------------------------------------------- update and act
def test_update_compiles_once_moves_statistics_and_delays_the_actor():
    state = crossq.init(jax.random.key(0), SPEC, SMALL)
    update = eqx.debug.assert_max_traces(crossq.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    batch = make_batch(jax.random.key(1))
    losses = []
    for i in range(7):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["critic/loss"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(state.critic.step) == 7 and int(state.actor.step) == 2  # the 3rd and 6th
    assert int(state.temperature.step) == 2
    critic_norm = state.critic.model.member(0).net.norms[1]
    assert int(critic_norm.stats.steps) == 7 and float(jnp.abs(critic_norm.stats.mean).max()) > 0
    assert int(state.actor.model.trunk.norms[0].stats.steps) == 2
    assert losses[-1] < losses[0]
    assert {"critic/loss", "actor/loss", "actor/entropy", "temperature/value"} <= set(metrics)


def test_act_is_in_evaluation_mode():
    state = crossq.init(jax.random.key(0), SPEC, SMALL)
    state, _ = eqxrl.jit(lambda s, b, k: crossq.update(s, b, k, SMALL))(
        state, make_batch(jax.random.key(1)), jax.random.key(2))
    obs = jax.random.normal(jax.random.key(3), (5, 3))
    mode = crossq.act(state, obs, jax.random.key(1), deterministic=True)
    # One observation's action does not depend on the rest of the batch.
    np.testing.assert_allclose(mode[:1], crossq.act(state, obs[:1], jax.random.key(1), True),
                               rtol=1e-5, atol=1e-6)
    assert mode.shape == (5, 2) and bool(jnp.all(jnp.abs(mode) <= 1))
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        crossq.act(state, jnp.ones((5, 4)), jax.random.key(1))


@pytest.mark.slow  # ~14 s; per-agent statistics: also tests/test_nn_normalization.py
def test_vmap_over_seeds_equals_separate_runs():
    assert_vmap_equals_separate_runs(crossq, SPEC, SMALL, make_batch(jax.random.key(1)),
                                     updates=4, seeds=3)


# ---------------------------------------------------------------- the script
def tiny(tmp_path, name="run", **kw):
    run = dict(env_id="Pendulum-v1", total_steps=300, start_steps=100, batch_size=32,
               buffer_size=1000, eval_interval=150, eval_episodes=1, log_interval=50,
               checkpoint_interval=100, run_dir=str(tmp_path / name), progress=False)
    return crossq.Config(run=eqxrl.OnlineRun(**(run | kw)), hidden_dims=(16, 16),
                         critic_hidden_dims=(32, 32))


@pytest.mark.slow  # ~10-15 s; SAC's equivalent runs in the default suite
def test_main_resumes_bit_exactly_and_loads_as_a_policy(tmp_path):
    from .conftest import whole_and_resumed

    whole, part = whole_and_resumed(crossq, tiny, tmp_path, part_steps=200)
    assert_trees_equal(whole.state, part.state)  # statistics included
    policy, config = eqxrl.load_policy(str(tmp_path / "whole"))
    assert policy(np.zeros(3, np.float32)).shape == (1,)
    assert config.critic_hidden_dims == (32, 32)


@pytest.mark.slow  # ~15 s: the compiled gymnax loop; the default suite keeps SAC's
def test_compiled_loop_with_two_agents(tmp_path):
    pytest.importorskip("gymnax")
    config = tiny(tmp_path, env_id="gymnax:Pendulum-v1", num_seeds=2, batch_size=16)
    summary = crossq.main(config)
    assert summary["status"] == "done" and len(summary["agents"]) == 2


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, "algorithms/crossq.py", "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    for field in dataclasses.fields(crossq.Config):
        if field.name != "run":
            assert "--" + field.name.replace("_", "-") in out, field.name
    assert "--resume" in out and "--total-steps" in out and "β1" in out


@pytest.mark.slow
def test_crossq_learns_pendulum(tmp_path):
    # Narrower critics than the paper's 2 × 2048 so that the slow step stays short; the full
    # `python algorithms/crossq.py --env-id Pendulum-v1 --total-steps 10000` is in the README.
    run = eqxrl.OnlineRun(env_id="Pendulum-v1", seed=0, total_steps=8_000, start_steps=1_000,
                          eval_interval=4_000, eval_episodes=10, checkpoint_interval=8_000,
                          run_dir=str(tmp_path / "run"), progress=False)
    summary = crossq.main(crossq.Config(run=run, critic_hidden_dims=(256, 256)))
    assert summary["final_eval_return"] >= -250.0, summary

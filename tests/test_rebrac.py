import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import Dataset, EnvSpec, OfflineRun, SarsaTransition
from eqxrl.algorithms import rebrac
from eqxrl.datasets import with_next_actions

from .conftest import (
    assert_vmap_equals_separate_runs,
    constant_critic,
    make_batch,
    pendulum_dataset_file,
)

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,),
               action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
SMALL = rebrac.Config(run=OfflineRun(dataset="unused.hdf5", batch_size=16), hidden_dims=(32, 32))
UPDATE = eqxrl.jit(rebrac.update)


def sarsa_batch(key, n=16):
    """A random batch with next actions; every fourth row has none."""
    batch = make_batch(key, n=n)
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    next_action = jax.random.uniform(jax.random.fold_in(key, 1), (n, 2), minval=-1, maxval=1)
    return SarsaTransition(**fields, next_action=next_action,
                           has_next_action=jnp.arange(n) % 4 != 3)


# ---------------------------------------------------------------- data: next actions
def test_with_next_actions_takes_the_following_row_within_an_episode():
    n = 6
    obs = jnp.arange(n + 1, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))
    next_obs = obs[1:].at[3].set(99.0)  # row 3's next_obs is not row 4's obs: a cut
    data = eqxrl.Transition(
        obs=obs[:-1], action=jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2) / 20,
        reward=jnp.zeros(n), next_obs=next_obs,
        terminated=jnp.array([0, 1, 0, 0, 0, 0], bool),  # row 1 ends an episode
        truncated=jnp.zeros(n, bool))
    out = with_next_actions(Dataset(data)).data
    assert isinstance(out, SarsaTransition)
    np.testing.assert_array_equal(out.has_next_action, [True, False, True, False, True, False])
    a = np.asarray(data.action)
    expected = np.stack([a[1], a[1], a[3], a[3], a[5], a[5]])  # ends repeat their own action
    np.testing.assert_array_equal(out.next_action, expected)
    np.testing.assert_array_equal(out.reward, data.reward)  # the Transition's fields are kept
    assert with_next_actions(Dataset(out)).data is out  # already done: unchanged


def test_sarsa_transition_refuses_a_next_action_unlike_the_action():
    batch = make_batch(jax.random.key(0), n=4)
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    with pytest.raises(ValueError, match=r"next_action has shape \(4, 3\) but action has shape "
                                         r"\(4, 2\)"):
        SarsaTransition(**fields, next_action=jnp.zeros((4, 3)), has_next_action=jnp.ones(4, bool))
    with pytest.raises((ValueError, TypeError), match=r"has_next_action"):  # or jaxtyping's
        SarsaTransition(**fields, next_action=jnp.zeros((4, 2)),
                        has_next_action=jnp.ones((4, 1), bool))


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("actor_bc", -1.0, r"--actor-bc must be a finite number >= 0, got -1.0"),
        ("critic_bc", float("nan"), r"--critic-bc must be a finite number >= 0, got nan"),
        ("policy_delay", 0, r"--policy-delay must be >= 1, got 0"),
        ("finetune_bc_floor", 1.5, r"--finetune-bc-floor must be .*in \[0, 1\], got 1.5"),
        # Offline, the policy acts only in evaluation (deterministic): refused, not ignored.
        ("exploration_noise", 0.1, r"--exploration-noise take\(s\) effect only with "
                                   r"--finetune-steps N"),
        ("finetune_bc_floor", 0.2, r"--finetune-bc-floor take\(s\) effect only with"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


def test_defaults_are_the_papers():
    c = rebrac.Config()
    assert (c.hidden_dims, c.actor_lr, c.critic_lr, c.run.batch_size) == ((256,) * 3, 1e-3, 1e-3,
                                                                          1024)
    assert c.critic_layer_norm and c.normalize_q and not c.normalize_obs
    assert (c.policy_noise, c.noise_clip, c.policy_delay, c.tau) == (0.2, 0.5, 2, 0.005)
    state = rebrac.init(jax.random.key(0), SPEC, SMALL)
    assert all(m.net.norms is not None for m in state.td3.critic.model.members)  # LayerNorm
    assert state.td3.actor.model.net.norms is None


# ---------------------------------------------------------------- losses by hand
@pytest.mark.parametrize("normalize_q", [True, False])
def test_actor_loss_by_hand(normalize_q):
    critic = constant_critic([2.0, -4.0], jax.random.key(0))  # min over the critics: -4
    actor = eqxrl.DeterministicPolicy(3, 2, (8,), key=jax.random.key(1))
    batch = make_batch(jax.random.key(2), n=4)
    loss, aux = rebrac.actor_loss(actor, critic, batch.obs, batch.action, 0.3, normalize_q)
    pi = np.asarray(jax.vmap(actor)(batch.obs))
    bc = np.sum((pi - np.asarray(batch.action)) ** 2, axis=1)  # summed over action dimensions
    lam = 1 / 4.0 if normalize_q else 1.0
    np.testing.assert_allclose(aux["lambda"], lam, rtol=1e-6)
    np.testing.assert_allclose(aux["bc_penalty"], bc.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(0.3 * bc - lam * -4.0), rtol=1e-5)


def test_actor_loss_treats_lambda_as_a_constant():
    critic = eqxrl.Ensemble(lambda k: eqxrl.QFunction(3, 2, (8,), key=k), 2, key=jax.random.key(0))
    actor = eqxrl.DeterministicPolicy(3, 2, (8,), key=jax.random.key(1))
    batch = make_batch(jax.random.key(2), n=8)
    q = jnp.min(eqxrl.ensemble_q(critic, batch.obs, jax.vmap(actor)(batch.obs)), axis=0)
    lam = 1 / jnp.mean(jnp.abs(q))

    def fixed_lambda(actor):
        pi = jax.vmap(actor)(batch.obs)
        q = jnp.min(eqxrl.ensemble_q(critic, batch.obs, pi), axis=0)
        return jnp.mean(0.3 * jnp.sum((pi - batch.action) ** 2, axis=1) - lam * q)

    grad = eqx.filter_grad(
        lambda a: rebrac.actor_loss(a, critic, batch.obs, batch.action, 0.3)[0])
    for a, b in zip(jax.tree.leaves(grad(actor)), jax.tree.leaves(eqx.filter_grad(fixed_lambda)(
            actor)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_critic_target_penalises_the_distance_to_the_next_action_by_hand():
    state = rebrac.init(jax.random.key(0), SPEC, SMALL)
    td3 = dataclasses.replace(state.td3, target_critic=constant_critic([5.0, 3.0]))
    state = dataclasses.replace(state, td3=td3, critic_bc=jnp.float32(0.5))
    batch = sarsa_batch(jax.random.key(1))
    key = jax.random.key(2)
    target, penalty = rebrac.critic_target(state, batch, key)
    smoothed = np.asarray(eqxrl.smoothed_target_action(
        td3.target_actor, batch.next_obs, key, td3.policy_noise, td3.noise_clip))
    dist = np.sum((smoothed - np.asarray(batch.next_action)) ** 2, axis=1)
    dist = np.where(np.asarray(batch.has_next_action), dist, 0.0)  # no a' in the data: none
    value = np.where(np.asarray(batch.terminated), 0.0, 3.0 - 0.5 * dist)
    np.testing.assert_allclose(target, np.asarray(batch.reward) + 0.99 * value, rtol=1e-5)
    np.testing.assert_allclose(penalty, dist.mean(), rtol=1e-5)


# ---------------------------------------------------------------- update and act
def test_update_refuses_a_batch_without_next_actions():
    state = rebrac.init(jax.random.key(0), SPEC, SMALL)
    # The type checks of the test suite name the expected type; without them, update does.
    with pytest.raises(TypeError, match=r"SarsaTransition"):
        rebrac.update(state, make_batch(jax.random.key(1)), jax.random.key(2), SMALL)


def test_update_compiles_once_and_learns_something():
    state = rebrac.init(jax.random.key(0), SPEC, SMALL)
    update = eqx.debug.assert_max_traces(rebrac.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    batch = sarsa_batch(jax.random.key(1))
    losses = []
    for i in range(30):
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["critic/loss"]))
    assert {"critic/next_bc_penalty", "actor/bc_penalty", "actor/lambda"} <= set(metrics)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert losses[-1] < losses[0]
    assert int(state.td3.step) == 30 and int(state.td3.actor.step) == 15


# ---------------------------------------------------------------- the online phase
def test_finetune_actor_bc_decays_linearly_to_its_floor_by_hand():
    config = rebrac.FinetuneConfig(hidden_dims=(8, 8), finetune=eqxrl.Finetune(finetune_steps=10))
    state = dataclasses.replace(rebrac.init(jax.random.key(0), SPEC, SMALL),
                                actor_bc=jnp.float32(0.4))
    weights = [float(rebrac.finetune_actor_bc(
        dataclasses.replace(state, online_updates=jnp.int32(k)), config)) for k in (0, 3, 6, 20)]
    np.testing.assert_allclose(weights, [0.4, 0.4 * 0.7, 0.4 * 0.5, 0.4 * 0.5], rtol=1e-6)


def test_an_online_update_is_tds_target_without_the_critic_penalty():
    config = rebrac.FinetuneConfig(hidden_dims=(32, 32), finetune=eqxrl.Finetune(finetune_steps=4))
    state = dataclasses.replace(rebrac.init(jax.random.key(0), SPEC, SMALL),
                                critic_bc=jnp.float32(5.0))  # would change the target offline
    batch, key = make_batch(jax.random.key(1)), jax.random.key(2)  # plain rows: online replay
    new, metrics = rebrac.update(state, batch, key, config)
    target = rebrac.td3.critic_target(state.td3, batch, key)
    critic, _ = rebrac.td3.critic_step(state.td3, batch, target)
    for a, b in zip(jax.tree.leaves(new.td3.critic.model), jax.tree.leaves(critic.model),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(metrics["critic/next_bc_penalty"]) == 0.0
    assert float(metrics["actor/bc_weight"]) == pytest.approx(0.001)  # β₁ before any decay
    assert int(new.online_updates) == 1
    _, offline = rebrac.update(state, sarsa_batch(jax.random.key(1)), key, SMALL)
    assert int(_.online_updates) == 0 and float(offline["critic/next_bc_penalty"]) > 0


def small_script_run(tmp_path, **fields):
    """A 20-update run of the script on the project's Pendulum data, with tiny networks."""
    path = pendulum_dataset_file(tmp_path / "d.hdf5")
    run = OfflineRun(dataset=path, total_updates=20, updates_per_call=10, batch_size=16,
                     eval_interval=20, eval_episodes=1, log_interval=10,
                     run_dir=str(tmp_path / "run"), tensorboard=False, progress=False)
    return path, dataclasses.replace(SMALL, run=run, hidden_dims=(16, 16), **fields)


@pytest.mark.slow  # ~12 s: two phases; the default run stays within ~6 minutes on 2 cores
def test_finetuning_continues_offline_rebrac_online(tmp_path):
    run_dir = str(tmp_path / "run")
    _, config = small_script_run(tmp_path, exploration_noise=0.1,
                                 finetune=eqxrl.Finetune(finetune_steps=30))
    summary = rebrac.main(config)
    assert summary["status"] == "done" and summary["offline"]["steps"] == 20
    offline, online = eqxrl.load_run(run_dir), eqxrl.load_run(f"{run_dir}/finetune")
    assert isinstance(online.config, rebrac.FinetuneConfig)
    assert int(offline.state.online_updates) == 0 and int(offline.state.td3.step) == 20
    assert int(online.state.online_updates) == 30  # one update per env step
    assert int(online.state.td3.step) == 20 + 30
    with open(f"{run_dir}/finetune/train.csv") as f:
        rows = [line.strip().split(",") for line in f]
    column = rows[0].index("actor/bc_weight")
    weights = [float(r[column]) for r in rows[1:]]
    np.testing.assert_allclose(weights, [0.001 * 0.7, 0.0005, 0.0005], rtol=1e-5)  # k = 9, 19, 29
    assert [r["phase"] for r in eqxrl.loops.joined_evals(run_dir)] == [0, 1, 1]


def test_act_is_deterministic_and_checks_observations():
    state = rebrac.init(jax.random.key(0), SPEC, SMALL)
    obs = jax.random.normal(jax.random.key(1), (5, 3))
    a = rebrac.act(state, obs, jax.random.key(1))
    assert a.shape == (5, 2) and jnp.all(jnp.abs(a) <= 1)
    np.testing.assert_array_equal(a, rebrac.act(state, obs, jax.random.key(2)))
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        rebrac.act(state, jnp.ones((5, 4)), jax.random.key(1))


@pytest.mark.slow  # ~12 s; the default run stays within ~6 minutes on 2 cores
def test_vmap_over_seeds_equals_separate_runs():
    assert_vmap_equals_separate_runs(rebrac, SPEC, SMALL, sarsa_batch(jax.random.key(1)),
                                     updates=3, seeds=4)


# ---------------------------------------------------------------- the script
@pytest.mark.slow  # ~10 s; the default run stays within ~6 minutes on 2 cores
def test_main_trains_on_next_actions_and_resumes(tmp_path):
    run_dir = str(tmp_path / "run")
    path, config = small_script_run(tmp_path, normalize_obs=True)
    summary = rebrac.main(config)
    assert summary["steps"] == 20 and summary["final_normalized_score"] is not None
    summary = rebrac.main(rebrac.Config(run=OfflineRun(resume=run_dir, total_updates=30,
                                                       progress=False)))
    assert summary["steps"] == 30 and summary["status"] == "done"
    loaded = eqxrl.load_run(run_dir)
    assert int(loaded.state.td3.step) == 30
    obs = np.asarray(eqxrl.load_dataset(path)[0].data.obs)
    np.testing.assert_allclose(loaded.state.obs_norm.mean, obs.mean(0), rtol=1e-5, atol=1e-6)
    with open(f"{run_dir}/train.csv") as f:
        header = f.readline()
    assert "critic/next_bc_penalty" in header and "actor/bc_penalty" in header
    with open(f"{run_dir}/config.json") as f:
        assert json.load(f)["config"]["actor_bc"] == 0.001

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import Dataset, DatasetInfo, EnvSpec, OfflineRun, Transition
from eqxrl.algorithms import bc

from .conftest import assert_vmap_equals_separate_runs, make_batch

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,),
               action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
SMALL = bc.Config(run=OfflineRun(dataset="unused.hdf5", batch_size=16), hidden_dims=(32, 32))
UPDATE = eqxrl.jit(bc.update)


def constant_policy(mean, log_std, tanh_squash=False):
    """A policy that is N(mean, exp(log_std)²), optionally tanh-squashed, for every obs."""
    actor = eqxrl.GaussianPolicy(3, 2, (8,), tanh_squash=tanh_squash, state_dependent_std=False,
                                 log_std_min=-5.0, key=jax.random.key(0))
    actor = jax.tree.map(lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, actor)
    return eqx.tree_at(lambda a: (a.mean_head.bias, a.log_std), actor,
                       (jnp.asarray(mean), jnp.asarray(log_std)))


# ---------------------------------------------------------------- config and init
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("top_fraction", 0.0, r"--top-fraction must be in \(0, 1\], got 0.0"),
        ("top_fraction", 1.5, r"--top-fraction must be in \(0, 1\], got 1.5"),
        ("lr", 0.0, r"--lr must be a finite number > 0, got 0.0"),
        ("log_std_min", 3.0, r"--log-std-min \(3.0\) must be finite and <= --log-std-max \(2.0\)"),
        ("hidden_dims", (), r"--hidden-dims must be one or more positive layer sizes, got \(\)"),
    ],
)
def test_invalid_config_names_the_flag(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **{field: value})


def test_init_builds_the_chosen_policy_and_a_categorical_for_discrete_actions():
    state = bc.init(jax.random.key(0), SPEC, dataclasses.replace(SMALL, policy="tanh_gaussian",
                                                                 state_dependent_std=True))
    assert state.actor.model.tanh_squash and state.actor.model.log_std_head is not None
    discrete = EnvSpec(SPEC.observation, (), discrete=True, num_actions=3)
    assert isinstance(bc.init(jax.random.key(0), discrete, SMALL).actor.model,
                      eqxrl.CategoricalPolicy)
    with pytest.raises(ValueError, match=r"--loss mse shapes a policy for continuous actions, "
                                         r"but the env has Discrete\(3\) actions"):
        bc.init(jax.random.key(0), discrete, dataclasses.replace(SMALL, loss="mse"))


# ---------------------------------------------------------------- losses by hand
def test_log_likelihood_and_mse_losses_by_hand():
    mean, log_std = np.array([0.1, -0.2]), np.array([-0.5, 0.3])
    actor = constant_policy(mean, log_std)
    batch = make_batch(jax.random.key(1), n=4)
    a, s = np.asarray(batch.action), np.exp(log_std)
    log_prob = np.sum(-0.5 * ((a - mean) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi), axis=1)
    loss, aux = bc.log_likelihood_loss(actor, batch.obs, batch.action)
    np.testing.assert_allclose(loss, -np.mean(log_prob), rtol=1e-5)
    np.testing.assert_allclose(aux["mse"], np.mean((a - mean) ** 2), rtol=1e-5)
    loss, _ = bc.mse_loss(actor, batch.obs, batch.action)
    np.testing.assert_allclose(loss, np.mean((a - mean) ** 2), rtol=1e-5)
    # The tanh policy's mode is tanh(mean).
    loss, _ = bc.mse_loss(constant_policy(mean, log_std, True), batch.obs, batch.action)
    np.testing.assert_allclose(loss, np.mean((a - np.tanh(mean)) ** 2), rtol=1e-5)


def test_tanh_log_likelihood_stays_finite_at_the_action_bounds():
    config = dataclasses.replace(SMALL, policy="tanh_gaussian")
    state = bc.init(jax.random.key(0), SPEC, config)
    batch = eqx.tree_at(lambda b: b.action, make_batch(jax.random.key(1)), jnp.ones((16, 2)))
    _, metrics = UPDATE(state, batch, jax.random.key(2), config)
    assert all(np.isfinite(float(v)) for v in metrics.values())


# ---------------------------------------------------------------- filtered BC
def episodes_dataset():
    # Episodes: rows 0-2 (return 3), 3-4 (return 10, truncated), 5-7 (return -1), 8-9 (return 4,
    # unfinished at the end of the data).
    reward = np.array([1, 1, 1, 5, 5, -1, 0, 0, 2, 2], np.float32)
    terminated = np.zeros(10, bool)
    terminated[[2, 7]] = True
    truncated = np.zeros(10, bool)
    truncated[4] = True
    n = 10
    return Dataset(Transition(
        obs=jnp.arange(n * 3, dtype=jnp.float32).reshape(n, 3),
        action=jnp.zeros((n, 2)), reward=jnp.asarray(reward), next_obs=jnp.zeros((n, 3)),
        terminated=jnp.asarray(terminated), truncated=jnp.asarray(truncated),
    ))


@pytest.mark.parametrize(
    "fraction, rows",
    [(1.0, list(range(10))), (0.5, [3, 4, 8, 9]), (0.25, [3, 4]), (0.01, [3, 4]),
     (0.75, [0, 1, 2, 3, 4, 8, 9])],
)
def test_filter_top_episodes_keeps_the_best_episodes_in_order(fraction, rows):
    data = episodes_dataset()
    kept = bc.filter_top_episodes(data, fraction)
    np.testing.assert_array_equal(kept.data.obs[:, 0] / 3, rows)
    np.testing.assert_array_equal(kept.data.reward, np.asarray(data.data.reward)[rows])


# ---------------------------------------------------------------- update and act
@pytest.mark.parametrize("loss", ["log_likelihood", "mse"])
def test_update_compiles_once_and_fits_the_actions(loss):
    config = dataclasses.replace(SMALL, loss=loss, lr=3e-3)
    state = bc.init(jax.random.key(0), SPEC, config)
    update = eqx.debug.assert_max_traces(bc.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, config))
    batch = make_batch(jax.random.key(1))
    mse = []
    for i in range(50):
        state, metrics = step(state, batch, jax.random.key(i))
        mse.append(float(metrics["actor/mse"]))
    assert mse[-1] < 0.5 * mse[0]
    assert int(state.actor.step) == 50


def test_act_checks_observations_and_stays_in_bounds():
    state = bc.init(jax.random.key(0), SPEC, SMALL)
    state = eqx.tree_at(lambda s: s.actor.model.log_std, state, jnp.full((2,), 1.5))
    obs = jnp.ones((64, 3))
    a = bc.act(state, obs, jax.random.key(1))
    assert a.shape == (64, 2) and jnp.all(jnp.abs(a) <= 1) and jnp.any(jnp.abs(a) == 1)
    mode = bc.act(state, obs, jax.random.key(1), deterministic=True)
    np.testing.assert_array_equal(mode, bc.act(state, obs, jax.random.key(2), deterministic=True))
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        bc.act(state, jnp.ones((5, 4)), jax.random.key(1))


def test_vmap_over_seeds_equals_separate_runs():
    batch = make_batch(jax.random.key(1))
    assert_vmap_equals_separate_runs(bc, SPEC, SMALL, batch, updates=3, seeds=4)


# ---------------------------------------------------------------- the script
def split_pendulum_dataset(path, n=256):
    """Four 64-step episodes of random Pendulum-shaped obs: the third (return 64) always acts
    +0.9, the others (return 0) −0.9."""
    obs = jax.random.normal(jax.random.key(0), (n + 1, 3))  # one trajectory, cut in four
    best = (jnp.arange(n) // 64) == 2
    data = Dataset(Transition(
        obs=obs[:-1],
        action=jnp.where(best, 0.9, -0.9)[:, None],
        reward=best.astype(jnp.float32),
        next_obs=obs[1:],
        terminated=jnp.zeros(n, bool),
        truncated=jnp.arange(n) % 64 == 63,
    ))
    eqxrl.save_dataset(str(path), data, DatasetInfo(env_id="Pendulum-v1"))
    return str(path)


def test_cli_filters_the_dataset_and_resume_keeps_the_filter(tmp_path, capsys):
    data, run_dir = split_pendulum_dataset(tmp_path / "d.hdf5"), str(tmp_path / "run")
    eqxrl.cli(bc.main, bc.Config, [
        "--dataset", data, "--top-fraction", "0.25", "--loss", "mse", "--lr", "0.01",
        "--total-updates", "100", "--updates-per-call", "50", "--batch-size", "32",
        "--hidden-dims", "16", "--eval-interval", "100", "--eval-episodes", "1",
        "--run-dir", run_dir, "--no-progress", "--no-tensorboard",
    ])
    assert "bc on Pendulum-v1 (seed 0): done" in capsys.readouterr().out
    obs = jax.random.normal(jax.random.key(5), (8, 3))
    policy, config = eqxrl.load_policy(run_dir)
    assert config.top_fraction == 0.25
    assert np.all(np.asarray(policy(obs)) > 0.5)  # all data (mean action −0.45) would fail
    # Resumed with no flags but the budget, the run keeps training on the filtered data.
    summary = bc.main(bc.Config(run=OfflineRun(resume=run_dir, total_updates=200,
                                               progress=False)))
    assert summary["steps"] == 200 and summary["status"] == "done"
    assert np.all(np.asarray(eqxrl.load_policy(run_dir)[0](obs)) > 0.5)


@pytest.mark.parametrize("loss", ["log_likelihood", "mse"])
def test_continuous_bc_from_pixels_updates_and_acts(loss):
    """jaxrl_m's continuous vision BC: a Gaussian policy behind an image encoder."""
    image = jax.ShapeDtypeStruct((36, 36, 3), np.dtype("uint8"))
    spec = EnvSpec(image, (2,), action_low=(-1.0, -1.0), action_high=(1.0, 1.0))
    config = bc.Config(run=OfflineRun(dataset="x.hdf5", batch_size=4), hidden_dims=(8,),
                       loss=loss, vision=eqxrl.vision.EncoderConfig("atari"))
    state = bc.init(jax.random.key(0), spec, config)
    obs = jax.random.randint(jax.random.key(1), (4, 36, 36, 3), 0, 256).astype(jnp.uint8)
    batch = Transition(obs=obs, action=jnp.full((4, 2), 0.5), reward=jnp.zeros(4),
                       next_obs=obs, terminated=jnp.zeros(4, bool), truncated=jnp.zeros(4, bool))
    new, metrics = eqxrl.jit(lambda s, b: bc.update(s, b, jax.random.key(0), config))(state, batch)
    assert np.isfinite(float(metrics["actor/mse"]))
    moved = jax.tree.leaves(eqx.filter(new.actor.model.encoder, eqx.is_inexact_array))[0]
    before = jax.tree.leaves(eqx.filter(state.actor.model.encoder, eqx.is_inexact_array))[0]
    assert not np.array_equal(moved, before)  # the encoder trains with the policy
    assert bc.act(new, obs, jax.random.key(2), deterministic=True).shape == (4, 2)

"""DQN and what the loops gained for it: n-step windows from the replay buffer, the target and
losses by hand, ε on env steps, fractional update-to-data ratios, compile-once, vmap over
seeds and exact resume, on the host loop and the compiled one."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import EnvSpec, ReplayBuffer, Transition
from eqxrl.algorithms import dqn
from eqxrl.core.checks import ConfigError

from .conftest import assert_trees_equal, assert_vmap_equals_separate_runs, whole_and_resumed

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (), discrete=True,
               num_actions=2)
SMALL = dqn.Config(run=eqxrl.OnlineRun(env_id="CartPole-v1", batch_size=8, buffer_size=100),
                   hidden_dims=(16,))


# ---------------------------------------------------------------- n-step windows
def buffer_of(capacity, ends, rewards=None, terminal=()):
    """A buffer with one row per entry of `ends` (True: that step ends its episode; the rows
    in `terminal` terminate, the others truncate). obs and next_obs carry the row number."""
    n = len(ends)
    buffer = ReplayBuffer.create(SPEC.example_transition(), capacity)
    rewards = np.arange(1.0, n + 1) if rewards is None else np.asarray(rewards, np.float32)
    for t in range(n):
        buffer = buffer.add(Transition(
            obs=jnp.full(3, t, jnp.float32), action=jnp.int32(t % 2),
            reward=jnp.float32(rewards[t]), next_obs=jnp.full(3, t + 0.5, jnp.float32),
            terminated=jnp.bool_(ends[t] and t in terminal),
            truncated=jnp.bool_(ends[t] and t not in terminal)))
    return buffer


def expected_window(t, ends, n, newest, capacity):
    """The window starting at write number `t` (row t % capacity), by hand."""
    steps = 0
    for k in range(n):
        if t + k > newest:
            break
        steps += 1
        if ends[t + k]:
            break
    return steps


def test_n_step_windows_stop_at_episode_ends_and_at_the_newest_row():
    ends = [False, False, True, False, False, False, True, False, False]
    buffer = buffer_of(20, ends, terminal=(6,))
    batch = buffer.sample_n_step(jax.random.key(0), 200, 3)
    starts = np.asarray(batch.obs[:, 0]).astype(int)
    assert set(starts) == set(range(9))  # every filled row is drawn
    for i, t in enumerate(starts):
        steps = expected_window(t, ends, 3, newest=8, capacity=20)
        assert batch.steps[i] == steps, t
        np.testing.assert_array_equal(batch.rewards[i, :steps], np.arange(t + 1, t + steps + 1))
        np.testing.assert_array_equal(batch.rewards[i, steps:], 0.0)
        assert batch.next_obs[i, 0] == t + steps - 1 + 0.5  # where the window's last step went
        assert bool(batch.terminated[i]) == (t + steps - 1 == 6)  # row 2 only truncates
        assert batch.action[i] == t % 2


def test_n_step_windows_across_the_rings_wrap_do_not_cross_the_write_position():
    ends = [False] * 13  # 13 writes into 8 rows: rows hold writes 5..12, position at row 5
    buffer = buffer_of(8, ends)
    assert int(buffer.position) == 5 and int(buffer.size) == 8
    batch = buffer.sample_n_step(jax.random.key(1), 300, 4)
    starts = np.asarray(batch.obs[:, 0]).astype(int)  # write numbers, 5..12
    assert set(starts) == set(range(5, 13))
    for i, t in enumerate(starts):
        steps = min(4, 12 - t + 1)  # the newest write (12) ends every window
        assert batch.steps[i] == steps
        np.testing.assert_array_equal(batch.rewards[i, :steps], np.arange(t + 1, t + steps + 1))
        assert batch.next_obs[i, 0] == t + steps - 1 + 0.5


def test_n_step_returns_and_bootstrap_by_hand():
    window = eqxrl.NStepTransition(
        obs=jnp.zeros((3, 1)), action=jnp.zeros(3, jnp.int32),
        rewards=jnp.array([[1.0, 2.0, 4.0], [1.0, 0.0, 0.0], [1.0, 2.0, 0.0]]),
        next_obs=jnp.zeros((3, 1)), terminated=jnp.array([False, False, True]),
        steps=jnp.array([3, 1, 2], jnp.int32))
    returns, bootstrap = window.returns(0.5)
    np.testing.assert_allclose(returns, [1 + 1 + 1, 1.0, 1 + 1])
    np.testing.assert_allclose(bootstrap, [0.125, 0.5, 0.0])


def test_one_step_windows_are_ordinary_transitions():
    buffer = buffer_of(10, [False, True, False])
    batch = buffer.sample_n_step(jax.random.key(2), 50, 1)
    assert batch.rewards.shape == (50, 1) and np.all(np.asarray(batch.steps) == 1)
    np.testing.assert_array_equal(batch.next_obs[:, 0], batch.obs[:, 0] + 0.5)


def test_n_step_sampling_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="buffer is empty"):
        ReplayBuffer.create(SPEC.example_transition(), 4).sample_n_step(jax.random.key(0), 2, 3)
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        buffer_of(4, [False]).sample_n_step(jax.random.key(0), 2, 0)
    with pytest.raises(TypeError, match="needs rows of eqxrl.Transition"):
        ReplayBuffer.create({"x": jnp.zeros(2)}, 4).sample_n_step(jax.random.key(0), 2, 3)


# ---------------------------------------------------------------- DQN's maths
def linear_q(weights):
    """A Q-network whose output for obs o is o[0] * weights (one per action)."""
    q = eqxrl.DiscreteQFunction(3, 2, (), key=jax.random.key(0))
    layer = q.net.layers[0]
    weight = jnp.zeros((2, 3)).at[:, 0].set(jnp.asarray(weights, jnp.float32))
    return eqx.tree_at(lambda q: (q.net.layers[0].weight, q.net.layers[0].bias), q,
                       (weight, jnp.zeros_like(layer.bias)))


def window(rewards, next_x, terminated, steps, action=(0, 1)):
    b = len(steps)
    return eqxrl.NStepTransition(
        obs=jnp.ones((b, 3)), action=jnp.asarray(action, jnp.int32),
        rewards=jnp.asarray(rewards, jnp.float32),
        next_obs=jnp.zeros((b, 3)).at[:, 0].set(jnp.asarray(next_x, jnp.float32)),
        terminated=jnp.asarray(terminated), steps=jnp.asarray(steps, jnp.int32))


def test_double_q_target_and_losses_by_hand():
    state = dqn.init(jax.random.key(0), SPEC, SMALL)
    # online Q(s', ·) = x·[1, 3] picks action 1; target Q̄(s', ·) = x·[5, 2]
    state = dataclasses.replace(state, q=dataclasses.replace(state.q, model=linear_q([1, 3])),
                                target_q=linear_q([5, 2]), discount=jnp.float32(0.5))
    batch = window([[1.0, 2.0], [4.0, 0.0]], [2.0, 1.0], [False, True], [2, 1])
    # row 0: 1 + 0.5·2 + 0.25·Q̄(s', 1) = 2 + 0.25·4 = 3;   row 1: terminated, 4
    np.testing.assert_allclose(dqn.q_target(state, batch, double_q=True), [3.0, 4.0])
    # plain DQN: max_a Q̄(s', a) = 10 → 2 + 2.5 = 4.5
    np.testing.assert_allclose(dqn.q_target(state, batch, double_q=False), [4.5, 4.0])
    # Q(s, a) with o[0] = 1: action 0 → 1, action 1 → 3; errors 1 − 3 = −2 and 3 − 4 = −1
    target = jnp.array([3.0, 4.0])
    mse, info = dqn.td_loss(state.q.model, batch, target, "mse")
    np.testing.assert_allclose(mse, (4 + 1) / 2)
    huber, _ = dqn.td_loss(state.q.model, batch, target, "huber", 1.0)
    np.testing.assert_allclose(huber, ((2 - 0.5) + 0.5) / 2)  # |−2| > δ: δ(|e| − δ/2)
    np.testing.assert_allclose(info["q_mean"], 2.0)


def test_hard_target_updates_copy_every_interval():
    config = dataclasses.replace(SMALL, target_update_interval=3, tau=1.0)
    state = dqn.init(jax.random.key(0), SPEC, config)
    batch = buffer_of(20, [False, True] * 5).sample_n_step(jax.random.key(1), 8, 3)
    update = eqx.debug.assert_max_traces(dqn.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, config))
    first = state.target_q
    for i in range(1, 7):
        state, metrics = step(state, batch, jax.random.key(i))
        q, target = eqx.filter(state.q.model, eqx.is_array), eqx.filter(state.target_q,
                                                                         eqx.is_array)
        if i % 3 == 0:
            assert_trees_equal(q, target)
        else:
            assert not np.allclose(q.net.layers[-1].weight, target.net.layers[-1].weight)
        if i < 3:
            assert_trees_equal(eqx.filter(first, eqx.is_array), target)
    assert int(state.q.step) == 6
    assert {"q/loss", "q/grad_norm", "q/q_mean", "q/target_mean", "q/td_abs"} <= set(metrics)


def test_epsilon_follows_env_steps_and_act_is_greedy_when_deterministic():
    config = dataclasses.replace(SMALL, epsilon_start=1.0, epsilon_end=0.1,
                                 epsilon_decay_steps=1000)
    state = dqn.init(jax.random.key(0), SPEC, config)
    for step, eps in ((0, 1.0), (500, 0.55), (1000, 0.1), (10**6, 0.1)):
        np.testing.assert_allclose(dqn.epsilon(state, step), eps, rtol=1e-6)
    obs = jax.random.normal(jax.random.key(1), (4000, 3))
    greedy = jnp.argmax(jax.vmap(state.q.model)(obs), axis=1)
    np.testing.assert_array_equal(dqn.act(state, obs, jax.random.key(2), True), greedy)
    for step, eps in ((0, 1.0), (500, 0.55), (None, 0.1)):
        actions = dqn.act(state, obs, jax.random.key(3), env_step=step)
        assert actions.dtype == jnp.int32
        # a random action differs from the greedy one half the time (two actions)
        np.testing.assert_allclose(np.mean(actions != greedy), eps / 2, atol=0.03)


def test_vmap_over_seeds_equals_separate_runs():
    batch = buffer_of(30, [False, False, True] * 10).sample_n_step(jax.random.key(1), 8, 3)
    assert_vmap_equals_separate_runs(dqn, SPEC, SMALL, batch, updates=3, seeds=3)


def test_bad_input_is_refused_clearly():
    box = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (1,),
                  action_low=(-1.0,), action_high=(1.0,))
    with pytest.raises(ValueError, match=r"DQN needs a discrete action space.*sac.py"):
        dqn.init(jax.random.key(0), box, SMALL)
    with pytest.raises(ValueError, match=r"--n-step must be >= 1, got 0"):
        dataclasses.replace(SMALL, n_step=0)
    with pytest.raises(ValueError, match=r"--epsilon-end must be in \[0, 1\], got 1.5"):
        dataclasses.replace(SMALL, epsilon_end=1.5)
    state = dqn.init(jax.random.key(0), SPEC, SMALL)
    batch = buffer_of(10, [False] * 4).sample_n_step(jax.random.key(1), 4, 2)
    with pytest.raises(ValueError, match=r"batch.rewards has shape \(4,\), expected \(4,\) \+"):
        dqn.update(state, eqx.tree_at(lambda b: b.rewards, batch, batch.rewards[:, 0]),
                   jax.random.key(0), SMALL)
    with pytest.raises(ValueError, match=r"batch.action has dtype float32, but the env takes "
                                         r"Discrete\(2\) actions"):
        dqn.update(state, eqx.tree_at(lambda b: b.action, batch,
                                      batch.action.astype(jnp.float32)),
                   jax.random.key(0), SMALL)
    with pytest.raises(ConfigError, match=r"--log-interval \(1000\) must be a multiple of "
                                          r"--update-every \(3\).*--log-interval 999"):
        eqxrl.OnlineRun(update_every=3)


# ---------------------------------------------------------------- the loops
def small_run(tmp_path, name, **run):
    settings = dict(env_id="CartPole-v1", total_steps=300, start_steps=100, batch_size=16,
                    buffer_size=1000, log_interval=100, eval_interval=300,
                    checkpoint_interval=150, eval_episodes=1, progress=False,
                    run_dir=str(tmp_path / name))
    return dqn.Config(run=eqxrl.OnlineRun(**(settings | run)), hidden_dims=(16,),
                      epsilon_decay_steps=200)


# The compiled loop's cases take 13 s and 25 s; the default suite is near its 10-minute budget.
COMPILED = pytest.param("gymnax:CartPole-v1", marks=pytest.mark.slow)


@pytest.mark.parametrize("env_id", ["CartPole-v1", COMPILED])
def test_updates_follow_update_every_and_act_sees_env_steps(tmp_path, env_id, monkeypatch):
    if env_id.startswith("gymnax"):
        pytest.importorskip("gymnax")
    seen, act = [], dqn.act

    def recording_act(state, obs, key, deterministic=False, env_step=None):
        if env_step is not None:
            jax.debug.callback(lambda s: seen.append(int(s)), env_step)
        return act(state, obs, key, deterministic, env_step)

    monkeypatch.setattr(dqn, "act", recording_act)
    config = small_run(tmp_path, "every", env_id=env_id, utd=2, update_every=4)
    summary = dqn.main(config)
    assert summary["status"] == "done"
    state = eqxrl.load_run(str(tmp_path / "every")).state
    learning_steps = [s for s in range(100, 301) if s % 4 == 0]  # steps 100, 104, ..., 300
    assert int(state.q.step) == 2 * len(learning_steps)
    # env steps 0..99 take uniform random actions; `act` chooses the others, told their index
    # (the host loop also chooses the action of step 300, which a resumed run would take)
    assert seen == list(range(100, 301 if env_id == "CartPole-v1" else 300))
    metrics = eqxrl.run.read_metrics(str(tmp_path / "every" / "train.csv"))
    assert len(metrics["q/loss"]) == 3 and np.all(np.isfinite(metrics["q/loss"]))


@pytest.mark.parametrize("env_id", ["CartPole-v1", COMPILED])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, env_id):
    if env_id.startswith("gymnax"):
        pytest.importorskip("gymnax")
    a, b = whole_and_resumed(
        dqn, lambda path, name, **run: small_run(path, name, env_id=env_id, **run), tmp_path, 150)
    assert_trees_equal(eqx.filter(a.state, eqx.is_array), eqx.filter(b.state, eqx.is_array))
    np.testing.assert_array_equal(np.asarray(a.buffer.data.action),
                                  np.asarray(b.buffer.data.action))
    policy, _ = eqxrl.load_policy(str(tmp_path / "whole"))
    assert policy(np.zeros(4, np.float32)).dtype == np.int32


@pytest.mark.slow
def test_dqn_reaches_475_on_cartpole(tmp_path):
    """DQN's defaults reach an evaluation of ≥ 475 (10 greedy episodes) on CartPole-v1 within
    40k env steps (seed 0; ~1.5 min). DQN on CartPole is known to oscillate: seed 0's
    evaluations every 5k steps were 444, 430, 136, 58, 56, 218, 271, 500."""
    run = dataclasses.replace(dqn.Config().run, total_steps=40_000, eval_interval=5_000,
                              run_dir=str(tmp_path / "dqn"), progress=False, seed=0)
    summary = dqn.main(dqn.Config(run=run))
    assert summary["best_eval_return"] >= 475, summary

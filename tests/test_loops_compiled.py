"""JAX-native envs (gymnax) and the off-policy loop compiled end to end with them."""

import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl.algorithms import sac, td3
from eqxrl.envs.native import JaxEnv, make_jax_env, rollout_returns

pytest.importorskip("gymnax")


def counter_env(terminal_at: int, limit: int) -> JaxEnv:
    """A hand-made JaxEnv: obs [t], reward 1 per step, terminated when t reaches
    `terminal_at`, truncated at `limit` steps."""
    spec = eqxrl.EnvSpec(jax.ShapeDtypeStruct((1,), jnp.float32), (), discrete=True,
                         num_actions=2)

    def reset(key):
        return jnp.zeros(1), jnp.int32(0)

    def step(key, t, action):
        t = t + 1
        return jnp.array([t], jnp.float32), t, 1.0, t == terminal_at

    return JaxEnv(env_id="test:counter", spec=spec, max_episode_steps=limit, _reset=reset,
                  _step=step)


def run_steps(env, n):
    obs, state = env.reset(jax.random.key(0))
    out = []
    for i in range(n):
        stepped = env.step(jax.random.key(i), state, jnp.int32(0))
        out.append(stepped)
        state = stepped.state
    return out


def test_auto_reset_keeps_the_final_observation_and_tells_terminated_from_truncated():
    terminated = run_steps(counter_env(terminal_at=3, limit=5), 4)
    assert [bool(s.terminated) for s in terminated] == [False, False, True, False]
    assert not any(bool(s.truncated) for s in terminated)
    assert float(terminated[2].final_obs[0]) == 3.0  # the terminal observation, kept
    assert float(terminated[2].obs[0]) == 0.0  # the next episode's first
    assert float(terminated[2].episode_return) == 3.0
    assert np.isnan(float(terminated[1].episode_return))

    truncated = run_steps(counter_env(terminal_at=99, limit=5), 6)
    assert [bool(s.truncated) for s in truncated] == [False] * 4 + [True, False]
    assert not any(bool(s.terminated) for s in truncated)
    assert float(truncated[4].final_obs[0]) == 5.0 and float(truncated[4].obs[0]) == 0.0
    assert int(truncated[4].episode_length) == 5
    assert float(truncated[5].final_obs[0]) == 1.0  # the new episode counts from its reset


def test_a_truncated_step_bootstraps_from_its_final_observation_a_terminated_one_does_not():
    # An env that terminates exactly at its time limit: terminated, not truncated.
    env = counter_env(terminal_at=3, limit=3)
    steps = run_steps(env, 6)
    final = np.array([float(s.final_obs[0]) for s in steps])
    np.testing.assert_array_equal(final, [1, 2, 3, 1, 2, 3])
    term = np.array([bool(s.terminated) for s in steps])
    trunc = np.array([bool(s.truncated) for s in steps])
    np.testing.assert_array_equal(term, [False, False, True, False, False, True])
    np.testing.assert_array_equal(trunc, [False] * 6)

    # A rollout of 3 steps cut by the time limit; V(s) = 10·s, γ = 0.5, λ = 1.
    env = counter_env(terminal_at=99, limit=3)
    steps = run_steps(env, 3)
    trunc = np.array([bool(s.truncated) for s in steps])
    np.testing.assert_array_equal(trunc, [False, False, True])
    reward = jnp.ones(3)
    value = 10.0 * jnp.array([0.0, 1.0, 2.0])
    next_value = 10.0 * jnp.array([float(s.final_obs[0]) for s in steps])
    adv, ret = eqxrl.gae(reward, value, next_value, jnp.zeros(3, bool), jnp.asarray(trunc),
                         0.5, 1.0)
    # δ = r + γ·V(s') − V(s): [1 + 5 − 0, 1 + 10 − 10, 1 + 15 − 20] = [6, 1, −4];
    # A_2 = −4, A_1 = 1 + 0.5·(−4) = −1, A_0 = 6 + 0.5·(−1) = 5.5
    np.testing.assert_allclose(adv, [5.5, -1.0, -4.0])
    np.testing.assert_allclose(ret, [5.5, 9.0, 16.0])
    # the same step terminated instead: no bootstrap, δ_2 = 1 − 20 = −19
    adv, _ = eqxrl.gae(reward, value, next_value, jnp.array([False, False, True]),
                       jnp.zeros(3, bool), 0.5, 1.0)
    np.testing.assert_allclose(adv, [6 + 0.5 * (1 + 0.5 * -19), 1 + 0.5 * -19, -19.0])


def test_gymnax_specs_and_action_rescaling():
    pendulum = make_jax_env("gymnax:Pendulum-v1")
    assert pendulum.spec.action_shape == (1,) and not pendulum.spec.discrete
    assert pendulum.spec.action_low == (-1.0,) and pendulum.env_high == (2.0,)
    assert float(pendulum._env_action(jnp.array([1.0]))[0]) == 2.0
    assert float(pendulum._env_action(jnp.array([3.0]))[0]) == 2.0  # clipped to [-1, 1] first
    assert float(pendulum._env_action(jnp.array([-0.5]))[0]) == -1.0
    cartpole = make_jax_env("gymnax:CartPole-v1")
    assert cartpole.spec.discrete and cartpole.spec.num_actions == 2
    assert cartpole.max_episode_steps == 500
    returns, lengths = jax.jit(lambda k: rollout_returns(
        pendulum, lambda o: jnp.zeros((o.shape[0], 1)), k, 3))(jax.random.key(0))
    assert returns.shape == (3,) and np.all(np.asarray(lengths) == 200)


@pytest.mark.parametrize("env_id", ["gymnax:Pendulum-v1", "gymnax:CartPole-v1"])
def test_a_reset_state_has_the_types_of_a_stepped_one(env_id):
    """gymnax starts `time` as a Python int and Pendulum's `last_u` as a weakly typed float;
    if `reset` kept them so, a step would change the state's types and every compiled call
    that takes the state (the compiled loop's chunk) would compile a second time."""
    env = make_jax_env(env_id)
    action = jnp.zeros(env.spec.action_shape, jnp.int32 if env.spec.discrete else jnp.float32)

    def types(state):
        return [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(state)]

    _, reset = jax.eval_shape(env.reset, jax.random.key(0))
    stepped = jax.eval_shape(lambda k: env.step(k, env.reset(k)[1], action), jax.random.key(0))
    assert types(reset) == types(stepped.state)
    assert not any(weak for _, _, weak in types(reset))


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="not a JAX-native env.*gymnax:"):
        make_jax_env("Pendulum-v1")
    with pytest.raises(TypeError, match="gymnasium env object is stepped on the host"):
        make_jax_env(eqxrl.make_env("Pendulum-v1"))
    with pytest.raises(ValueError, match="render_mode.*host-only"):
        make_jax_env("gymnax:Pendulum-v1", render_mode="rgb_array")
    with pytest.raises(ValueError, match="gymnax has no env 'Pendulum-v9'"):
        make_jax_env("gymnax:Pendulum-v9")
    with pytest.raises(ValueError, match="JAX-native env, not a gymnasium one"):
        eqxrl.make_env("gymnax:Pendulum-v1")
    config = sac.Config(run=eqxrl.OnlineRun(env_id="Pendulum-v1", total_steps=10,
                                            start_steps=5))
    with pytest.raises(ValueError, match="stepped on the host, not inside a compiled loop"):
        eqxrl.train_compiled(config, sac)
    config = sac.Config(run=eqxrl.OnlineRun(env_id="gymnax:Pendulum-v1", total_steps=10,
                                            start_steps=5))
    with pytest.raises(ValueError, match="make_env builds host"):
        eqxrl.train_online(config, sac, make_env=lambda env_id: eqxrl.make_env(env_id))


def small(algorithm, tmp_path, name, **run):
    settings = dict(env_id="gymnax:Pendulum-v1", total_steps=400, start_steps=150,
                    batch_size=16, buffer_size=1000, log_interval=100, eval_interval=200,
                    checkpoint_interval=200, eval_episodes=2, progress=False,
                    run_dir=str(tmp_path / name))
    return algorithm.Config(run=eqxrl.OnlineRun(**(settings | run)), hidden_dims=(16, 16))


def test_compiled_sac_run_writes_a_run_folder_and_keeps_each_final_observation(tmp_path, capsys):
    summary = eqxrl.train_online(small(sac, tmp_path, "whole"), sac)
    assert summary["status"] == "done" and summary["steps"] == 400 and summary["episodes"] == 2
    said = capsys.readouterr().err  # the compile is announced, with --no-progress too
    assert "compiling the training loop (XLA, once per run) ..." in said
    assert re.search(r"compiled, and ran the first \d+ steps, in \d+\.\d s", said)
    for f in ("config.json", "train.csv", "eval.csv", "summary.json"):
        assert os.path.exists(tmp_path / "whole" / f), f
    assert len((tmp_path / "whole" / "train.csv").read_text().splitlines()) == 1 + 3  # 200..400
    # The buffer keeps each episode's final observation: step 200 was truncated (Pendulum's
    # time limit), its next_obs is where the pendulum went, not the next episode's start.
    data = eqxrl.load_run(str(tmp_path / "whole"), buffer=True).buffer.data
    assert bool(data.truncated[199]) and not bool(data.terminated[199])
    assert not np.allclose(np.asarray(data.next_obs[199]), np.asarray(data.obs[200]))
    np.testing.assert_allclose(np.asarray(data.next_obs[198]), np.asarray(data.obs[199]))
    cos, sin = np.asarray(data.next_obs[199][:2])
    assert abs(cos**2 + sin**2 - 1) < 1e-5
    policy, _ = eqxrl.load_policy(str(tmp_path / "whole"))
    assert policy(np.zeros(3, np.float32)).shape == (1,)


@pytest.mark.slow  # 20 s (PPO's compiled resume is in the default suite)
def test_compiled_sac_resume_equals_an_uninterrupted_run(tmp_path):
    eqxrl.train_online(small(sac, tmp_path, "whole"), sac)
    eqxrl.train_online(small(sac, tmp_path, "part", total_steps=200), sac)
    resumed = dataclasses.replace(small(sac, tmp_path, "part"), run=dataclasses.replace(
        small(sac, tmp_path, "part").run, resume=str(tmp_path / "part")))
    eqxrl.train_online(resumed, sac)
    a = eqxrl.load_run(str(tmp_path / "whole"), buffer=True)
    b = eqxrl.load_run(str(tmp_path / "part"), buffer=True)
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(a.buffer.data.obs), np.asarray(b.buffer.data.obs))


@pytest.mark.slow  # 12 s; the default suite is near its 10-minute budget
def test_compiled_loop_trains_several_agents_and_td3(tmp_path):
    summary = eqxrl.train_online(small(td3, tmp_path, "td3", num_seeds=2, total_steps=400), td3)
    assert summary["status"] == "done" and len(summary["agents"]) == 2
    rows = (tmp_path / "td3" / "eval.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2  # steps 200 and 400, two agents each
    with open(tmp_path / "td3" / "summary.json") as f:
        assert [a["seed"] for a in json.load(f)["agents"]] == [0, 1]


@pytest.mark.slow
def test_compiled_sac_learns_gymnax_pendulum(tmp_path):
    # Measured: final eval −84.5 at 6000 steps, seed 0, ~40 s on 2 CPU cores.
    config = sac.Config(run=eqxrl.OnlineRun(
        env_id="gymnax:Pendulum-v1", total_steps=6000, start_steps=1000, eval_interval=6000,
        progress=False, run_dir=str(tmp_path / "run")))
    summary = eqxrl.train_online(config, sac)
    assert summary["final_eval_return"] > -300, summary


@pytest.mark.slow  # Brax compiles for ~14 s on CPU
def test_brax_envs_have_the_same_interface():
    pytest.importorskip("brax")
    env = make_jax_env("brax:inverted_pendulum", episode_length=3)
    assert env.spec.action_shape == (1,) and env.max_episode_steps == 3
    obs, state = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    flags = []
    for i in range(4):
        out = step(jax.random.key(i), state, jnp.zeros(1))
        flags.append((bool(out.terminated), bool(out.truncated)))
        state = out.state
    assert flags == [(False, False), (False, False), (False, True), (False, False)]
    assert out.obs.shape == obs.shape == (4,)

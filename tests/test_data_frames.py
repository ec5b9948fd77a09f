"""`FrameReplayBuffer`: each frame stored once, stacks rebuilt exactly (at episode starts, across
the ring's wrap, after the frame ring overwrites old frames), n-step windows, memory, and the
online loop on a frame-stacked env (DQN, exact resume)."""

import dataclasses

import equinox as eqx
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import FrameStackObservation, TransformObservation

import eqxrl
from eqxrl import ReplayBuffer, Transition
from eqxrl.algorithms import dqn
from eqxrl.data.frames import COUNTER_FIELDS, ROW_FIELDS, FrameReplayBuffer
from eqxrl.data.saved import buffer_from_saved, buffer_saved, buffer_saved_like, make_buffer
from eqxrl.envs import mark_frame_stack
from eqxrl.run.agents import tree_bytes

from .conftest import assert_trees_equal, whole_and_resumed

STACK = 3


class CountingFrames(gym.Env):
    """6×6 uint8 frames that carry a step counter (started at random by each reset, so an
    episode depends only on its reset seed) and a 2-vector state; episodes end at random,
    terminated or (after `max_length` steps) truncated; reward = the counter."""

    observation_space = spaces.Dict({
        "pixels": spaces.Box(0, 255, (6, 6, 1), np.uint8),
        "state": spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    action_space = spaces.Discrete(2)

    def __init__(self, max_length=12):
        self.t = 0
        self.length = 0
        self.max_length = max_length

    def _obs(self):
        pixels = np.full((6, 6, 1), self.t % 251, np.uint8)
        pixels[0, 0, 0] = self.t // (251 * 256)  # distinct frames for t < 251·256²
        pixels[0, 1, 0] = (self.t // 251) % 256
        return {"pixels": pixels, "state": np.array([self.t, -self.t], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.length = 0
        self.t = int(self.np_random.integers(0, 10_000_000))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.length += 1
        terminated = bool(self.np_random.random() < 0.15)
        truncated = not terminated and self.length >= self.max_length
        return self._obs(), float(self.t), terminated, truncated, {}


def stacked(env, k=STACK):
    """k frames along the last axis, oldest first, the first repeated at a reset."""
    env = FrameStackObservation(env, k)
    pixels = spaces.Box(0, 255, (6, 6, k), np.uint8)
    state = spaces.Box(-np.inf, np.inf, (2 * k,), np.float32)

    def channels_last(obs):
        return {"pixels": np.concatenate(list(obs["pixels"]), axis=-1),
                "state": np.reshape(obs["state"], (-1,))}

    env = TransformObservation(env, channels_last, spaces.Dict({"pixels": pixels,
                                                                "state": state}))
    return mark_frame_stack(env, k)


gym.register("eqxrl-test/CountingFrames-v0", entry_point=lambda: stacked(CountingFrames()))
gym.register("eqxrl-test/OneStepFrames-v0", entry_point=lambda: stacked(CountingFrames(1)))


def transitions(n, seed=0, env_id="eqxrl-test/CountingFrames-v0"):
    """`n` transitions of the stacked env, in order, as the online loop stores them."""
    env = eqxrl.make_env(env_id)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        next_obs, reward, terminated, truncated, _ = env.step(0)
        rows.append(Transition(
            obs=jax.tree.map(jnp.asarray, obs), action=jnp.int32(0),
            reward=jnp.float32(reward), next_obs=jax.tree.map(jnp.asarray, next_obs),
            terminated=jnp.bool_(terminated), truncated=jnp.bool_(truncated)))
        obs = env.reset()[0] if terminated or truncated else next_obs
    spec = eqxrl.spec_from_env(env)
    env.close()
    return spec, rows


def fill(buffer, rows):
    add = jax.jit(lambda b, r: b.add(r))
    for row in rows:
        buffer = add(buffer, row)
    return buffer


def by_reward(rows):
    return {float(r.reward): r for r in rows}  # rewards are distinct env steps


def assert_rows_exact(batch, rows):
    """Every sampled transition equals the stored one with its reward (env step)."""
    known = by_reward(rows)
    for i in range(batch.reward.shape[0]):
        got = jax.tree.map(lambda x, i=i: x[i], batch)
        assert_trees_equal(got, known[float(got.reward)])


def test_the_spec_knows_the_stack_and_the_loop_picks_the_frame_buffer():
    spec, _ = transitions(1)
    assert spec.frame_stack == STACK
    assert isinstance(make_buffer(spec, 10), FrameReplayBuffer)
    plain = dataclasses.replace(spec, frame_stack=1)
    assert isinstance(make_buffer(plain, 10), ReplayBuffer)
    with pytest.raises(ValueError, match=r"frame_stack=4: an observation of shape \(6, 6, 3\)"):
        dataclasses.replace(spec, frame_stack=4)


@pytest.mark.slow  # 11 s; the default run stays within ~6 minutes on 2 cores
def test_stacks_are_rebuilt_exactly_at_episode_starts_and_across_the_wrap():
    spec, rows = transitions(300)
    ends = [bool(r.terminated | r.truncated) for r in rows]
    assert sum(ends) > 20  # many episode starts
    buffer = fill(FrameReplayBuffer.create(spec, 64), rows)  # wrapped 4 times
    # episodes of ~6 steps need ~1.17 frames per row, a little more than the ring's 1.13: the
    # oldest couple of rows lost their first frames
    size = int(buffer.size)
    assert 58 <= size <= 64
    batch = jax.jit(lambda b, k: b.sample(k, 256))(buffer, jax.random.key(0))
    assert_rows_exact(batch, rows[-size:])
    assert len(set(np.asarray(batch.reward).tolist())) > 50  # most rows drawn
    # n-step windows: the same first rows and windows as a plain buffer of the same rows
    plain = fill(ReplayBuffer.create(rows[0], 64), rows)
    windows = buffer.sample_n_step(jax.random.key(1), 256, 3)
    reference = plain.sample_n_step(jax.random.key(3), 4096, 3)
    first_reward = np.asarray(reference.rewards[:, 0])
    for i in range(256):
        j = int(np.flatnonzero(first_reward == float(windows.rewards[i, 0]))[0])
        assert_trees_equal(jax.tree.map(lambda x, i=i: x[i], windows),
                           jax.tree.map(lambda x, j=j: x[j], reference))


def test_rows_whose_frames_were_overwritten_are_no_longer_sampled():
    # one-step episodes: two frames per transition, more than the ring keeps
    spec, short = transitions(200, env_id="eqxrl-test/OneStepFrames-v0")
    buffer = fill(FrameReplayBuffer.create(spec, 40), short)
    frames = buffer.frame_capacity  # 40 + 5 + 3
    assert int(buffer.size) < 40 and int(buffer.size) >= (frames - STACK) // 2 - 1
    batch = buffer.sample(jax.random.key(0), 200)
    # one-step episodes: obs is the reset frame repeated, next_obs the step's frames
    assert_rows_exact(batch, short)


def test_a_checkpoint_keeps_only_the_frames_its_rows_read_and_resumes_exactly():
    # After the rows wrap, the ring's oldest frames belong to no row; a checkpoint drops them
    # (~capacity // 8 frames), and the buffer read back samples and grows as the original.
    spec, rows = transitions(250)
    buffer = fill(FrameReplayBuffer.create(spec, 64), rows[:200])
    saved, sizes = buffer_saved(buffer, 64)
    lo = max(int(buffer.frame[int(buffer.position) - int(buffer.size)]) - (STACK - 1),
             int(buffer.start[int(buffer.position) - int(buffer.size)]))
    assert sizes["buffer_frames"] == int(buffer.frames_written) - lo
    assert sizes["buffer_frames"] < buffer.frame_capacity  # stale frames are not kept
    assert saved["frames"]["pixels"].dtype == np.uint8
    assert saved["frames"]["pixels"].shape == (sizes["buffer_frames"], 6, 6, 1)
    back = buffer_from_saved(saved, spec, 64)
    assert_trees_equal(buffer_saved(back, 64)[0], saved)
    buffer, back = fill(buffer, rows[200:]), fill(back, rows[200:])
    for key in range(3):
        assert_trees_equal(buffer.sample(jax.random.key(key), 128),
                           back.sample(jax.random.key(key), 128))
        assert_trees_equal(buffer.sample_n_step(jax.random.key(key), 64, 3),
                           back.sample_n_step(jax.random.key(key), 64, 3))
    assert_trees_equal(buffer_saved(buffer, 64), buffer_saved(back, 64))
    # several agents (as the online loop saves them: the agent axis first), each with its
    # own number of frames written
    agents = [fill(FrameReplayBuffer.create(spec, 64), transitions(n, seed)[1])
              for n, seed in ((30, 1), (120, 2))]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *agents)
    saved, sizes = buffer_saved(stacked, 64)
    back = jax.vmap(lambda s: buffer_from_saved(s, spec, 64))(saved)
    for i, one in enumerate(agents):
        assert_trees_equal(one.sample(jax.random.key(i), 64),
                           jax.tree.map(lambda x, i=i: x[i], back).sample(jax.random.key(i), 64))


def test_a_checkpoint_that_kept_the_first_frames_of_the_ring_still_loads():
    # eqxrl before `buffer_format` 2 saved the first `buffer_frames` frames of the ring
    spec, rows = transitions(100)
    buffer = fill(FrameReplayBuffer.create(spec, 64), rows)
    frames = buffer.frames_in_use()
    old = {name: getattr(buffer, name)[: min(100, 64)] for name in ROW_FIELDS}
    old |= {"frames": jax.tree.map(lambda x: x[:frames], buffer.frames)}
    old |= {name: getattr(buffer, name) for name in COUNTER_FIELDS}
    meta = {"buffer_rows": 64, "buffer_frames": frames}
    like = buffer_saved_like(spec, 64, meta)
    assert jax.tree.structure(like) == jax.tree.structure(old)
    assert_trees_equal(buffer_from_saved(old, spec, 64), buffer)
    with pytest.raises(ValueError, match="buffer_format 3, which this version of eqxrl cannot"):
        buffer_saved_like(spec, 64, meta | {"buffer_format": 3})


def test_memory_per_transition_is_near_one_frame():
    image = jax.ShapeDtypeStruct((84, 84, 4), np.dtype("uint8"))
    spec = eqxrl.EnvSpec(image, (), discrete=True, num_actions=6, frame_stack=4)
    capacity = 10_000
    frames = tree_bytes(jax.eval_shape(lambda: FrameReplayBuffer.create(spec, capacity)))
    naive = tree_bytes(jax.eval_shape(
        lambda: ReplayBuffer.create(spec.example_transition(), capacity)))
    frame = 84 * 84
    assert frames / capacity < 1.14 * frame + 64  # ~1.13 frames and ~20 bytes of row data
    assert naive / capacity > 8 * frame  # obs and next_obs, 4 frames each
    print(f"bytes per transition: {frames / capacity:.0f} (one frame {frame}), "
          f"plain buffer {naive / capacity:.0f}")


def small_run(tmp_path, name, **run):
    settings = dict(env_id="eqxrl-test/CountingFrames-v0", total_steps=120, start_steps=40,
                    batch_size=8, buffer_size=50, log_interval=20, eval_interval=120,
                    checkpoint_interval=60, eval_episodes=1, progress=False,
                    run_dir=str(tmp_path / name))
    return dqn.Config(run=eqxrl.OnlineRun(**(settings | run)), hidden_dims=(8,),
                      vision=eqxrl.vision.EncoderConfig("impala"), epsilon_decay_steps=50)


@pytest.mark.slow  # 45 s: three runs compile DQN's IMPALA update
def test_dqn_on_stacked_frames_resumes_exactly(tmp_path):
    a, b = whole_and_resumed(dqn, small_run, tmp_path, 60)
    assert isinstance(a.buffer, FrameReplayBuffer)
    assert_trees_equal(eqx.filter(a.state, eqx.is_array), eqx.filter(b.state, eqx.is_array))
    assert_trees_equal(a.buffer, b.buffer)
    data = a.buffer.to_dataset()  # full stacks, oldest first
    assert data.data.obs["pixels"].shape == (50, 6, 6, STACK)


# ---------------------------------------------------------------- Atari (ale-py)
def test_atari_frames_are_stored_once_and_rebuilt_exactly():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    env = eqxrl.make_env("ALE/Pong-v5")
    spec = eqxrl.spec_from_env(env)
    assert spec.observation.shape == (84, 84, 4) and spec.frame_stack == 4
    obs, _ = env.reset(seed=0)
    assert all(np.array_equal(obs[..., 0], obs[..., j]) for j in range(4))  # reset repeats
    rows = []
    for t in range(120):
        next_obs, reward, terminated, truncated, _ = env.step(t % spec.num_actions)
        truncated = truncated or t % 50 == 49  # episode starts within the buffer
        rows.append(Transition(jnp.asarray(obs), jnp.int32(t % spec.num_actions),
                               jnp.float32(t), jnp.asarray(next_obs), jnp.bool_(terminated),
                               jnp.bool_(truncated)))
        obs = env.reset(seed=t)[0] if terminated or truncated else next_obs
    env.close()
    buffer = fill(FrameReplayBuffer.create(spec, 100), rows)
    assert_rows_exact(buffer.sample(jax.random.key(0), 100), rows[-int(buffer.size):])


@pytest.mark.slow
def test_dqn_runs_on_atari_pong(tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    run = eqxrl.OnlineRun(env_id="ALE/Pong-v5", total_steps=300, start_steps=200,
                          batch_size=8, buffer_size=300, update_every=4, log_interval=100,
                          eval_interval=300, eval_episodes=1, progress=False,
                          run_dir=str(tmp_path / "pong"))
    summary = dqn.main(dqn.Config(run=run, hidden_dims=(32,), clip_rewards=True))
    assert summary["status"] == "done"
    metrics = eqxrl.run.read_metrics(str(tmp_path / "pong" / "train.csv"))
    assert np.all(np.isfinite(metrics["q/loss"]))
    loaded = eqxrl.load_run(str(tmp_path / "pong"), buffer=True)
    assert isinstance(loaded.buffer, FrameReplayBuffer)


@pytest.mark.parametrize("kind", ["frames", "plain"])
def test_adding_a_row_updates_the_donated_buffer_in_place(kind):
    # The online loop holds one agent's buffer with an agent axis of 1 and drops it inside
    # the donated store call (Agents.over). A FrameReplayBuffer.add written as two scatters
    # made XLA copy the whole frame ring there on every env step (0.97 s a step for DrQ's
    # 100k-row buffer); the compiled call's scratch memory must stay far below the buffer's.
    image = jax.ShapeDtypeStruct((84, 84, 9), np.dtype("uint8"))
    spec = eqxrl.EnvSpec(image, (1,), action_low=(-1.0,), action_high=(1.0,), frame_stack=3)
    make = (lambda: FrameReplayBuffer.create(spec, 5_000)) if kind == "frames" else (
        lambda: ReplayBuffer.create(spec.example_transition(), 5_000))
    buffer = jax.eval_shape(lambda: jax.tree.map(lambda x: x[None], make()))
    store = jax.jit(lambda b, row: jax.tree.map(
        lambda x: x[None], jax.tree.map(lambda x: x[0], b).add(row)), donate_argnums=0)
    memory = store.lower(buffer, spec.example_transition()).compile().memory_analysis()
    assert memory.temp_size_in_bytes < 0.01 * tree_bytes(buffer), memory

"""Pixel observations rendered headless from real gymnasium environments."""

import importlib.util
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from eqxrl.envs.pixels import configure_headless_rendering, make_pixel_env, resize_frame


def _mujoco_renders() -> str | None:
    """Why MuJoCo cannot render headless here, or None when it can."""
    backend = configure_headless_rendering()
    try:
        env = gym.make("InvertedPendulum-v5", render_mode="rgb_array", width=16, height=16)
        env.reset(seed=0)
        env.render()
        env.close()
    except Exception as error:  # noqa: BLE001 - any GL failure means "cannot render here"
        return (
            f"MuJoCo cannot render with MUJOCO_GL={backend} ({type(error).__name__}: {error}); "
            "install EGL (apt-get install -y --no-install-recommends libegl1 libgl1) or "
            "OSMesa (libosmesa6)."
        )
    return None


SKIP_REASON = _mujoco_renders()
needs_gl = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


@needs_gl
def test_mujoco_pixels_of_requested_size():
    env = make_pixel_env("InvertedPendulum-v5", size=(48, 40))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (48, 40, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert obs.std() > 0  # something was drawn
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs.shape == (48, 40, 3)
    env.close()


_FRAME_STACK_CHECK = """
import numpy as np
from eqxrl.envs import make_pixel_env

env = make_pixel_env("HalfCheetah-v5", size=(32, 32), include_state=True, frame_stack=3)
obs, _ = env.reset(seed=0)
assert set(obs) == {"pixels", "state"}
assert obs["pixels"].shape == (32, 32, 9) and obs["pixels"].dtype == np.uint8
assert obs["state"].shape == (3 * 17,)
assert env.observation_space.contains(obs)
for _ in range(3):
    obs, *_ = env.step(env.action_space.sample())
assert obs["pixels"].std() > 0, "HalfCheetah rendered black frames"
# The newest frame sits in the last three channels; the cheetah moved, so frames differ.
assert not np.array_equal(obs["pixels"][..., :3], obs["pixels"][..., 6:])
env.close()
"""


@needs_gl
def test_mujoco_pixels_with_state_and_frame_stack():
    # A fresh interpreter: GL state is per process, and after the whole suite (though after
    # neither half of it) this env has rendered black frames in the shared test process.
    result = subprocess.run(
        [sys.executable, "-c", _FRAME_STACK_CHECK], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("pygame") is None, reason="pygame not installed")
def test_classic_control_frames_are_resized():
    env = make_pixel_env("CartPole-v1", size=(40, 60), include_state=True)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (40, 60, 3) and obs["state"].shape == (4,)
    assert env.observation_space.contains(obs)
    env.close()


def test_resize_frame_averages_areas():
    frame = np.arange(4 * 6 * 1, dtype=np.uint8).reshape(4, 6, 1)
    out = resize_frame(frame, (2, 3))
    expected = frame.reshape(2, 2, 3, 2, 1).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.uint8))
    assert resize_frame(frame, (4, 6)).tolist() == frame.tolist()


@pytest.mark.skipif(importlib.util.find_spec("pygame") is None, reason="pygame not installed")
def test_action_repeat_steps_k_times_renders_once_and_stops_at_the_end():
    from eqxrl import make_env
    from eqxrl.envs.gym import pixel_env_options

    plain, repeated = (make_pixel_env("CartPole-v1", size=(40, 40), include_state=True,
                                      action_repeat=k) for k in (1, 3))
    plain.reset(seed=0)
    repeated.reset(seed=0)
    total = 0.0
    for _ in range(3):
        obs, reward, *_ = plain.step(1)
        total += reward
    again, reward, *_ = repeated.step(1)  # the same three steps, one observation
    np.testing.assert_array_equal(again["state"], obs["state"])
    np.testing.assert_array_equal(again["pixels"], obs["pixels"])
    assert reward == total == 3.0
    steps = 0  # pushing one way drops the pole in ~10 steps; the episode ends mid-repeat
    while not repeated.step(1)[2]:
        steps += 1
    assert steps < 10
    assert repeated.unwrapped.steps_beyond_terminated == 0  # no step after the end
    # the env id carries the options, so datasets and evaluations remake the same env
    assert pixel_env_options("pixels:CartPole-v1,action_repeat=4,frame_stack=2") == (
        "CartPole-v1", {"action_repeat": 4, "frame_stack": 2})
    env = make_env("pixels:CartPole-v1,action_repeat=4,frame_stack=2")
    assert env.observation_space.shape == (84, 84, 6)
    with pytest.raises(ValueError, match=r"'repeat=4' is not a pixel-env option.*action_repeat"):
        make_env("pixels:CartPole-v1,repeat=4")
    with pytest.raises(ValueError, match="action_repeat must be >= 1; got 0"):
        make_pixel_env("CartPole-v1", action_repeat=0)

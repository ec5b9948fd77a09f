"""Pixel observations from gymnasium environments, rendered headless.

`make_pixel_env("HalfCheetah-v5", size=(84, 84))` returns an env whose observations are
uint8 `(84, 84, 3)` frames, or `{"pixels": frame, "state": proprio}` with
`include_state=True`. It is built from gymnasium's own `AddRenderObservation`,
`FrameStackObservation` and `TransformObservation`. MuJoCo envs render directly at the
requested size; other envs (classic control via pygame) are area-resized on the host,
because gymnasium's `ResizeObservation` needs OpenCV and handles no dict observations.
"""

import ctypes.util
import os
import sys
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import AddRenderObservation, FrameStackObservation, TransformObservation

FRAME_STACK_ATTRIBUTE = "eqxrl_frame_stack"


def mark_frame_stack(env: gym.Env, k: int) -> gym.Env:
    """Tell `spec_from_env` that `env`'s observations stack its last `k` frames along their
    last axis, oldest first, and repeat the first frame at an episode's start."""
    env = gym.Wrapper(env)
    setattr(env, FRAME_STACK_ATTRIBUTE, k)
    return env


def configure_headless_rendering() -> str:
    """Pick a headless OpenGL backend for MuJoCo (EGL, else OSMesa) and SDL's dummy driver.

    Only fills in variables the user has not set, and must run before `mujoco` is imported
    to take effect; returns the MuJoCo backend in use.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame (classic control) has no card
    if "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules:
        if ctypes.util.find_library("EGL"):
            os.environ["MUJOCO_GL"] = "egl"
        elif ctypes.util.find_library("OSMesa"):
            os.environ["MUJOCO_GL"] = "osmesa"
            # PyOpenGL reads this too; without it, it looks for GLX.
            os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    backend = os.environ.get("MUJOCO_GL", "glfw")
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a uint8 `(h, w, c)` frame to `size` = (height, width), on the host."""
    rows = _area_weights(frame.shape[0], size[0])
    cols = _area_weights(frame.shape[1], size[1])
    # Two matrix products (rows, then columns): a three-operand einsum ran without BLAS, ~1 s
    # for one 500x500 Pendulum frame.
    h, w, c = frame.shape
    tall = rows @ frame.astype(np.float32).reshape(h, w * c)  # (out_h, w * c)
    wide = tall.reshape(size[0], w, c).transpose(0, 2, 1) @ cols.T  # (out_h, c, out_w)
    out = wide.transpose(0, 2, 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    # weights[o, i] = share of input pixel i inside output pixel o's footprint.
    edges = np.linspace(0.0, n_in, n_out + 1)
    starts = np.arange(n_in)
    lo = np.maximum(edges[:-1, None], starts[None, :])
    hi = np.minimum(edges[1:, None], starts[None, :] + 1)
    weights = np.clip(hi - lo, 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def make_pixel_env(
    env_id: str,
    *,
    size: tuple[int, int] = (84, 84),
    include_state: bool = False,
    frame_stack: int = 1,
    action_repeat: int = 1,
    **make_kwargs: Any,
) -> gym.Env:
    """Make `env_id` with uint8 pixel observations of `size` = (height, width).

    Args:
        env_id: a gymnasium env id whose env renders `rgb_array` frames.
        size: the observed frames' `(height, width)`; MuJoCo envs render at that size, others
            are resized to it.
        include_state: observe `{"pixels": ..., "state": ...}` instead of pixels alone.
        frame_stack: stack the last k frames along channels, `(h, w, k * 3)`; a state is
            stacked as `(k * state_dim,)`.
        action_repeat: apply each action `action_repeat` times (rewards summed, stopping at an
            episode's end) and render only the last frame, as DrQ does (2 to 8 on the DeepMind
            Control tasks): motion between stacked frames becomes visible, and rendering
            costs fall by that factor.
        make_kwargs: passed to `gym.make` (e.g. `camera_id` for MuJoCo envs).
    """
    if frame_stack < 1:
        raise ValueError(f"make_pixel_env: frame_stack must be >= 1; got {frame_stack}.")
    if action_repeat < 1:
        raise ValueError(f"make_pixel_env: action_repeat must be >= 1; got {action_repeat}.")
    configure_headless_rendering()
    height, width = size
    entry_point = str(gym.spec(env_id).entry_point)
    if "mujoco" in entry_point:
        make_kwargs = {"width": width, "height": height, **make_kwargs}
    env = gym.make(env_id, render_mode="rgb_array", **make_kwargs)
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    env = AddRenderObservation(env, render_only=not include_state)

    frame_space = env.observation_space["pixels"] if include_state else env.observation_space
    if frame_space.shape[:2] != (height, width):
        env = _map_pixels(
            env,
            include_state,
            (height, width, frame_space.shape[2]),
            lambda frame: resize_frame(frame, size),
        )
    if frame_stack > 1:
        env = FrameStackObservation(env, frame_stack)
        channels = (
            env.observation_space["pixels"].shape[-1]
            if include_state
            else (env.observation_space.shape[-1])
        )
        env = _map_pixels(
            env, include_state, (height, width, frame_stack * channels), _frames_to_channels
        )
        if include_state:
            env = _flatten_stacked_state(env)
        env = mark_frame_stack(env, frame_stack)  # the replay then stores each frame once
    return env


class ActionRepeat(gym.Wrapper):
    """Each action applied `repeat` times; rewards are summed and the last step's observation
    and info are returned. An episode that ends inside a repeat ends there."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        """Apply `action` up to `repeat` times: the last `(obs, summed reward, terminated,
        truncated, info)`."""
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def _frames_to_channels(frames: np.ndarray) -> np.ndarray:
    k, h, w, c = frames.shape
    return np.ascontiguousarray(frames.transpose(1, 2, 0, 3).reshape(h, w, k * c))


def _map_pixels(env: gym.Env, include_state: bool, shape: tuple[int, int, int], fn) -> gym.Env:
    pixel_space = spaces.Box(0, 255, shape, np.uint8)
    if not include_state:
        return TransformObservation(env, fn, pixel_space)
    obs_space = spaces.Dict({**env.observation_space.spaces, "pixels": pixel_space})
    return TransformObservation(env, lambda obs: {**obs, "pixels": fn(obs["pixels"])}, obs_space)


def _flatten_stacked_state(env: gym.Env) -> gym.Env:
    state_space = env.observation_space["state"]
    flat = spaces.Box(
        state_space.low.reshape(-1), state_space.high.reshape(-1), dtype=state_space.dtype
    )
    obs_space = spaces.Dict({**env.observation_space.spaces, "state": flat})
    return TransformObservation(
        env, lambda obs: {**obs, "state": np.reshape(obs["state"], (-1,))}, obs_space
    )


def make_atari_env(env_id: str, *, frame_stack: int = 4, noop_max: int = 30,
                   frame_skip: int = 4, screen_size: int = 84,
                   terminal_on_life_loss: bool = False, **make_kwargs) -> gym.Env:
    """An Atari game of ale-py (ROMs ship with it: `pip install 'eqxrl[atari]'`) with the
    standard DQN preprocessing: up to `noop_max` no-ops at reset, `frame_skip` repeats with a
    max over the last two frames, 84×84 grayscale, and the last `frame_stack` frames stacked
    channels last, `(84, 84, 4)` uint8 (the replay stores each frame once). Rewards are the
    game's (clip them in the algorithm: `dqn.py --clip-rewards`); episodes last the whole game
    (no end at a lost life unless `terminal_on_life_loss`). `make_env("ALE/<Game>-v5")` makes
    this, with eqxrl's episode statistics."""
    try:
        import ale_py
    except ImportError as err:
        raise ImportError(
            f"env_id={env_id!r} is an Atari game, which needs ale-py (its ROMs are included): "
            "pip install 'eqxrl[atari]'.") from err
    from gymnasium.wrappers import AtariPreprocessing

    gym.register_envs(ale_py)
    env = gym.make(env_id, frameskip=1, **make_kwargs)  # AtariPreprocessing skips frames
    env = AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip,
                             screen_size=screen_size, terminal_on_life_loss=terminal_on_life_loss,
                             grayscale_obs=True, grayscale_newaxis=True)
    env = FrameStackObservation(env, frame_stack)  # (k, 84, 84, 1), the reset frame repeated
    shape = (screen_size, screen_size, frame_stack)
    env = TransformObservation(env, _frames_to_channels, spaces.Box(0, 255, shape, np.uint8))
    return mark_frame_stack(env, frame_stack)

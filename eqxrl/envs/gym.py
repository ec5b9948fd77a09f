"""Gymnasium environments with eqxrl's standard wrappers, and their `EnvSpec`."""

from __future__ import annotations

import difflib
import importlib.util
import sys
import warnings
from typing import Any

import gymnasium as gym
import jax
import numpy as np

from eqxrl.core.checks import ConfigError
from eqxrl.core.spec import EnvSpec
from eqxrl.envs.pixels import FRAME_STACK_ATTRIBUTE, make_atari_env, make_pixel_env


def _box_spec(space: gym.spaces.Box) -> jax.ShapeDtypeStruct:
    dtype = np.uint8 if space.dtype == np.uint8 else np.float32
    return jax.ShapeDtypeStruct(tuple(space.shape), np.dtype(dtype))


def spec_from_env(env: gym.Env) -> EnvSpec:
    """Build an EnvSpec from a gymnasium env's observation and action spaces."""
    obs_space = env.observation_space
    if isinstance(obs_space, gym.spaces.Box):
        observation = _box_spec(obs_space)
    elif isinstance(obs_space, gym.spaces.Dict):
        observation = tuple(
            (k, _box_spec(s))
            for k, s in sorted(obs_space.spaces.items())  # type: ignore[arg-type]
        )
    else:
        raise TypeError(
            f"Observation space {obs_space} is not supported; use a Box or a Dict of Boxes."
        )
    try:  # set by eqxrl's frame-stacking env makers (make_pixel_env, Atari)
        frame_stack = int(env.get_wrapper_attr(FRAME_STACK_ATTRIBUTE))
    except AttributeError:
        frame_stack = 1
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return EnvSpec(observation, (), discrete=True, num_actions=int(space.n),
                       frame_stack=frame_stack)
    if isinstance(space, gym.spaces.Box):
        return EnvSpec(
            observation,
            tuple(space.shape),
            action_low=tuple(float(x) for x in np.ravel(space.low)),
            action_high=tuple(float(x) for x in np.ravel(space.high)),
            frame_stack=frame_stack,
        )
    raise TypeError(f"Action space {space} is not supported; use Box or Discrete.")


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """Make a gymnasium env with eqxrl's standard wrappers.

    Bounded Box actions are rescaled to [-1, 1] (so tanh policies fit every env), float
    observations become float32, and episode return, length and time are recorded in
    `info["episode"]`. Terminated and truncated stay separate, as gymnasium returns them.
    `ALE/<Game>-v5` ids get the standard Atari preprocessing (`eqxrl.vision.make_atari_env`:
    84×84 grayscale, 4 frames stacked channels last), with ale-py installed; `pixels:<id>`
    observes the env's rendered frames (`eqxrl.vision.make_pixel_env`: 84×84 RGB, 3 frames
    stacked channels last), and `pixels:<id>,action_repeat=4,frame_stack=3` sets those two
    options in the id itself, so that datasets, evaluations and resumed runs remake the same env.
    """
    _check_env_id(env_id)
    if env_id.split(":", 1)[0] in ("gymnax", "brax"):
        raise ValueError(
            f"env_id={env_id!r} is a JAX-native env, not a gymnasium one: eqxrl.make_jax_env "
            "makes it, and the compiled loops train on it (train_online sends it there)."
        )
    if env_id.startswith("ALE/"):  # Atari, with the standard DQN preprocessing
        return gym.wrappers.RecordEpisodeStatistics(make_atari_env(env_id, **kwargs))
    if env_id.startswith("pixels:"):  # rendered frames, 84x84, the last 3 stacked (DrQ's)
        name, options = pixel_env_options(env_id)
        try:
            env = make_pixel_env(name, **({"size": (84, 84), "frame_stack": 3} | options | kwargs))
        except gym.error.Error as err:
            raise ConfigError(
                f"env_id={env_id!r}: gymnasium could not make {name!r} to render: "
                f"{str(err).strip()} Give a registered id after 'pixels:', for example "
                "pixels:Pendulum-v1; see gymnasium.pprint_registry().") from err
        if isinstance(env.action_space, gym.spaces.Box):
            env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
        return gym.wrappers.RecordEpisodeStatistics(env)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        said = str(err).strip()
        said += "" if said.endswith((".", "?", "!")) else "."
        raise ConfigError(
            f"env_id={env_id!r} could not be made by gymnasium: {said} Registered ids include "
            f"Pendulum-v1, HalfCheetah-v5, Hopper-v5; see gymnasium.pprint_registry()."
        ) from err
    space = env.action_space
    if (
        isinstance(space, gym.spaces.Box)
        and np.all(np.isfinite(space.low))
        and np.all(np.isfinite(space.high))
        and not (np.all(space.low == -1.0) and np.all(space.high == 1.0))
    ):
        env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    obs_space = env.observation_space
    if isinstance(obs_space, gym.spaces.Box) and obs_space.dtype == np.float64:
        with warnings.catch_warnings():  # the float32 Box it builds warns about the cast
            warnings.simplefilter("ignore", UserWarning)
            env = gym.wrappers.DtypeObservation(env, np.float32)
    return gym.wrappers.RecordEpisodeStatistics(env)


OWN_PREFIXES = ("pixels", "gymnax", "brax")
"""The `prefix:` forms of env ids that eqxrl itself makes (`ALE/` ids have no colon)."""


def _module_prefix(env_id: str) -> str | None:
    """The module gymnasium would import to make `env_id` (`pkg` of `pkg:Env-v0`), if any."""
    prefix, colon, _ = env_id.partition(":")
    return prefix if colon and prefix not in OWN_PREFIXES else None


def _check_env_id(env_id: Any) -> None:
    """Refuse what is not an env id, and a `prefix:` naming no module (a typo of eqxrl's own
    prefixes, say) before gymnasium tries to import it."""
    if not isinstance(env_id, str) or not env_id.strip():
        raise ConfigError(
            f"env_id must be an env id such as 'Pendulum-v1', 'gymnax:Pendulum-v1' or "
            f"'pixels:CartPole-v1', got {env_id!r}.")
    prefix = _module_prefix(env_id)
    if prefix is not None and importlib.util.find_spec(prefix.split(".")[0]) is None:
        close = difflib.get_close_matches(prefix, OWN_PREFIXES, n=1)
        hint = f" Did you mean {close[0]}:{env_id.partition(':')[2]}?" if close else ""
        raise ConfigError(
            f"env_id={env_id!r}: {prefix!r} is neither one of eqxrl's prefixes "
            f"({', '.join(p + ':' for p in OWN_PREFIXES)}) nor an importable module that "
            f"registers envs.{hint}")


def env_id_from_file(env_id: Any, source: str) -> Any:
    """`env_id` as read from a file (a run's config.json, a dataset's metadata), if making it
    imports no code the user did not choose: ids of registered envs and of eqxrl's own
    prefixes pass; `pkg:Env-v0` (which makes gymnasium import `pkg`) is refused."""
    if not isinstance(env_id, str):
        return env_id
    prefix = _module_prefix(env_id)
    if prefix is not None and prefix.split(".")[0] not in sys.modules:
        raise ConfigError(
            f"env id {env_id!r} from {source} would make gymnasium import the module "
            f"{prefix!r}, which may run any code; eqxrl imports no module named by a file. If "
            f"you trust it, name the env yourself (--env-id {env_id} on the command line), or "
            f"`import {prefix}` in Python before loading.")
    return env_id


PIXEL_ID_OPTIONS = ("action_repeat", "frame_stack")


def pixel_env_options(env_id: str) -> tuple[str, dict[str, int]]:
    """Split `pixels:<id>,key=value,...` into the gymnasium id and `make_pixel_env` options."""
    name, *parts = env_id.removeprefix("pixels:").split(",")
    options = {}
    for part in parts:
        key, _, value = part.partition("=")
        if key in PIXEL_ID_OPTIONS and not (value.isdigit() and int(value) >= 1):
            raise ValueError(
                f"env_id={env_id!r}: {key} must be a whole number >= 1, got {value!r} (for "
                f"example pixels:{name},{key}=2).")
        if key not in PIXEL_ID_OPTIONS:
            raise ValueError(
                f"env_id={env_id!r}: {part!r} is not a pixel-env option; write key=value with "
                f"key one of {', '.join(PIXEL_ID_OPTIONS)} and a positive integer value, for "
                "example pixels:CartPole-v1,action_repeat=4.")
        if key in options:
            raise ValueError(f"env_id={env_id!r} sets {key} twice; keep one.")
        options[key] = int(value)
    return name, options

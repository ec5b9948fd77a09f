"""JAX-native environments (gymnax, Brax) behind one small interface, for the compiled loops.

An env id with a prefix names one: `gymnax:Pendulum-v1`, `gymnax:CartPole-v1`, `brax:ant`.
`make_jax_env(env_id)` returns a `JaxEnv` whose `reset` and `step` are pure functions of a key
and a state, so a whole training run (act → env step → store → update) compiles into one
program, vmapped over agents and envs.

`step` resets a finished episode itself (auto-reset) and keeps what it reset away:
`final_obs` is the observation the step reached, which is the transition's `next_obs`, while
`obs` is the one to act on next (the first of the new episode). `terminated` (a true terminal
state: no bootstrap) and `truncated` (the episode's time limit: bootstrap from `final_obs`)
stay apart. Continuous actions are in [-1, 1] (clipped there, then rescaled to the env's
bounds), as `eqxrl.make_env` makes them for gymnasium envs.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxrl.core.spec import EnvSpec
from eqxrl.core.types import Obs
from eqxrl.envs.evaluation import describe_returns

PREFIXES = ("gymnax", "brax")


BRAX_EPISODE_STEPS = 1000  # Brax's own training default (its EpisodeWrapper's episode_length)


def is_jax_env_id(env_id: str | None) -> bool:
    """Whether `env_id` names a JAX-native env (`gymnax:...` or `brax:...`)."""
    return bool(env_id) and env_id.split(":", 1)[0] in PREFIXES and ":" in env_id


class EnvState(eqx.Module):
    """The env's own state and the running episode's return and length."""

    inner: Any
    episode_return: Float[Array, ""]
    episode_length: Int[Array, ""]


class Stepped(eqx.Module):
    """What one `JaxEnv.step` returns (one env; vmap it for many)."""

    obs: Obs  # the observation to act on next (a new episode's first after a reset)
    state: EnvState
    reward: Float[Array, ""]
    terminated: Bool[Array, ""]
    truncated: Bool[Array, ""]
    final_obs: Obs  # the observation this step reached: the transition's next_obs
    episode_return: Float[Array, ""]  # of the episode that ended here; NaN if none did
    episode_length: Int[Array, ""]  # its length; 0 if none ended


class JaxEnv(eqx.Module):
    """A JAX-native env with auto-reset; see the module docstring.

    `reset(key) -> (obs, state)` and `step(key, state, action) -> Stepped`, both for one env.
    `max_episode_steps` is the time limit after which an episode is truncated.
    """

    env_id: str = eqx.field(static=True)
    spec: EnvSpec = eqx.field(static=True)
    max_episode_steps: int = eqx.field(static=True)
    _reset: Callable = eqx.field(static=True)
    _step: Callable = eqx.field(static=True)
    env_low: tuple[float, ...] | None = eqx.field(static=True, default=None)  # the env's own
    env_high: tuple[float, ...] | None = eqx.field(static=True, default=None)  # action bounds

    def reset(self, key: PRNGKeyArray) -> tuple[Obs, EnvState]:
        """Start an episode: its first observation (float32) and the state, return and length 0."""
        obs, inner = self._reset(key)
        # Fixed dtypes: gymnax starts `time` and `last_u` weakly typed and its step makes them
        # strong, so the compiled loop's chunk would compile twice (test_loops_compiled.py).
        inner = jax.tree.map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), inner)
        return _float32(obs), EnvState(inner, jnp.float32(0.0), jnp.int32(0))

    def step(self, key: PRNGKeyArray, state: EnvState, action: Array) -> Stepped:
        """Take one action in one env, resetting it (with a key split from `key`) if the episode
        ends here by termination or by reaching `max_episode_steps`.

        Args:
            key: the randomness of the step and of the reset.
            state: the env's state, from `reset` or the previous step.
            action: one env's action: for continuous actions of shape `spec.action_shape`,
                clipped to [-1, 1] and rescaled to the env's bounds; else an index, shape `()`.

        Returns:
            The next observation and state, the reward and flags, the observation reached
                (`final_obs`) and, if an episode ended, its return and length.

        Raises:
            ValueError: if `action` has another shape (a batch: vmap `step` instead).
        """
        k_step, k_reset = jax.random.split(key)
        obs, inner, reward, terminated = self._step(k_step, state.inner, self._env_action(action))
        obs, reward = _float32(obs), jnp.asarray(reward, jnp.float32).reshape(())
        terminated = jnp.asarray(terminated).astype(bool).reshape(())
        length = state.episode_length + 1
        truncated = (length >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        ret = state.episode_return + reward
        reset_obs, reset_state = self.reset(k_reset)
        stepped = EnvState(inner, ret, length)
        next_state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, stepped)
        next_obs = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_obs, obs)
        return Stepped(
            obs=next_obs, state=next_state, reward=reward, terminated=terminated,
            truncated=truncated, final_obs=obs,
            episode_return=jnp.where(done, ret, jnp.nan), episode_length=jnp.where(done, length, 0),
        )

    def _env_action(self, action: Array) -> Array:
        expected = () if self.spec.discrete else tuple(self.spec.action_shape)
        if tuple(jnp.shape(action)) != expected:
            raise ValueError(
                f"JaxEnv.step of {self.env_id}: action has shape {tuple(jnp.shape(action))}, "
                f"expected {expected} (one env's action). For a batch of envs, "
                "jax.vmap(env.step) over the keys, states and actions.")
        if self.spec.discrete:
            return jnp.asarray(action, jnp.int32)
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        low, high = np.asarray(self.env_low, np.float32), np.asarray(self.env_high, np.float32)
        if np.all(low == -1.0) and np.all(high == 1.0):
            return action
        return (low + (action + 1.0) * 0.5 * (high - low)).reshape(self.spec.action_shape)


def _float32(obs: Obs) -> Obs:
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.float32) if jnp.issubdtype(jnp.result_type(x), jnp.floating)
        else jnp.asarray(x), obs)


# What Brax's imports and env constructors print about things eqxrl never uses: MuJoCo's GPU
# backends (warp) and Brax's pointer to MJX. Kept off the screen; anything else is shown.
_NOISE = re.compile(r"Failed to import (mujoco_)?warp\b")
_BRAX_NOTICE = "Brax System, piplines and environments are not actively being maintained"


def _import(module: str, extra: str) -> Any:
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is not installed: pip install 'eqxrl[{extra}]' (it is an optional extra)."
        ) from err
    finally:
        for line in printed.getvalue().splitlines():
            if not _NOISE.match(line):
                print(line)


HOST_ONLY = ("render_mode", "render", "record_video", "pixels")


def make_jax_env(env_id: Any, **kwargs: Any) -> JaxEnv:
    """The `JaxEnv` of `gymnax:<id>` (any `gymnax.make` id) or `brax:<name>` (any
    `brax.envs.get_environment` name). `kwargs` go to the env's constructor; for Brax,
    `episode_length` sets the time limit (default 1000)."""
    if not isinstance(env_id, str):
        raise TypeError(
            f"env_id must be a string such as 'gymnax:Pendulum-v1', got {type(env_id).__name__}. "
            "A gymnasium env object is stepped on the host: train it with eqxrl.train_online."
        )
    if not is_jax_env_id(env_id):
        raise ValueError(
            f"env_id={env_id!r} is not a JAX-native env, so it cannot run inside a compiled loop: "
            "name one as gymnax:<id> (gymnax:Pendulum-v1, gymnax:CartPole-v1) or brax:<name> "
            "(brax:ant). A gymnasium id is trained by the host loop."
        )
    host_only = sorted(set(kwargs) & set(HOST_ONLY))
    if host_only:
        raise ValueError(
            f"{host_only[0]}={kwargs[host_only[0]]!r}: rendering is a host-only feature, and a "
            f"compiled loop never leaves the device. Drop it, and render a trained policy on a "
            f"gymnasium env (eqxrl.make_env(..., render_mode='rgb_array')) instead."
        )
    library, name = env_id.split(":", 1)
    if library == "gymnax":
        return _gymnax_env(env_id, name, kwargs)
    return _brax_env(env_id, name, kwargs)


def _box(observation: jax.ShapeDtypeStruct, action_shape: tuple[int, ...], low: Any,
         high: Any) -> dict[str, Any]:
    """A continuous env's spec (actions in [-1, 1]) and its own bounds, as `JaxEnv` fields."""
    ones = (1.0,) * int(np.prod(action_shape))
    spec = EnvSpec(observation, action_shape, action_low=tuple(-x for x in ones),
                   action_high=ones)
    bounds = [tuple(np.broadcast_to(b, action_shape).ravel().tolist()) for b in (low, high)]
    return {"spec": spec, "env_low": bounds[0], "env_high": bounds[1]}


def _gymnax_env(env_id: str, name: str, kwargs: dict[str, Any]) -> JaxEnv:
    gymnax = _import("gymnax", "gymnax")
    if name not in gymnax.registered_envs:
        raise ValueError(
            f"env_id={env_id!r}: gymnax has no env {name!r}. Its ids include "
            f"{', '.join(gymnax.registered_envs[:6])}."
        )
    env, params = gymnax.make(name, **kwargs)
    obs_space, action_space = env.observation_space(params), env.action_space(params)
    observation = jax.ShapeDtypeStruct(tuple(obs_space.shape), np.dtype(np.float32))
    if hasattr(action_space, "n"):
        fields = {"spec": EnvSpec(observation, (), discrete=True,
                                  num_actions=int(action_space.n))}
    else:
        fields = _box(observation, tuple(action_space.shape) or (1,),
                      np.asarray(action_space.low, np.float64),
                      np.asarray(action_space.high, np.float64))
    scalar_action = not hasattr(action_space, "n") and tuple(action_space.shape) == ()

    def reset(key):
        return env.reset_env(key, params)

    def step(key, inner, action):
        if scalar_action:
            action = action.reshape(())
        obs, inner, reward, terminated, _ = env.step_env(key, inner, action, params)
        return obs, inner, reward, terminated

    return JaxEnv(env_id=env_id, max_episode_steps=int(params.max_steps_in_episode),
                  _reset=reset, _step=step, **fields)


def _brax_env(env_id: str, name: str, kwargs: dict[str, Any]) -> JaxEnv:
    envs = _import("brax.envs", "brax")
    limit = int(kwargs.pop("episode_length", BRAX_EPISODE_STEPS))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_BRAX_NOTICE)
            env = envs.get_environment(name, **kwargs)
    except KeyError as err:
        raise ValueError(f"env_id={env_id!r}: Brax has no env {name!r} ({err}).") from None
    observation = jax.ShapeDtypeStruct((int(env.observation_size),), np.dtype(np.float32))
    fields = _box(observation, (int(env.action_size),), -1.0, 1.0)

    def reset(key):
        state = env.reset(key)
        return state.obs, state

    def step(key, inner, action):
        state = env.step(inner, action)
        return state.obs, state, state.reward, state.done

    return JaxEnv(env_id=env_id, max_episode_steps=limit, _reset=reset, _step=step, **fields)


def rollout_returns(env: JaxEnv, policy: Callable[[Obs], Array], key: PRNGKeyArray,
                    episodes: int) -> tuple[Float[Array, " episodes"], Int[Array, " episodes"]]:
    """Return and length of one episode in each of `episodes` envs run together under
    `policy(obs_batch) -> action_batch` (call inside jit)."""
    obs, state = jax.vmap(env.reset)(jax.random.split(key, episodes))

    def one(carry, k):
        obs, state, returns, lengths, running = carry
        out = jax.vmap(env.step)(jax.random.split(k, episodes), state, policy(obs))
        returns = returns + jnp.where(running, out.reward, 0.0)
        lengths = lengths + running
        running = running & ~(out.terminated | out.truncated)
        return (out.obs, out.state, returns, lengths, running), None

    start = (obs, state, jnp.zeros(episodes), jnp.zeros(episodes, jnp.int32),
             jnp.ones(episodes, bool))
    keys = jax.random.split(jax.random.fold_in(key, 1), env.max_episode_steps)
    (_, _, returns, lengths, _), _ = jax.lax.scan(one, start, keys)
    return returns, lengths


def make_evaluator(env: JaxEnv, act: Callable, episodes: int) -> Callable[[Any, int], dict]:
    """`evaluate(state, seed) -> stats` of the deterministic policy of one agent's `state` over
    `episodes` episodes of `env`, compiled; the stats are those of `eqxrl.evaluate`."""

    @eqx.filter_jit
    def run(state, key):
        return rollout_returns(
            env, lambda obs: act(state, obs, jax.random.key(0), deterministic=True), key, episodes)

    def evaluate(state, seed: int) -> dict[str, float]:
        returns, lengths = jax.device_get(run(state, jax.random.key(seed)))
        return (describe_returns("return", np.asarray(returns))
                | describe_returns("length", np.asarray(lengths)))

    return evaluate

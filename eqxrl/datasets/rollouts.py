"""Roll policies out in an env: random and noisy policies, datasets of episodes, returns.

Envs are made with `eqxrl.make_env`, so actions are in [-1, 1] and observations float32.
Collection is a pure function of the seed: episode `i` is reset with the seed
`episode_seed(seed, 0, i)` and the policy's key at step `t` is
`fold_in(fold_in(key(seed), 0), t)`; reference returns use stream 1 instead of 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, Shaped
from tqdm.auto import tqdm

from eqxrl.core.seeds import derived_seed
from eqxrl.core.spec import EnvSpec
from eqxrl.core.types import Obs, Transition
from eqxrl.data.dataset import Dataset
from eqxrl.envs.gym import make_env, spec_from_env

PolicyFn = Callable[[Obs, PRNGKeyArray], Array]


def episode_seed(seed: int, stream: int, episode: int) -> int:
    """The reset seed of `episode` in an independent `stream` (0 data, 1 reference returns)."""
    return derived_seed(seed, stream, episode)


def env_spec(env_id: str) -> EnvSpec:
    """The spec of `make_env(env_id)` (continuous actions in [-1, 1], or discrete ones)."""
    env = make_env(env_id)
    try:
        return spec_from_env(env)
    finally:
        env.close()


def random_policy(spec: EnvSpec) -> PolicyFn:
    """Uniformly random actions: in [-1, 1] (eqxrl's rescaled action space), or uniform over
    the actions of a discrete spec."""

    def policy(obs: Obs, key: PRNGKeyArray) -> Shaped[Array, "*action"]:
        if spec.discrete:
            return jax.random.randint(key, (), 0, spec.num_actions, jnp.int32)
        return jax.random.uniform(key, spec.action_shape, minval=-1.0, maxval=1.0)

    return policy


def add_noise(policy: PolicyFn, noise_std: float = 0.0, epsilon: float = 0.0,
              spec: EnvSpec | None = None) -> PolicyFn:
    """Add Gaussian noise of std `noise_std`, take a uniform action with probability
    `epsilon`, and clip to [-1, 1]. For a discrete `spec`, only `epsilon` applies (a uniform
    action of the spec's); Gaussian noise on a discrete action is refused."""
    if spec is not None and spec.discrete:
        if noise_std:
            raise ValueError(
                f"noise_std={noise_std} adds Gaussian noise to continuous actions, but the env "
                f"has Discrete({spec.num_actions}) actions; use epsilon (uniform random actions)."
            )
        uniform_action = random_policy(spec)

        def discrete(obs: Obs, key: PRNGKeyArray) -> Shaped[Array, ""]:
            k_policy, k_coin, k_random = jax.random.split(key, 3)
            action = jnp.asarray(policy(obs, k_policy), jnp.int32)
            random = uniform_action(obs, k_random)
            return jnp.where(jax.random.uniform(k_coin) < epsilon, random, action)

        return discrete

    def noisy(obs: Obs, key: PRNGKeyArray) -> Float[Array, "*action"]:
        k_policy, k_noise, k_coin, k_random = jax.random.split(key, 4)
        action = policy(obs, k_policy)
        action = action + noise_std * jax.random.normal(k_noise, action.shape, action.dtype)
        uniform = jax.random.uniform(k_random, action.shape, action.dtype, -1.0, 1.0)
        action = jnp.where(jax.random.uniform(k_coin) < epsilon, uniform, action)
        return jnp.clip(action, -1.0, 1.0)

    return noisy


def _write(buffer: Any, index: int | slice, value: Any) -> None:
    """`buffer[index] = value` for an array or a dict of them (dict observations)."""
    if isinstance(buffer, dict):
        for k, b in buffer.items():
            _write(b, index, value[k])
    else:
        buffer[index] = value


def _rollout(
    env_id: str,
    policy: PolicyFn,
    seed: int,
    stream: int,
    num_steps: int | None,
    num_episodes: int | None,
    progress: bool,
) -> tuple[dict[str, Any], int]:
    """Step `policy` until `num_steps` steps or `num_episodes` episodes; host arrays."""
    env = make_env(env_id)
    spec = spec_from_env(env)
    base = jax.random.fold_in(jax.random.key(seed), stream)
    # One compiled call per env step; the step index is traced, so it compiles once.
    step_fn = jax.jit(lambda obs, t: policy(obs, jax.random.fold_in(base, t)))
    obs, _ = env.reset(seed=episode_seed(seed, stream, 0))
    rows: dict[str, Any] = {}
    chunk = num_steps if num_steps is not None else 1024
    t, episode = 0, 0
    bar = tqdm(total=num_steps, unit="step", disable=not progress, desc=f"collect {env_id}")
    try:
        while (num_steps is None or t < num_steps) and (
            num_episodes is None or episode < num_episodes
        ):
            action = np.asarray(step_fn(obs, t))  # int32 (discrete) or float32 actions
            if np.issubdtype(action.dtype, np.integer) != spec.discrete:
                want = (f"integer actions of Discrete({spec.num_actions})" if spec.discrete
                        else f"float actions of shape {spec.action_shape}")
                raise ValueError(
                    f"The policy gave {action.dtype} actions of shape {action.shape}, but "
                    f"env_id={env_id!r} takes {want}; use a policy made for this env "
                    "(rollouts.random_policy(rollouts.env_spec(env_id)) for random actions).")
            action = action.astype(np.int32 if spec.discrete else np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            row = {
                "observations": obs,
                "actions": action,
                "rewards": np.float32(reward),
                "next_observations": next_obs,
                "terminals": bool(terminated),
                "timeouts": bool(truncated),
            }
            if not rows or t == len(rows["rewards"]):  # grow the preallocated arrays
                size = t + max(chunk, t)
                grown = jax.tree.map(
                    lambda x, n=size: np.zeros((n, *np.shape(x)), np.asarray(x).dtype), row
                )
                for key, old in rows.items():
                    _write(grown[key], slice(0, t), old)
                rows = grown
            for key, value in row.items():
                _write(rows[key], t, value)
            t += 1
            bar.update(1)
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=episode_seed(seed, stream, episode))
            else:
                obs = next_obs
    finally:
        bar.close()
        env.close()
    rows = jax.tree.map(lambda x: x[:t], rows)
    return rows, episode


def collect_episodes(
    env_id: str, policy_fn: PolicyFn, num_steps: int, seed: int = 0, *, progress: bool = False
) -> Dataset:
    """`num_steps` transitions of `policy_fn` in `make_env(env_id)`, episode after episode.

    The last episode is usually unfinished; its last row is marked truncated (a cut), so
    every episode of the dataset ends. The result depends only on the arguments.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    rows, _ = _rollout(env_id, policy_fn, seed, 0, num_steps, None, progress)
    rows["timeouts"][-1] |= not rows["terminals"][-1]
    transition = Transition(
        obs=jax.tree.map(jnp.asarray, rows["observations"]),
        action=jnp.asarray(rows["actions"]),
        reward=jnp.asarray(rows["rewards"]),
        next_obs=jax.tree.map(jnp.asarray, rows["next_observations"]),
        terminated=jnp.asarray(rows["terminals"]),
        truncated=jnp.asarray(rows["timeouts"]),
    )
    return Dataset(transition)


def rollout_returns(
    env_id: str, policy_fn: PolicyFn, num_episodes: int, seed: int = 0
) -> np.ndarray:
    """Returns of `num_episodes` complete episodes of `policy_fn` (for reference scores).

    Uses reset seeds and keys independent of `collect_episodes` with the same seed.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    rows, _ = _rollout(env_id, policy_fn, seed, 1, None, num_episodes, False)
    ends = rows["terminals"] | rows["timeouts"]
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    return np.add.reduceat(rows["rewards"].astype(np.float64), starts)

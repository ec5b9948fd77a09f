"""Run a policy for N episodes on a vectorised gymnasium env and summarise the returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import jax
import numpy as np
from jaxtyping import ArrayLike

from eqxrl.envs.gym import make_env


def make_eval_envs(env_id: str, num_episodes: int, **kwargs: Any) -> gym.vector.SyncVectorEnv:
    """`num_episodes` copies of `make_env(env_id)`, stepped together; one episode each."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    return gym.vector.SyncVectorEnv([lambda: make_env(env_id, **kwargs)] * num_episodes)


def normalized_score(returns: ArrayLike, reference: tuple[float, float]) -> np.ndarray:
    """D4RL-style normalised score: 100 * (return - random) / (expert - random)."""
    low, high = reference
    return np.asarray(100.0 * (np.asarray(returns, np.float64) - low) / (high - low))


def evaluate(
    policy: Callable[[Any], Any],
    envs: gym.vector.VectorEnv,
    seed: int = 0,
    reference: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Run one episode in each sub-env of `envs` with `policy(obs_batch) -> action_batch`.

    The env `i` is reset with seed `seed + i`, so an evaluation is reproducible. Returns mean,
    std, min and max of the episode return and length, and of the normalised score when a
    `(random_return, expert_return)` reference is given.
    """
    n = envs.num_envs
    obs, _ = envs.reset(seed=[seed + i for i in range(n)])
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    running = np.ones(n, dtype=bool)
    while running.any():
        action = np.asarray(jax.device_get(policy(obs)))
        obs, reward, terminated, truncated, _ = envs.step(action)
        returns += np.where(running, reward, 0.0)
        lengths += running
        running &= ~(terminated | truncated)
    stats = describe_returns("return", returns) | describe_returns("length", lengths)
    if reference is not None:
        stats |= describe_returns("normalized_score", normalized_score(returns, reference))
    return stats


def describe_returns(name: str, values: np.ndarray) -> dict[str, float]:
    """`{name}_mean`, `{name}_std`, `{name}_min` and `{name}_max` of `values`, one per episode."""
    return {
        f"{name}_mean": float(np.mean(values)),
        f"{name}_std": float(np.std(values)),
        f"{name}_min": float(np.min(values)),
        f"{name}_max": float(np.max(values)),
    }

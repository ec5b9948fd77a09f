"""Offline data in the online off-policy loop (`--offline-data`): every batch is part dataset,
part replay buffer, as RLPD samples them (Ball, Smith, Kostrikov and Levine, 2023).

The dataset is read once when the run starts (again when it resumes: the same file, from the
folder the run started in), checked against the env, and passed to each compiled learning
call as an argument shared by all agents, never saved in checkpoints. A batch of B rows holds
round(fraction · B) dataset rows first, then the replay rows; both draws use the update's
sampling key, so a resumed run draws the same batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp

from eqxrl import datasets
from eqxrl.core.spec import EnvSpec
from eqxrl.core.tree import tree_stack
from eqxrl.data.dataset import Dataset
from eqxrl.envs.native import is_jax_env_id
from eqxrl.loops.contract import OffPolicyHooks
from eqxrl.run.agents import Agents, tree_bytes
from eqxrl.run.load import load_run
from eqxrl.run.record import dataset_path, read_record
from eqxrl.vision.obs_encoder import has_images


def check_offline_data(config: Any, hooks: OffPolicyHooks) -> None:
    """Refuse --offline-data where the loop cannot honour it, before any work starts.

    Raises:
        ValueError: for a JAX-native env, or an algorithm that samples its own batches.
    """
    settings = config.run
    if not settings.offline_data:
        return
    if is_jax_env_id(settings.env_id):
        raise ValueError(
            f"--offline-data mixes a dataset into the host loop's batches; --env-id "
            f"{settings.env_id} is trained by the compiled loop, which does not take one. Use "
            "the gymnasium env the data was collected in.")
    if hooks.sample_batch is not None:
        raise ValueError(
            "--offline-data draws single transitions, but this algorithm samples its own "
            "batches (DQN's n-step windows); drop --offline-data.")


def load_offline_data(
    config: Any, spec: EnvSpec, preset: str = "none",
    fits: Callable[[int], None] = lambda nbytes: None,
) -> tuple[Dataset | None, tuple[float, float]]:
    """The `--offline-data` dataset, checked against `spec`, preprocessed with `preset`, on
    the device (None without it); and the preset's `(scale, shift)` of rewards, which the
    online rows get too.

    The whole dataset is held in device memory, pixel datasets too (frame-stacked observations
    as the env gives them, `obs` and `next_obs`). `fits(nbytes)` is called with its size
    before any image is read, so that a dataset too large for the devices is refused
    (`Agents.check_memory`) without filling the host's memory first.

    Raises:
        ValueError: if its observations or actions do not fit the env, or its actions lie
            outside [-1, 1].
    """
    settings = config.run
    if not settings.offline_data:
        return None, (1.0, 0.0)
    started = read_record(settings.resume).get("cwd") if settings.resume else None
    path = dataset_path(settings.offline_data, started)
    lazy = has_images(spec)  # a pixel env's dataset: counted with its images left on disk
    try:
        dataset, _ = datasets.load_dataset(path, lazy_images=lazy)
    except datasets.DatasetError:
        if not lazy:
            raise
        # No image leaves (another env's data), or a format that cannot leave them on disk:
        # read it whole (the shape check below names a mismatch).
        dataset, _ = datasets.load_dataset(path)
    fits(in_memory_bytes(dataset))
    if dataset.images is not None:  # read the images now that they are known to fit
        dataset = Dataset(jax.device_put(dataset.images.fetch(dataset.data)))
    where = f"--offline-data {settings.offline_data}"
    try:
        spec.check_batch(dataset.data, name="offline data")
    except ValueError as err:
        raise ValueError(
            f"{where} does not fit --env-id {settings.env_id}: {err} Give a dataset collected "
            "in this env, or the env the data was collected in.") from None
    datasets.check_unit_actions(dataset, where)
    rewards = datasets.preset_rewards(dataset, preset)
    dataset = datasets.preprocess(dataset, preset)
    return jax.device_put(Dataset(dataset.data)), rewards


def in_memory_bytes(dataset: Dataset) -> int:
    """Bytes of `dataset` with its images in memory (a lazily loaded one's images counted at
    the size `fetch` gives them)."""
    return tree_bytes(dataset.data if dataset.images is None else
                      dataset.images.like(dataset.data))


def mixed_sampler(
    fraction: float, batch_size: int, rewards: tuple[float, float] = (1.0, 0.0)
) -> Callable[[Any, Dataset, jax.Array], Any]:
    """`sample(buffer, offline, key)`: a batch of `batch_size` rows, round(fraction ·
    batch_size) of them from `offline` first, the rest from the replay buffer, whose rewards r
    become r·scale + shift with `rewards` = (scale, shift) (the dataset's preset)."""
    n_offline = round(fraction * batch_size)
    n_online = batch_size - n_offline
    scale, shift = rewards

    def mixed(buffer: Any, offline: Dataset, key: jax.Array) -> Any:
        k_offline, k_online = jax.random.split(key)
        if n_online == 0:
            return offline.sample(k_offline, n_offline)
        online = buffer.sample(k_online, n_online)
        if (scale, shift) != (1.0, 0.0):
            online = dataclasses.replace(
                online, reward=online.reward * jnp.float32(scale) + jnp.float32(shift))
        if n_offline == 0:
            return online
        rows = offline.sample(k_offline, n_offline)
        return jax.tree.map(lambda a, b: jnp.concatenate([a.astype(b.dtype), b]), rows, online)

    return mixed


def trained_states(run_dir: str, agents: Agents, algorithm: ModuleType) -> Any:
    """The newest checkpoint's state of every agent of `run_dir`, with the agent axis first:
    where fine-tuning starts. Its agents (seeds, grid points) must be this run's, in order.

    Raises:
        ValueError: if `run_dir` is a run of another algorithm.
    """
    n = agents.n
    try:
        states = [load_run(run_dir, algorithm=algorithm, agent=i if n > 1 else None).state
                  for i in range(n)]
    except ValueError as err:
        raise ValueError(f"Fine-tuning cannot start from {run_dir}: {err}") from None
    return tree_stack(states)

"""The offline loop: a fixed dataset on the device, a `lax.scan` of updates per compiled call.

Each call runs updates up to the next log, evaluation or checkpoint boundary (at most
`updates_per_call`), sampling its batches inside, so a run compiles a few chunk lengths once.
Several agents (seeds, grid points: `eqxrl.run.agents`) share one copy of the dataset and are
vmapped in each call.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import equinox as eqx
import gymnasium as gym
import jax
import jax.numpy as jnp

from eqxrl import datasets
from eqxrl.core.hyper import hyper_of
from eqxrl.core.jit import jit
from eqxrl.data.dataset import Dataset
from eqxrl.envs.gym import env_id_from_file, make_env, spec_from_env
from eqxrl.loops.common import fresh_copy
from eqxrl.loops.contract import OfflineAlgorithm, OfflineHooks, check_algorithm
from eqxrl.run.agents import tree_bytes
from eqxrl.run.drive import Advanced, drive
from eqxrl.run.grid import agents_for
from eqxrl.run.harness import Run
from eqxrl.run.processes import connect
from eqxrl.run.record import dataset_path, read_record, resolve_resume
from eqxrl.vision.obs_encoder import has_images

LAZY_BYTES_PER_CALL = 2**28


"""With --lazy-images: bytes of images read from the file per compiled call (at most)."""


def prepare_dataset(config: Any) -> tuple[Any, Dataset, tuple[float, float] | None]:
    """Load `config.run.dataset`, preprocess it, and fill in `env_id` from its metadata.

    Returns `(config, dataset, reference)`; actions outside [-1, 1] are an error unless
    `--rescale-actions` maps the env's bounds onto [-1, 1].
    """
    run = config.run
    if not run.dataset:
        raise ValueError("--dataset is required: a D4RL-style HDF5 file or a Minari dataset "
                         "(or --resume RUN_DIR to continue a run).")
    started = read_record(run.resume).get("cwd") if run.resume else None
    path = dataset_path(run.dataset, started)  # from any folder when resuming
    dataset, info = datasets.load_dataset(path, lazy_images=run.lazy_images)
    if run.env_id is None:
        if info.env_id is None:
            raise ValueError(
                f"--dataset {run.dataset!r} names no env id in its metadata and --env-id was "
                "not given: pass --env-id (the gymnasium env to evaluate in)."
            )
        env_id = env_id_from_file(info.env_id, f"the metadata of --dataset {run.dataset!r}")
        config = dataclasses.replace(config, run=dataclasses.replace(run, env_id=env_id))
    if run.rescale_actions:
        space = gym.make(config.run.env_id).action_space
        dataset = datasets.rescale_actions(dataset, space.low, space.high)
    # before the preset, whose clip to ±(1 − 1e-5) would hide actions in the env's own units
    datasets.check_unit_actions(dataset, f"--dataset {run.dataset}")
    dataset = datasets.preprocess(dataset, run.preset)
    return config, dataset, info.reference


def train_offline(
    config: Any,
    algorithm: ModuleType,
    hooks: OfflineHooks = OfflineHooks(),  # noqa: B008 (a frozen record)
    *,
    dataset: Dataset | None = None,
    reference: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Train `algorithm` on a fixed dataset, evaluating in `config.run.env_id`; return the summary.

    `config.run` is an `OfflineRun`. Without `dataset` the loop reads `config.run.dataset`
    (with its preset, env id and reference returns); a `Dataset` given here is used as it is,
    with `reference` = (random return, expert return) for normalised scores. `hooks`
    (`eqxrl.OfflineHooks`) may prepare the dataset once more (BC's filter) and give `init` the
    data (TD3+BC's observation statistics). Run folder, logging, checkpoints and exact resume
    are as in `train_online`.
    """
    config = resolve_resume(config)
    check_algorithm(algorithm, OfflineAlgorithm)
    connect(config.run)  # before any JAX work, in a multi-process run
    if dataset is None:
        config, dataset, reference = prepare_dataset(config)
    if hooks.prepare is not None:
        dataset = hooks.prepare(dataset, config)
    settings = config.run
    env = make_env(settings.env_id)
    spec = spec_from_env(env)
    env.close()
    lazy = dataset.images  # ImageRows when the images stay on disk (--lazy-images)
    # The obs/action layout must match the env (lazily: checked on the first row, read back).
    try:
        spec.check_batch(dataset.data if lazy is None else jax.tree.map(
            jnp.asarray, lazy.fetch(jax.device_get(dataset[:1]))), name="dataset")
    except ValueError as err:
        raise ValueError(
            f"--dataset {settings.dataset or 'given'} does not fit --env-id {settings.env_id}: "
            f"{err} Give the env the data was collected in (--env-id), or a dataset of this "
            "env.") from None
    datasets.check_unit_actions(dataset, f"--dataset {settings.dataset or 'given'}")
    if lazy is not None and hooks.init is not None:
        raise ValueError(
            f"{algorithm.__name__}'s init reads the whole dataset (for statistics), so it cannot "
            "run with --lazy-images; load the dataset into memory (drop --lazy-images).")

    def init_state(key, config, hyper, data=dataset):
        if hooks.init is None:
            return algorithm.init(key, spec, config, hyper)
        return hooks.init(key, spec, config, hyper, data)

    agents = agents_for(config)
    if lazy is not None and jax.process_count() > 1:
        raise ValueError(
            "--lazy-images reads batches on this host; it does not combine with several "
            "processes yet. Load the dataset into memory (drop --lazy-images) or run one "
            "process (its devices may be several: --devices).")
    run = Run(config, algorithm, "update", agents)
    run.reference = reference
    config, settings = run.config, run.config.run
    # One copy of the dataset for all agents (its rows split over the devices of one agent).
    data = jax.device_put(dataset) if agents.mesh is None else agents.place(dataset, rows_axis=0)

    def batch_update(state: Any, batch: Any, k_loss: jax.Array):
        return algorithm.update(state, agents.split_batch(batch), k_loss, config)

    def sampled_update(state: Any, k: jax.Array, data: Dataset):
        """One update on a batch drawn with the first half of `k`, its loss on the second."""
        k_sample, k_loss = jax.random.split(k)
        return batch_update(state, data.sample(k_sample, settings.batch_size), k_loss)

    def chunk_keys(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """The loop's next key and the n update keys of one call (every path splits so)."""
        key, k = jax.random.split(key)
        return key, jax.random.split(k, n)

    def train_one(state_key: tuple, data: Dataset, n: int):
        state, key = state_key
        key, keys = chunk_keys(key, n)
        state, metrics = jax.lax.scan(lambda s, k: sampled_update(s, k, data), state, keys)
        metrics = {name: jnp.mean(v) for name, v in metrics.items()}
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        return (state, key), metrics, finite

    @jit(donate=(0,))
    def train_chunk(state_key: tuple, data: Dataset, n: int):
        def one_agent(sk, d):
            return train_one(sk, d, n)

        return agents.over(one_agent, (0, None), unroll=True)(state_key, data)

    # On XLA's CPU backend a conv net trains ~4x slower inside lax.scan than in straight-line
    # code (IMPALA, batch 8: 247 ms an update in a scan, 64 ms alone), so datasets with images
    # (lazily loaded ones always have them) run one compiled call per update, with the same
    # keys as train_one.
    stepwise = has_images(spec)

    @jit
    def split_keys(key: jax.Array, n: int):
        return agents.over(lambda k: chunk_keys(k, n))(key)

    @jit(donate=(0,))
    def update_once(state: Any, data: Dataset, k: jax.Array):
        return agents.over(sampled_update, in_axes=(0, 0, None))(state, k, data)

    @jit(donate=(0,))
    def learn_once(state: Any, batch: Any, k_loss: jax.Array):
        return agents.over(batch_update)(state, batch, k_loss)

    def mean_of(collected: list[dict]) -> tuple[dict, jax.Array]:
        """Each agent's metrics averaged over single updates, and whether they are finite."""
        metrics = {k: jnp.mean(jnp.stack([m[k] for m in collected], axis=1), axis=1)
                   for k in collected[0]}
        return metrics, jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]), axis=0)

    def train_stepwise(state_key: tuple, n: int):
        state, key = state_key
        key, keys = split_keys(key, n)
        collected = []
        for i in range(n):
            state, metrics = update_once(state, data, keys[:, i])
            collected.append(metrics)
        return (state, key), *mean_of(collected)

    # --lazy-images: the same keys and rows as train_stepwise, but the batches' pointer rows
    # are drawn first and their images read on the host before the updates run.
    def draw_one(key: jax.Array, data: Dataset, n: int):
        key, keys = chunk_keys(key, n)
        k_sample, k_loss = jax.vmap(jax.random.split, out_axes=1)(keys)
        pointers = jax.vmap(lambda ks: data.sample(ks, settings.batch_size))(k_sample)
        return key, pointers, k_loss

    @jit
    def draw(key: jax.Array, data: Dataset, n: int):
        return agents.over(lambda k, d: draw_one(k, d, n), in_axes=(0, None))(key, data)

    def train_lazily(state_key: tuple, n: int):
        """`train_stepwise`'s n updates, their images read in parts of at most ~256 MB (each
        part read while the device still runs the previous one: dispatch is asynchronous)."""
        state, key = state_key
        key, pointers, k_loss = draw(key, data, n)
        pointers = jax.device_get(pointers)  # (agents, n, batch, ...) row pointers
        part = max(1, LAZY_BYTES_PER_CALL // (lazy.bytes_per_row * settings.batch_size
                                              * agents.n))
        collected = []
        for i in range(0, n, part):
            batches = lazy.fetch(jax.tree.map(lambda x, i=i: x[:, i:i + part], pointers))
            for u in range(min(part, n - i)):
                # On several devices: agents split over them, or one agent's batch rows.
                batch = agents.place(jax.tree.map(lambda x, u=u: x[:, u], batches), rows_axis=1)
                state, metrics = learn_once(state, batch, k_loss[:, i + u])
                collected.append(metrics)
        return (state, key), *mean_of(collected)

    def fresh(key, config, hyper, data):
        k_init, k_loop = jax.random.split(key)
        return fresh_copy((init_state(k_init, config, hyper, data), k_loop))

    one = eqx.filter_eval_shape(fresh, jax.random.key(0), config, hyper_of(config), data)
    agents.check_memory(tree_bytes(one))
    if run.resume:
        state, key = one
        tree = agents.from_saved(run.restore(
            lambda progress: agents.saved_like({"state": state, "key": key})))
        state_key = agents.place((tree["state"], tree["key"]))
    else:
        # One compiled call, the dataset an argument (not a constant baked into the program).
        state_key = jit(lambda d: agents.place(
            agents.init(lambda k, c, h: fresh(k, c, h, d), config)))(data)

    intervals = (settings.log_interval, settings.eval_interval, settings.checkpoint_interval)

    def checkpoint():
        run.save(agents.to_saved({"state": state_key[0], "key": state_key[1]}))

    def advance(step: int) -> Advanced:
        """Updates up to the next log/eval/checkpoint boundary: a few chunk lengths, compiled
        once."""
        nonlocal state_key
        n = min(settings.updates_per_call, run.next_stop(step, *intervals) - step)
        if lazy is None:
            state_key, metrics, finite = (train_stepwise(state_key, n) if stepwise
                                          else train_chunk(state_key, data, n))
        else:
            state_key, metrics, finite = train_lazily(state_key, n)
        end = step + n
        return Advanced(end, metrics, finite, log=end % settings.log_interval == 0)

    return drive(run, algorithm.act, advance, checkpoint, lambda: state_key[0])

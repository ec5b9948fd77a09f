"""Use a trained run elsewhere: its policy as a jitted `obs -> action`, its state, its buffer.

    policy, config = eqxrl.load_policy("runs/sac__Hopper-v5__s0__20261129-120000")
    action = policy(obs)  # one observation or a batch; deterministic (the policy's mode)

Works for every algorithm's run folder, online or offline. The algorithm is the module the
run recorded in its `config.json` (`eqxrl.algorithms.sac`), imported when it is needed. A
record that names any other module is refused: pass `algorithm=` to use a module you hold
(for example one outside any package).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from eqxrl.core.hyper import hyper_of
from eqxrl.core.spec import EnvSpec
from eqxrl.data.frames import FrameReplayBuffer
from eqxrl.data.replay import ReplayBuffer
from eqxrl.data.saved import buffer_from_saved, buffer_saved_like
from eqxrl.envs.gym import env_id_from_file, make_env, spec_from_env
from eqxrl.envs.native import is_jax_env_id, make_jax_env
from eqxrl.run import checkpoints, sharded
from eqxrl.run.agents import Agents
from eqxrl.run.config_io import field_defaults, from_dict, identity
from eqxrl.run.grid import agent_list
from eqxrl.run.record import algorithm_name, read_record, trusted_module


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A run folder restored from one of its checkpoints."""

    run_dir: str
    step: int
    algorithm: ModuleType
    config: Any
    spec: EnvSpec
    state: Any
    buffer: ReplayBuffer | FrameReplayBuffer | None  # online runs, when asked for

    def act(self, obs: Any, key: jax.Array, deterministic: bool = False) -> jax.Array:
        """The algorithm's `act` on this run's state (a batch of observations)."""
        return self.algorithm.act(self.state, obs, key, deterministic=deterministic)


def _checkpoint(run_dir: str, step: int | None) -> tuple[int, str]:
    directory = os.path.join(run_dir, "checkpoints")
    if sharded.is_sharded_dir(directory):  # a multi-process run's (orbax) checkpoints
        found = [(s, directory) for s in sharded.steps(directory)]
    else:
        found = checkpoints.list_checkpoints(directory)
    if not found:
        raise FileNotFoundError(f"run_dir={run_dir!r} has no checkpoint in its checkpoints/.")
    if step is None:
        return found[-1]
    paths = dict(found)
    if step not in paths:
        raise ValueError(f"step={step}: no such checkpoint in {run_dir!r}; it has {sorted(paths)}.")
    return step, paths[step]


def _algorithm(record: dict[str, Any], given: ModuleType | None) -> ModuleType:
    if given is not None:
        if algorithm_name(given) != record["algorithm"]:
            raise ValueError(
                f"algorithm={algorithm_name(given)!r}, but the run was trained by "
                f"{record['algorithm']!r} ({record['module']})."
            )
        return given
    name = trusted_module(record["module"])
    if name is None:
        raise ValueError(
            f"The run was trained by the module {record['module']!r}, which is not one of "
            f"eqxrl.algorithms; eqxrl imports no other module that a run folder names (a "
            "downloaded folder could run any code). If you trust it, import it yourself and "
            "pass it: load_policy(run_dir, algorithm=module)."
        )
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f"The run was trained by {name!r}, which cannot be imported here ({err}); import "
            "it yourself and pass it as algorithm=."
        ) from err


def load_run(
    run_dir: str,
    step: int | None = None,
    algorithm: ModuleType | None = None,
    buffer: bool = False,
    agent: int | None = None,
) -> LoadedRun:
    """Restore the state (and, with `buffer`, an online run's replay buffer) of a checkpoint.

    `step` picks a checkpoint (the newest by default). A run of several agents (seeds, grid
    points) needs `agent`, the index in its `summary.json`'s `agents` list.
    """
    record = read_record(run_dir)
    module = _algorithm(record, algorithm)
    config_class = getattr(module, record.get("config_class", "Config"))
    config = from_dict(config_class, record["config"], os.path.join(run_dir, "config.json"))
    # loaded here, in this one process: where the run was trained is not where it is read
    config = dataclasses.replace(config, run=dataclasses.replace(
        config.run, run_dir=run_dir, num_processes=1, process_id=None, coordinator=None))
    step, path = _checkpoint(run_dir, step)
    env_id_from_file(config.run.env_id, os.path.join(run_dir, "config.json"))
    if is_jax_env_id(config.run.env_id):  # a compiled run's gymnax or Brax env
        spec = make_jax_env(config.run.env_id).spec
    else:
        env = make_env(config.run.env_id)
        try:
            spec = spec_from_env(env)
        finally:
            env.close()
    saved = identity(config)  # what the checkpoints were written with
    seeds, points = agent_list(config.run)
    n = len(seeds)
    if n > 1 and (agent is None or not 0 <= agent < n):
        raise ValueError(
            f"run_dir={run_dir!r} trained {n} agents (seeds and grid points): pass agent= an "
            f"index in 0..{n - 1}, got {agent!r}; its summary.json lists them."
        )
    if n == 1 and agent not in (None, 0):
        raise ValueError(f"run_dir={run_dir!r} trained one agent: agent={agent!r} must be 0.")
    if n > 1:  # agent i's config: its seed and grid values
        run = dataclasses.replace(config.run, seed=seeds[agent], num_seeds=1, seeds=None, grid=())
        config = dataclasses.replace(config, run=run, **dict(points[agent]))
    state = eqx.filter_eval_shape(module.init, jax.random.key(0), spec, config, hyper_of(config))
    agents = Agents(seeds, points)

    def like(meta: dict[str, Any]) -> dict[str, Any]:
        if not buffer:
            return agents.saved_like({"state": state})
        if "buffer_rows" not in meta:
            raise ValueError(f"run_dir={run_dir!r} is an offline run: it has no replay buffer.")
        return agents.saved_like(
            {"state": state, "buffer": buffer_saved_like(spec, config.run.buffer_size, meta)})

    if sharded.is_sharded_dir(path):
        def placed(meta):  # onto this process's first device
            return jax.tree.map(agents.saved_sharding, like(meta))

        tree, _ = sharded.restore(path, step, placed, config=saved, strict=False,
                                   defaults=field_defaults(config))
    else:
        tree, _ = checkpoints.restore(path, like, config=saved, strict=False,
                                       defaults=field_defaults(config))
    if n > 1:
        tree = agents.pick(tree, agent)
    replay = None
    if buffer:
        replay = buffer_from_saved(tree["buffer"], spec, config.run.buffer_size)
    return LoadedRun(run_dir, int(step), module, config, spec, tree["state"], replay)


def load_policy(
    run_dir: str, step: int | None = None, algorithm: ModuleType | None = None,
    agent: int | None = None,
) -> tuple[Callable[[Any], jax.Array], Any]:
    """`(policy, config)` of a run: `policy(obs)` is the jitted deterministic action.

    `obs` is one observation or a batch (leading axes); the action has the same batch axes.
    `agent` picks one agent of a run of several (see `load_run`).

    Args:
        run_dir: a run folder (online or offline), from any working directory.
        step: the checkpoint's step; None takes the newest.
        algorithm: the algorithm module, for a run of your own module (eqxrl imports only
            `eqxrl.algorithms.*` from a `config.json`).
        agent: which agent of a run of several seeds or grid points.

    Example:
        ```python
        policy, config = eqxrl.load_policy("runs/sac__Pendulum-v1__s0__...")
        env = eqxrl.make_env(config.run.env_id)
        obs, _ = env.reset(seed=0)
        action = policy(obs)  # (1,) for Pendulum; policy(batch) gives (batch, 1)
        ```
    """
    run = load_run(run_dir, step, algorithm, agent=agent)
    ndim = jax.tree.map(lambda s: len(s.shape), run.spec.obs_structure)

    @jax.jit
    def batched(obs):
        return run.algorithm.act(run.state, obs, jax.random.key(0), deterministic=True)

    def policy(obs: Any) -> jax.Array:
        obs = jax.tree.map(jnp.asarray, obs)
        single = jax.tree.leaves(jax.tree.map(lambda x, n: x.ndim == n, obs, ndim))[0]
        if single:
            return batched(jax.tree.map(lambda x: x[None], obs))[0]
        return batched(obs)

    return policy, run.config

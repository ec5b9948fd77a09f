"""Many agents as one program: seeds × a hyperparameter grid, vmapped, spread over devices.

A run trains one agent per (grid point, seed). With more than one, the loops hold one state
whose array leaves have a leading agent axis, and every compiled call is `jax.vmap`-ed over it;
agent `i` is initialised, sampled and evaluated exactly as a single run with its seed would be.
A grid point differs from another only in array leaves of the state (learning rates in the
optimiser state, discount, τ, ...): the agents of a grid share one compiled program.

Devices: with several visible, the agent axis is split over a one-axis `Mesh` (`jax.sharding`),
or, for a single agent, each sampled batch is (parameters are replicated; the replay buffer's
rows and the dataset are split). XLA inserts the gradient all-reduce.

Hosts: with `jax.distributed` (`connect`), the mesh spans every process's devices; each process
runs the host work (envs, evaluation) of the agents on its own devices (`Agents.mine`), and
moves their rows in and out with `from_host` / `to_host`; logs are gathered to process 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from eqxrl.core.checks import ConfigError
from eqxrl.core.hyper import Hyper, hyper_of
from eqxrl.core.tree import tree_stack
from eqxrl.rl.schedules import AGENTS

Point = tuple[tuple[str, float | int], ...]  # the grid values of one agent: ((field, value), ...)


@dataclasses.dataclass(frozen=True)
class Agents:
    """The agents of a run: the seed and grid values of each, and the devices they live on."""

    seeds: tuple[int, ...]
    points: tuple[Point, ...]  # the grid values of each agent
    mesh: Mesh | None = None  # None: one device
    local: tuple[int, ...] | None = None  # agents whose host work this process does; None: all
    layout: str = "vmap"  # how `over(..., unroll=True)` runs several agents: "vmap" or "unrolled"

    @property
    def n(self) -> int:
        """How many agents the run trains: one per (grid point, seed)."""
        return len(self.seeds)

    @property
    def stacked(self) -> bool:
        """Whether states (and checkpoints) have an agent axis: more than one agent."""
        return self.n > 1

    @property
    def devices(self) -> int:
        """How many devices the run uses: those of its mesh, or 1 without one."""
        return 1 if self.mesh is None else self.mesh.devices.size

    @property
    def mine(self) -> tuple[int, ...]:
        """The agents whose envs and evaluation this process runs (all, in one process)."""
        return tuple(range(self.n)) if self.local is None else self.local

    @property
    def multi(self) -> bool:
        """Whether the run spans several processes (`jax.distributed`)."""
        return jax.process_count() > 1

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder (logs, summary): process 0."""
        return jax.process_index() == 0

    # ------------------------------------------------------------------ between processes
    def to_host(self, x: jax.Array) -> np.ndarray:
        """This process's agents' rows of an array with an agent axis, as numpy."""
        key = jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        if not self.multi:
            return x if key else np.asarray(x)
        shards: dict[int, np.ndarray] = {}
        for shard in x.addressable_shards:
            data = jax.random.key_data(shard.data) if key else shard.data
            shards.setdefault(shard.index[0].start or 0, np.asarray(data))
        rows = np.concatenate([shards[k] for k in sorted(shards)])
        return jax.random.wrap_key_data(rows, impl=jax.random.key_impl(x)) if key else rows

    def from_host(self, tree: Any) -> Any:
        """One global array per leaf from this process's agents' rows (`to_host`'s inverse)."""
        if not self.multi:
            return tree
        sharding = NamedSharding(self.mesh, PartitionSpec("devices"))
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(
                sharding, np.asarray(x), (self.n, *np.shape(x)[1:])), tree)

    def gather(self, tree: Any) -> Any:
        """Every agent's values of arrays with an agent axis, on every process, as numpy."""
        if not self.multi:
            return jax.device_get(tree)
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)

    def gather_json(self, value: Any) -> list[Any]:
        """`value` (JSON-able) of every process, in process order."""
        if not self.multi:
            return [value]
        from jax.experimental import multihost_utils

        data = np.frombuffer(json.dumps(value).encode(), np.uint8)
        sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
        padded = np.zeros(int(np.max(sizes)), np.uint8)
        padded[: data.size] = data
        rows = multihost_utils.process_allgather(padded)
        return [json.loads(bytes(r[: int(k)]).decode()) for r, k in
                zip(np.reshape(rows, (len(sizes), -1)), np.ravel(sizes), strict=True)]

    def labels(self, i: int) -> dict[str, Any]:
        """What tells agent `i` apart in logs: agent index, seed and grid values."""
        return {"agent": i, "seed": self.seeds[i], **dict(self.points[i])}

    def name(self, i: int) -> str:
        """`seed3` or `seed3_critic_lr=0.001`: agent `i`'s TensorBoard folder."""
        return "_".join([f"seed{self.seeds[i]}"] + [f"{k}={v:g}" for k, v in self.points[i]])

    # ------------------------------------------------------------------ compiled calls
    def over(self, f: Callable, in_axes: Sequence[int | None] | None = None,
             unroll: bool = False) -> Callable:
        """`f` for every agent: its arguments and results carry the agent axis first.

        `in_axes` marks shared arguments with None (a dataset). One agent is not vmapped:
        its axis of length 1 is dropped on the way in and restored on the way out. With
        `unroll` and the "unrolled" layout, the agents are written out one after another in the
        program (each computes as a single run does) instead of vmapped.
        """
        if self.n > 1 and not (unroll and self.layout == "unrolled"):
            return jax.vmap(f, in_axes=0 if in_axes is None else tuple(in_axes),
                            axis_name=AGENTS)

        def agent(i, args):
            axes = in_axes or (0,) * len(args)
            return f(*[a if ax is None else jax.tree.map(lambda x: x[i], a)
                       for a, ax in zip(args, axes, strict=True)])

        def each(*args):
            if self.n == 1:
                return jax.tree.map(lambda x: x[None], agent(0, args))
            return tree_stack([agent(i, args) for i in range(self.n)])

        return each

    def split_batch(self, batch: Any) -> Any:
        """Inside a compiled update: one agent on several devices splits its batch over them."""
        if self.mesh is None or self.n > 1:
            return batch
        return jax.lax.with_sharding_constraint(
            batch, NamedSharding(self.mesh, PartitionSpec("devices"))
        )

    def place(self, tree: Any, rows_axis: int | None = None) -> Any:
        """Put a tree with an agent axis on the devices: the agent axis split over them, or,
        for one agent, `rows_axis` (buffer or dataset rows) split and everything else copied."""
        if self.mesh is None:
            return tree

        def spec(x):
            if not eqx.is_array(x) or x.ndim == 0:
                return PartitionSpec()
            if self.n > 1:
                return PartitionSpec("devices")
            splits = rows_axis is not None and x.ndim > rows_axis
            if splits and x.shape[rows_axis] % self.devices == 0:
                return PartitionSpec(*([None] * rows_axis), "devices")
            return PartitionSpec()

        def put(x):
            if not eqx.is_array(x):
                return x
            sharding = NamedSharding(self.mesh, spec(x))
            if isinstance(x, jax.core.Tracer):  # inside a compiled call (an init)
                return jax.lax.with_sharding_constraint(x, sharding)
            if self.multi:  # every process holds all of `x` and keeps its own shards
                if isinstance(x, jax.Array) and not x.is_fully_addressable:
                    return x  # a global array already (restored with its sharding)
                host = np.asarray(x)
                return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])
            return jax.device_put(x, sharding)

        return jax.tree.map(put, tree)

    # ------------------------------------------------------------------ host side
    def pick(self, tree: Any, i: int) -> Any:
        """Agent `i`'s slice of a tree with an agent axis (in a multi-process run: one of this
        process's agents)."""
        if self.multi:
            row = self.mine.index(i)
            return jax.tree.map(lambda x: self.to_host(x)[row] if eqx.is_array(x) else x, tree)
        return jax.tree.map(lambda x: x[i] if eqx.is_array(x) else x, tree)

    def to_saved(self, tree: Any) -> Any:
        """What a checkpoint holds: the agent axis, or for one agent a single run's tree."""
        if self.stacked:
            return tree
        return jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, tree)  # stays global

    def from_saved(self, tree: Any) -> Any:
        """The inverse of `to_saved`."""
        return tree if self.stacked else jax.tree.map(lambda x: jnp.asarray(x)[None], tree)

    def saved_like(self, like: Any) -> Any:
        """The checkpoint template of a single agent's template `like`."""
        if not self.stacked:
            return like
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct((self.n, *s.shape), s.dtype), like)

    def saved_sharding(self, like: Any) -> Any:
        """Where a restored leaf of a checkpoint (`to_saved`'s layout) goes: agents split over
        the devices, or, for one agent, copied to every device."""
        if not hasattr(like, "shape"):
            return like
        if self.mesh is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        else:
            spec = PartitionSpec("devices") if self.stacked else PartitionSpec()
            sharding = NamedSharding(self.mesh, spec)
        return jax.ShapeDtypeStruct(like.shape, like.dtype, sharding=sharding)

    def keys(self) -> jax.Array:
        """One PRNG key per agent, made from its seed as a single run makes it."""
        return jnp.stack([jax.random.key(s) for s in self.seeds])

    def init(self, fresh: Callable[[jax.Array, Any, Hyper], Any], config: Any) -> Any:
        """`fresh(key, config, hyper)` for every agent, stacked (call it inside one compiled
        call). `hyper` is the agent's swept hyperparameters (`eqxrl.core.hyper`): its grid
        point's values, traced per agent under the vmap; the config is never traced."""
        keys = self.keys()
        if self.n == 1:
            return jax.tree.map(lambda x: x[None], fresh(keys[0], config, hyper_of(config)))
        if not self.points[0]:  # seeds only: one set of values, shared
            return jax.vmap(lambda k: fresh(k, config, hyper_of(config)))(keys)
        hypers = tree_stack([hyper_of(config, dict(p)) for p in self.points])
        return jax.vmap(lambda k, h: fresh(k, config, h))(keys, hypers)

    def check_memory(self, per_agent_bytes: int, shared_bytes: int = 0) -> None:
        """Refuse a run whose agents (and `shared_bytes` of `--offline-data`, one copy for all
        agents) cannot fit: name the settings that set their size."""
        need = per_agent_bytes * self.n + shared_bytes
        have = _memory_bytes(self.mesh)
        if have is not None and need > 0.9 * have:
            shared = (f", and {shared_bytes / 2**30:.1f} GiB of --offline-data that they share"
                      if shared_bytes else "")
            raise ConfigError(
                f"{self.n} agents need about {need / 2**30:.1f} GiB ({per_agent_bytes / 2**20:.0f} "
                f"MiB each: state and replay buffer{shared}), more than the {have / 2**30:.1f} "
                f"GiB of {self.devices} device(s). Lower --num-seeds (or the grid), "
                f"--buffer-size{', use a smaller dataset' if shared_bytes else ''}, or use more "
                "devices (--devices)."
            )


def _memory_bytes(mesh: Mesh | None) -> int | None:
    """The memory of the devices in `mesh` (host RAM for CPU devices), if it can be read."""
    devices = [jax.devices()[0]] if mesh is None else list(mesh.devices.flat)
    if devices[0].platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    return None if None in limits else int(sum(limits))


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays (or `ShapeDtypeStruct`s) of a tree."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree) if hasattr(x, "shape") and hasattr(x, "dtype")
               and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))

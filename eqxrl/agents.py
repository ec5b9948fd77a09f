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

import copy
import dataclasses
import itertools
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .blocks import AGENTS
from .config import ConfigError, flag


def with_values(config: Any, values: dict[str, Any]) -> Any:
    """A copy of `config` with fields set to `values`, unchecked (they may be traced arrays)."""
    config = copy.copy(config)
    for name, value in values.items():
        object.__setattr__(config, name, value)
    return config


Point = tuple[tuple[str, float | int], ...]  # the grid values of one agent: ((field, value), ...)


@dataclasses.dataclass(frozen=True)
class Agents:
    """The agents of a run: the seed and grid values of each, and the devices they live on."""

    seeds: tuple[int, ...]
    points: tuple[Point, ...]  # the grid values of each agent
    mesh: Mesh | None = None  # None: one device
    local: tuple[int, ...] | None = None  # agents whose host work this process does; None: all

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def stacked(self) -> bool:
        """Whether states (and checkpoints) have an agent axis: more than one agent."""
        return self.n > 1

    @property
    def devices(self) -> int:
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
    def over(self, f: Callable, in_axes: Sequence[int | None] | None = None) -> Callable:
        """`f` for every agent: its arguments and results carry the agent axis first.

        `in_axes` marks shared arguments with None (a dataset). One agent is not vmapped:
        its axis of length 1 is dropped on the way in and restored on the way out.
        """
        if self.n > 1:
            return jax.vmap(f, in_axes=0 if in_axes is None else tuple(in_axes),
                            axis_name=AGENTS)

        def one(*args):
            axes = in_axes or (0,) * len(args)
            args = [a if ax is None else jax.tree.map(lambda x: x[0], a)
                    for a, ax in zip(args, axes, strict=True)]
            return jax.tree.map(lambda x: x[None], f(*args))

        return one

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

    def init(self, fresh: Callable[[jax.Array, Any], Any], config: Any) -> Any:
        """`fresh(key, config)` for every agent, stacked (call it inside one compiled call).

        Grid fields reach `fresh` as traced per-agent values (`with_values`), so the values
        become array leaves of the state; `check_grid` has made sure that is all they are.
        """
        keys = self.keys()
        if self.n == 1:
            return jax.tree.map(lambda x: x[None], fresh(keys[0], config))
        names = [k for k, _ in self.points[0]]
        if not names:
            return jax.vmap(lambda k: fresh(k, config))(keys)
        values = {
            k: jnp.asarray([dict(p)[k] for p in self.points], _dtype(getattr(config, k)))
            for k in names
        }
        return jax.vmap(lambda k, v: fresh(k, with_values(config, v)))(keys, values)

    def check_memory(self, per_agent_bytes: int) -> None:
        """Refuse a run whose agents cannot fit: name the settings that set their size."""
        need = per_agent_bytes * self.n
        have = _memory_bytes(self.mesh)
        if have is not None and need > 0.9 * have:
            raise ConfigError(
                f"{self.n} agents need about {need / 2**30:.1f} GiB ({per_agent_bytes / 2**20:.0f} "
                f"MiB each: state and replay buffer), more than the {have / 2**30:.1f} GiB of "
                f"{self.devices} device(s). Lower --num-seeds (or the grid), --buffer-size, or "
                "use more devices (--devices)."
            )


def _dtype(value: Any) -> Any:
    return jnp.int32 if isinstance(value, int) else jnp.float32


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


def agent_list(run: Any) -> tuple[tuple[int, ...], tuple[Point, ...]]:
    """`(seeds, grid values)` of each agent of a run's settings: every seed of each grid point,
    grid points in the order of the flags' values (the last flag varies fastest)."""
    names = [name for name, _ in run.grid]
    points = [tuple(zip(names, values, strict=True))
              for values in itertools.product(*(v for _, v in run.grid))]
    return (tuple(s for _ in points for s in run.seed_list),
            tuple(p for p in points for _ in run.seed_list))


def make_agents(run: Any, batch_size: int) -> Agents:
    """The agents of a run's settings (`config.run`), on its devices; clear errors when the
    agents (or, for one agent, the batch) cannot be split evenly over the devices."""
    agents_seeds, agents_points = agent_list(run)
    points, seeds = sorted(set(agents_points)), run.seed_list
    visible = jax.devices()
    count = run.devices or len(visible)
    if jax.process_count() > 1 and count != len(visible):
        raise ConfigError(
            f"--devices {count}: a run of {jax.process_count()} processes uses all "
            f"{len(visible)} of their devices; leave --devices at 0."
        )
    if count > len(visible):
        raise ConfigError(
            f"--devices {count}: only {len(visible)} device(s) are visible. On CPU, "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={count} makes that many."
        )
    n = len(agents_seeds)
    if count > 1 and n > 1 and n % count:
        raise ConfigError(
            f"{n} agents ({len(points)} grid point(s) × {len(seeds)} seed(s)) cannot be split "
            f"evenly over {count} devices: train a multiple of {count} agents, or pass --devices "
            f"with a divisor of {n}."
        )
    if count > 1 and n == 1 and batch_size % count:
        raise ConfigError(
            f"--batch-size {batch_size} cannot be split evenly over {count} devices: use a "
            f"multiple of {count}, or --devices 1."
        )
    mesh = Mesh(np.array(visible[:count]), ("devices",)) if count > 1 else None
    local = None
    if jax.process_count() > 1 and n > 1:
        sharding = NamedSharding(mesh, PartitionSpec("devices"))
        local = tuple(sorted({i for index in sharding.addressable_devices_indices_map((n,))
                              .values() for i in range(n)[index[0]]}))
    elif jax.process_count() > 1:
        local = (0,)  # one agent, its state on every process
    return Agents(agents_seeds, agents_points, mesh, local)


def connect(run: Any) -> None:
    """Join the processes of a multi-process run (`jax.distributed`), before any JAX work.

    `--coordinator HOST:PORT --num-processes N --process-id I` on each process; on a cluster
    that JAX detects (SLURM, TPU pods, ...) `--num-processes N` alone. CPU processes exchange
    data with gloo.
    """
    if run.num_processes <= 1 or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(run.coordinator, run.num_processes, run.process_id)


def check_grid(
    config: Any,
    init_shape: Callable[[Any], Any],
    update_jaxpr: Callable[[Any], Any],
) -> None:
    """Refuse a grid over a field that is not only an array leaf of the state.

    `init_shape(config)` traces the algorithm's init with the config given; `update_jaxpr`
    traces one update. A field the init uses as a Python value (a layer size, a flag), or that
    the update reads from the config instead of the state, cannot vary inside one program.
    """
    algorithm_fields = {f.name: f for f in dataclasses.fields(config) if f.name != "run"}
    for name, values in config.run.grid:
        if name not in algorithm_fields:
            run_field = name in {f.name for f in dataclasses.fields(config.run)}
            raise ConfigError(
                f"{flag(name)} {' '.join(map(str, values))}: "
                + ("a run setting takes one value; " if run_field else "no such hyperparameter; ")
                + "a grid is over the algorithm's numeric hyperparameters."
            )
        base = getattr(config, name)
        if isinstance(base, bool) or not isinstance(base, int | float):
            raise ConfigError(f"{flag(name)}: only numeric hyperparameters take several values.")
        for value in values:
            dataclasses.replace(config, **{name: type(base)(value)})  # each value validated
        try:
            init_shape(with_values(config, {name: jnp.asarray(values[0], _dtype(base))}))
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
                jax.errors.TracerIntegerConversionError, TypeError) as err:
            raise ConfigError(
                f"{flag(name)} cannot take several values in one run: init uses it as a fixed "
                f"Python value ({type(err).__name__}). Run one value per run instead."
            ) from None
        a, b = (update_jaxpr(dataclasses.replace(config, **{name: type(base)(v)}))
                for v in values[:2])
        if a != b:
            raise ConfigError(
                f"{flag(name)} cannot take several values in one run: the update reads it from "
                "the config (it is static, not an array leaf of the state). Run one value per "
                "run instead."
            )


def agents_for(
    config: Any, algorithm: Any, init_state: Callable[[jax.Array, Any], Any], batch_like: Any
) -> Agents:
    """The agents of `config`, with its grid (if any) checked against the algorithm.

    `init_state(key, config)` builds one agent's state; `batch_like` is the shape of a batch.
    """
    agents = make_agents(config.run, config.run.batch_size)
    if config.run.grid:
        key = jax.random.key(0)

        def update_signature(c: Any) -> tuple[str, list[bytes]]:
            state = eqx.filter_eval_shape(init_state, key, c)
            traced = eqx.filter_make_jaxpr(lambda s, b, k: algorithm.update(s, b, k, c))
            closed = traced(state, batch_like, key)[0]
            return str(closed.jaxpr), [np.asarray(x).tobytes() for x in closed.consts]

        check_grid(config, lambda c: eqx.filter_eval_shape(init_state, key, c), update_signature)
    return agents

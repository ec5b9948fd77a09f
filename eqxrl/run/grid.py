"""The agents of a run: seeds × hyperparameter grid, placed on devices and processes, with the
grid checked against the algorithm before anything is trained.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from eqxrl.core.checks import ConfigError, flag
from eqxrl.run.agents import Agents, Point, value_dtype, with_values


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
            init_shape(with_values(config, {name: jnp.asarray(values[0], value_dtype(base))}))
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

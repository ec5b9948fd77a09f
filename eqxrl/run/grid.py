"""The agents of a run: seeds × hyperparameter grid, placed on devices and processes, with the
grid checked against the algorithm before anything is trained.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from eqxrl.core.checks import ConfigError, flag
from eqxrl.core.hyper import swept_fields
from eqxrl.run.agents import Agents, Point


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
    layout = agents_layout(getattr(run, "agents_layout", "vmap"), n, mesh)
    return Agents(agents_seeds, agents_points, mesh, local, layout)


UNROLL_AGENTS = 8  # the most agents "auto" writes out (compile time grows with each)


def agents_layout(requested: str, n: int, mesh: Mesh | None) -> str:
    """The layout that `--agents-layout requested` gives `n` agents on `mesh`'s devices."""
    if requested not in ("auto", "vmap", "unrolled"):
        raise ConfigError(f"--agents-layout {requested}: expected one of auto, vmap, unrolled.")
    if requested == "unrolled" and mesh is not None and n > 1:
        raise ConfigError(
            f"--agents-layout unrolled runs the agents one after another on one device, but "
            f"these {n} agents are split over {mesh.devices.size} devices. Use --agents-layout "
            "vmap (or auto), or --devices 1.")
    if requested != "auto":
        return requested
    cpu = jax.default_backend() == "cpu"
    return "unrolled" if cpu and mesh is None and 1 < n <= UNROLL_AGENTS else "vmap"


def check_grid(config: Any) -> None:
    """Refuse a grid over a field that the algorithm's `Config` does not mark `Swept`, or a
    value its checks refuse. Nothing is traced: a marked field reaches `init` through `hyper`
    (`eqxrl.core.hyper`), as an array leaf, so every value shares one program."""
    algorithm_fields = {f.name for f in dataclasses.fields(config) if f.name != "run"}
    swept = swept_fields(type(config))
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
        if name not in swept:
            raise ConfigError(
                f"{flag(name)} cannot take several values in one run: {type(config).__name__} "
                f"does not mark it Swept (it shapes the program: a size, a count, a switch), so "
                f"each value needs a program of its own. Run one value per run instead; the "
                f"fields that sweep are {', '.join(flag(f) for f in swept)}."
            )
        for value in values:
            dataclasses.replace(config, **{name: type(base)(value)})  # each value validated


def agents_for(config: Any) -> Agents:
    """The agents of `config` (seeds × grid, placed on its devices), its grid checked."""
    agents = make_agents(config.run, config.run.batch_size)
    check_grid(config)
    return agents

"""Every algorithm's update on one table: compile time, FLOPs, updates/s, fraction of peak.

Run:  python benchmarks/updates.py                        (all algorithms)
      python benchmarks/updates.py --algos cql iql --scan-length 20 --repeats 5

For each algorithm file, its own `update` with its default configuration, on HalfCheetah-sized
inputs (obs 17, action 6) and the configuration's batch size (PPO: one rollout of its default
`num_envs` x `num_steps`, all its epochs and minibatches):

- compile: seconds to trace and lower, then to compile with XLA, one update as a `jax.jit` of
  the state's arrays (what `eqxrl.jit` hands to XLA), measured before anything is cached;
- MFLOP: XLA's cost analysis of that compiled update;
- upd/s: updates per second in a `lax.scan` of `--scan-length` updates, best of `--repeats`;
- % peak: achieved FLOP/s over this machine's float32 matmul peak, measured in this process
  (a 2048 x 2048 matmul; the best of two measurements, one before and one after).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import time
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import eqxrl  # noqa: E402
from benchmarks.sac_update import compile_seconds, matmul_peak  # noqa: E402

Algo = Literal["sac", "td3", "cql", "iql", "td3_bc", "bc", "ppo"]


@dataclasses.dataclass(frozen=True)
class Args:
    algos: tuple[Algo, ...] = ("sac", "td3", "cql", "iql", "td3_bc", "bc", "ppo")
    obs_dim: int = 17
    action_dim: int = 6
    scan_length: int = 50
    """updates per timed call (CQL: a fifth of it, at least 4)"""
    repeats: int = 3
    """timed calls per algorithm; the best is reported"""


def inputs(name: str, config, spec: eqxrl.EnvSpec, key: jax.Array, lead: tuple[int, ...]):
    """A batch (or PPO rollout) for one update, with `lead` extra leading axes for a scan."""
    k = jax.random.split(key, 6)
    if name == "ppo":
        shape = (*lead, config.run.num_steps, config.run.num_envs)
        return eqxrl.Rollout(
            obs=jax.random.normal(k[0], (*shape, spec.obs_dim)),
            action=jax.random.uniform(k[1], (*shape, spec.action_dim), minval=-1, maxval=1),
            reward=jax.random.normal(k[2], shape),
            next_obs=jax.random.normal(k[3], (*shape, spec.obs_dim)),
            terminated=jnp.zeros(shape, bool), truncated=jnp.zeros(shape, bool),
            aux={"log_prob": jax.random.normal(k[4], shape),
                 "value": jax.random.normal(k[5], shape)},
        )
    shape = (*lead, config.run.batch_size)
    return eqxrl.Transition(
        obs=jax.random.normal(k[0], (*shape, spec.obs_dim)),
        action=jax.random.uniform(k[1], (*shape, spec.action_dim), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], shape),
        next_obs=jax.random.normal(k[3], (*shape, spec.obs_dim)),
        terminated=jnp.zeros(shape, bool), truncated=jnp.zeros(shape, bool),
    )


def measure(name: str, a: Args, spec: eqxrl.EnvSpec) -> dict:
    module = importlib.import_module(f"eqxrl.algorithms.{name}")
    config = module.Config()
    key = jax.random.key(0)
    state = eqxrl.jit(lambda: module.init(key, spec, config))()
    arrays, static = eqx.partition(state, eqx.is_array)

    def one(d, batch, k):
        new = module.update(eqx.combine(d, static), batch, k, config)[0]
        return eqx.partition(new, eqx.is_array)[0]

    batch = inputs(name, config, spec, key, ())
    lower_s, compile_s, compiled = compile_seconds(one, arrays, batch, key)
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", float("nan")))

    n = max(4, a.scan_length // 5) if name == "cql" else a.scan_length
    batches = inputs(name, config, spec, key, (n,))

    def scan(d, bs, k):
        def body(d, xs):
            return one(d, *xs), None

        return jax.lax.scan(body, d, (bs, jax.random.split(k, n)))[0]

    run = jax.jit(scan, donate_argnums=0).lower(arrays, batches, key).compile()
    arrays = jax.block_until_ready(run(jax.tree.map(jnp.copy, arrays), batches, key))
    best = float("inf")
    for _ in range(a.repeats):
        start = time.perf_counter()
        arrays = jax.block_until_ready(run(arrays, batches, key))
        best = min(best, time.perf_counter() - start)
    return {"name": name, "lower": lower_s, "compile": compile_s, "flops": flops,
            "ups": n / best}


def main(a: Args):
    spec = eqxrl.EnvSpec(
        jax.ShapeDtypeStruct((a.obs_dim,), np.dtype("float32")), (a.action_dim,),
        action_low=(-1.0,) * a.action_dim, action_high=(1.0,) * a.action_dim,
    )
    peak = matmul_peak()
    rows = [measure(name, a, spec) for name in a.algos]
    peak = max(peak, matmul_peak())
    print(f"on {jax.devices()[0].device_kind}; measured f32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'algorithm':<10}{'trace+lower s':>14}{'XLA s':>8}{'MFLOP':>9}{'upd/s':>9}"
          f"{'GFLOP/s':>9}{'% peak':>8}")
    for r in rows:
        gflops = r["ups"] * r["flops"] / 1e9
        print(f"{r['name']:<10}{r['lower']:>14.2f}{r['compile']:>8.2f}{r['flops'] / 1e6:>9.0f}"
              f"{r['ups']:>9.1f}{gflops:>9.1f}{100 * gflops * 1e9 / peak:>7.1f}%")


if __name__ == "__main__":
    main(tyro.cli(Args))

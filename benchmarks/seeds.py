"""Many agents in one process against the same agents run one after another.

Run:  python benchmarks/seeds.py                       (about 12 minutes on 2 CPU cores)
      python benchmarks/seeds.py --agents 1 2 5 --online-steps 3000 --offline-updates 6000
      python benchmarks/seeds.py --envs Pendulum-v1 --online-algos td3 tqc crossq \
          --offline-algos bc td3_bc cql rebrac
      python benchmarks/seeds.py --online-algos --offline-algos rebrac \
          --offline-layouts vmap unrolled

For each N in `--agents`, trains N agents as one program (`--num-seeds N`; offline, in each
layout of `--offline-layouts`: vmapped or written out, `--agents-layout`) with the
library's loops and each algorithm's default hyperparameters: the online algorithms of
`--online-algos` (SAC: 256×256, batch 256, UTD 1) on each env of `--envs`, and the offline ones
of `--offline-algos` (IQL: 256×256, batch 256) on a random HalfCheetah-shaped dataset this
script makes. The rate is
the steady one, read from the run's own training log over the log intervals after learning has
begun (`run_rate.steady_rate`: compilation, random steps and the final evaluation are outside).
Total agent rate = N × the loop's rate. N sequential runs take N times as long as one, so their
total rate is the N = 1 rate: the ratio column is (N-agent total rate) / (one agent's rate).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import tempfile

import numpy as np
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from run_rate import steady_rate  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    agents: tuple[int, ...] = (1, 2, 5, 1)
    """numbers of agents to compare (1 is the sequential baseline); a number given twice is
    measured twice, and the baseline is the mean of the one-agent runs (by default one before
    and one after the others: the one-agent rate moved up to 20% between invocations)"""
    envs: tuple[str, ...] = ("Pendulum-v1", "HalfCheetah-v5")
    """gymnasium envs of the online algorithms"""
    online_algos: tuple[str, ...] = ("sac",)
    """online off-policy algorithms (algorithms/<name>.py), each at its defaults"""
    offline_algos: tuple[str, ...] = ("iql",)
    """offline algorithms (algorithms/<name>.py), each at its defaults"""
    online_steps: int = 2500
    """env steps per online run (learning starts at --start-steps)"""
    start_steps: int = 1000
    """random steps before learning"""
    offline_updates: int = 5000
    """updates per offline run"""
    log_interval: int = 250
    """steps (updates) between log rows: the rate is measured between rows"""
    offline_data: str = ""
    """a dataset for the online algorithms (--offline-data: RLPD needs one)"""
    skip_offline: bool = False
    offline_layouts: tuple[str, ...] = ("auto",)
    """--agents-layout values to measure the offline algorithms with (auto, vmap, unrolled);
    the one-agent baseline is shared"""


def steady_total_rate(algo: str, n: int, begin: int, **run: object) -> float:
    """N × the steady rate of `algorithms/<algo>.py` trained with `n` agents at its defaults,
    its run settings changed by `run` (its own batch size and UTD kept), from step `begin`."""
    module = importlib.import_module(f"eqxrl.algorithms.{algo}")
    default = module.Config()
    settings = dataclasses.replace(default.run, num_seeds=n, eval_episodes=1, tensorboard=False,
                                   progress=False, **run)
    summary = module.main(dataclasses.replace(default, run=settings))
    return n * steady_rate(summary["run_dir"], begin)


def online(env_id: str, algo: str, n: int, a: Args, out: str) -> float:
    return steady_total_rate(
        algo, n, a.start_steps + a.log_interval, env_id=env_id, total_steps=a.online_steps,
        start_steps=a.start_steps, eval_interval=a.online_steps,
        checkpoint_interval=a.online_steps, log_interval=a.log_interval,
        run_dir=os.path.join(tempfile.mkdtemp(dir=out), f"{algo}_{env_id}_{n}"),
        **({"offline_data": a.offline_data} if a.offline_data else {}))


def offline(algo: str, n: int, a: Args, out: str, dataset: str, layout: str) -> float:
    return steady_total_rate(
        algo, n, 2 * a.log_interval, dataset=dataset, total_updates=a.offline_updates,
        updates_per_call=a.log_interval, eval_interval=a.offline_updates,
        checkpoint_interval=a.offline_updates, log_interval=a.log_interval,
        agents_layout=layout,
        run_dir=os.path.join(tempfile.mkdtemp(dir=out), f"{algo}_{n}_{layout}"))


def random_dataset(path: str, rows: int = 100_000) -> str:
    """A HalfCheetah-v5-shaped dataset of random rows (1000-step episodes), written to `path`."""
    import jax.numpy as jnp

    import eqxrl

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(rows + 1, 17)).astype(np.float32)
    data = eqxrl.Dataset(eqxrl.Transition(
        obs=jnp.asarray(obs[:-1]),
        action=jnp.asarray(rng.uniform(-1, 1, (rows, 6)).astype(np.float32)),
        reward=jnp.asarray(rng.normal(size=rows).astype(np.float32)),
        next_obs=jnp.asarray(obs[1:]),
        terminated=jnp.zeros(rows, bool),
        truncated=jnp.asarray(np.arange(rows) % 1000 == 999),
    ))
    eqxrl.save_dataset(path, data, eqxrl.DatasetInfo(env_id="HalfCheetah-v5"))
    return path


def main(a: Args) -> None:
    import jax

    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores")
    results: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as out:
        for algo in a.online_algos:
            for env_id in a.envs:
                for n in a.agents:
                    results.append((f"{algo} online {env_id} (agent env steps/s)", n,
                                    online(env_id, algo, n, a, out)))
                    print(results[-1], flush=True)
        if not a.skip_offline:
            dataset = random_dataset(os.path.join(out, "random.hdf5"))
            for algo in a.offline_algos:
                one_agent: list[float] = []  # measured in the first layout, reused by the rest
                for i, layout in enumerate(a.offline_layouts):
                    reused = iter(one_agent)
                    for n in a.agents:
                        if n == 1 and i > 0:
                            rate = next(reused)
                        else:
                            rate = offline(algo, n, a, out, dataset, layout)
                            if n == 1:
                                one_agent.append(rate)
                        results.append((f"{algo} offline, {layout} layout (agent updates/s)", n,
                                        rate))
                        print(results[-1], flush=True)
    print("\n| workload | N | total rate | vs N sequential runs |\n|---|---|---|---|")
    ones: dict[str, list[float]] = {}  # a workload's one-agent rates: the baseline is their mean
    for name, n, rate in results:
        if n == 1:
            ones.setdefault(name, []).append(rate)
    for name, n, rate in results:
        ratio = f"{rate / np.mean(ones[name]):.2f}×" if name in ones else ""
        print(f"| {name} | {n} | {rate:.1f} | {ratio} |")


if __name__ == "__main__":
    main(tyro.cli(Args))

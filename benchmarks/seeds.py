"""Many agents in one process against the same agents run one after another.

Run:  python benchmarks/seeds.py                       (about 10 minutes on 2 CPU cores)
      python benchmarks/seeds.py --agents 1 2 5 --online-steps 3000 --offline-updates 6000

For each N in `--agents`, trains N agents as one vmapped program (`--num-seeds N`) with the
library's loops: online SAC (256×256, batch 256, UTD 1) on each env of `--envs`, and offline
IQL (256×256, batch 256) on a random HalfCheetah-shaped dataset this script makes. The rate is
the steady one, read from the run's own training log over the log intervals after learning has
begun (`run_rate.steady_rate`: compilation, random steps and the final evaluation are outside).
Total agent rate = N × the loop's rate. N sequential runs take N times as long as one, so their
total rate is the N = 1 rate: the ratio column is (N-agent total rate) / (one agent's rate).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile

import numpy as np
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from run_rate import steady_rate  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    agents: tuple[int, ...] = (1, 2, 5)
    """numbers of agents to compare (1 is the sequential baseline)"""
    envs: tuple[str, ...] = ("Pendulum-v1", "HalfCheetah-v5")
    """gymnasium envs for online SAC"""
    online_steps: int = 2500
    """env steps per online run (learning starts at --start-steps)"""
    start_steps: int = 1000
    """random steps before learning"""
    offline_updates: int = 5000
    """updates per offline run"""
    log_interval: int = 250
    """steps (updates) between log rows: the rate is measured between rows"""
    skip_offline: bool = False


def online(env_id: str, n: int, a: Args, out: str) -> float:
    import eqxrl
    from eqxrl.algorithms import sac

    run = eqxrl.OnlineRun(
        env_id=env_id, num_seeds=n, total_steps=a.online_steps, start_steps=a.start_steps,
        eval_interval=a.online_steps, eval_episodes=1, checkpoint_interval=a.online_steps,
        log_interval=a.log_interval, tensorboard=False, progress=False,
        run_dir=os.path.join(out, f"sac_{env_id}_{n}"),
    )
    summary = sac.main(sac.Config(run=run))
    return n * steady_rate(summary["run_dir"], a.start_steps + a.log_interval)


def offline(n: int, a: Args, out: str, dataset) -> float:
    import eqxrl
    from eqxrl.algorithms import iql

    run = eqxrl.OfflineRun(
        env_id="HalfCheetah-v5", num_seeds=n, total_updates=a.offline_updates,
        updates_per_call=a.log_interval, eval_interval=a.offline_updates, eval_episodes=1,
        checkpoint_interval=a.offline_updates, log_interval=a.log_interval,
        tensorboard=False, progress=False, run_dir=os.path.join(out, f"iql_{n}"),
    )
    summary = eqxrl.train_offline(iql.Config(run=run), iql, dataset=dataset)
    return n * steady_rate(summary["run_dir"], 2 * a.log_interval)


def random_dataset(rows: int = 100_000):
    import jax.numpy as jnp

    import eqxrl

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(rows + 1, 17)).astype(np.float32)
    return eqxrl.Dataset(eqxrl.Transition(
        obs=jnp.asarray(obs[:-1]),
        action=jnp.asarray(rng.uniform(-1, 1, (rows, 6)).astype(np.float32)),
        reward=jnp.asarray(rng.normal(size=rows).astype(np.float32)),
        next_obs=jnp.asarray(obs[1:]),
        terminated=jnp.zeros(rows, bool),
        truncated=jnp.asarray(np.arange(rows) % 1000 == 999),
    ))


def main(a: Args) -> None:
    import jax

    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores")
    results: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as out:
        for env_id in a.envs:
            for n in a.agents:
                results.append((f"SAC online {env_id} (agent env steps/s)", n,
                                online(env_id, n, a, out)))
                print(results[-1], flush=True)
        if not a.skip_offline:
            dataset = random_dataset()
            for n in a.agents:
                results.append(("IQL offline (agent updates/s)", n, offline(n, a, out, dataset)))
                print(results[-1], flush=True)
    print("\n| workload | N | total rate | vs N sequential runs |\n|---|---|---|---|")
    base = {}
    for name, n, rate in results:
        base.setdefault(name, rate if n == 1 else None)
        ratio = "" if base[name] is None else f"{rate / base[name]:.2f}×"
        print(f"| {name} | {n} | {rate:.1f} | {ratio} |")


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Env steps/s of full SAC training (UTD 1) on HalfCheetah-v5: eqxrl vs SBX vs Stable-Baselines3.

Run:  pip install -e ".[bench]"   (sbx-rl and stable-baselines3 with PyTorch; optional)
      python benchmarks/sac_online.py --steps 5000

Each framework trains SAC from scratch with the same hyperparameters (256x256 networks, batch
256, lr 3e-4, buffer 1M, γ 0.99, τ 0.005, automatic temperature with target entropy
−action_dim, one update per env step after `learning_starts` random steps), one after another
in this invocation, and is timed end to end (compilation included for the two JAX ones).
eqxrl's time also includes one final evaluation episode, which its loop always runs.
Frameworks that are not installed are reported as skipped.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time

import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


@dataclasses.dataclass(frozen=True)
class Args:
    env_id: str = "HalfCheetah-v5"
    steps: int = 5000
    """env steps per framework"""
    learning_starts: int = 1000
    """random steps before updates begin"""
    seed: int = 0
    only: tuple[str, ...] = ("eqxrl", "sbx", "sb3")
    """frameworks to run"""


def run_eqxrl(a: Args) -> float:
    import eqxrl
    from algorithms import sac

    with tempfile.TemporaryDirectory() as tmp:
        config = sac.Config(run=eqxrl.OnlineRun(
            env_id=a.env_id, seed=a.seed, total_steps=a.steps, start_steps=a.learning_starts,
            eval_interval=a.steps, eval_episodes=1, checkpoint_interval=a.steps,
            log_interval=1000, run_dir=os.path.join(tmp, "run"), progress=False,
            tensorboard=False,
        ))
        start = time.perf_counter()
        sac.main(config)
        return time.perf_counter() - start


def _sb_kwargs(a: Args) -> dict:
    return dict(
        learning_rate=3e-4, buffer_size=1_000_000, learning_starts=a.learning_starts,
        batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1,
        ent_coef="auto", policy_kwargs=dict(net_arch=[256, 256]), seed=a.seed, verbose=0,
    )


def run_sbx(a: Args) -> float:
    import gymnasium as gym
    from sbx import SAC

    model = SAC("MlpPolicy", gym.make(a.env_id), **_sb_kwargs(a))
    start = time.perf_counter()
    model.learn(total_timesteps=a.steps)
    return time.perf_counter() - start


def run_sb3(a: Args) -> float:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    torch.set_num_threads(os.cpu_count() or 1)
    model = SAC("MlpPolicy", gym.make(a.env_id), device="cpu", **_sb_kwargs(a))
    start = time.perf_counter()
    model.learn(total_timesteps=a.steps)
    return time.perf_counter() - start


def main(a: Args) -> None:
    runners = {"eqxrl": run_eqxrl, "sbx": run_sbx, "sb3": run_sb3}
    results = {}
    for name in a.only:
        try:
            seconds = runners[name](a)
        except ImportError as err:
            print(f"{name}: skipped ({err})")
            continue
        results[name] = a.steps / seconds
        print(f"{name}: {a.steps} steps in {seconds:.1f} s = {results[name]:.1f} env steps/s")
    print(f"\nSAC on {a.env_id}, {a.steps} env steps ({a.learning_starts} random), UTD 1")
    base = results.get("eqxrl")
    for name, rate in results.items():
        speedup = f"  (eqxrl is {base / rate:.2f}x)" if base and name != "eqxrl" else ""
        print(f"  {name:<6} {rate:8.1f} env steps/s{speedup}")


if __name__ == "__main__":
    main(tyro.cli(Args))

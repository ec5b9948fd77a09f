"""Env steps/s of full SAC training (UTD 1) on HalfCheetah-v5: eqxrl vs SBX vs Stable-Baselines3,
and how close eqxrl's loop comes to the rate of its own update alone.

Run:  pip install -e ".[bench]"   (sbx-rl and stable-baselines3 with PyTorch; optional)
      python benchmarks/sac_online.py --steps 5000

Each framework trains SAC from scratch with the same hyperparameters (256x256 networks, batch
256, lr 3e-4, buffer 1M, γ 0.99, τ 0.005, automatic temperature with target entropy
−action_dim, one update per env step after `learning_starts` random steps), one after another
in this invocation, and is timed end to end (compilation included for the two JAX ones).
eqxrl's time also includes one final evaluation episode, which its loop always runs.
Frameworks that are not installed are reported as skipped.

For eqxrl it also reports the loop's steady rate (from its train.csv over the log intervals
after the first log row after `learning_starts`, `run_rate.steady_rate`: compilation excluded)
and, in the same invocation, the rate of the loop's own compiled `learn` call (sample a batch,
update; the same program the loop runs) called back to back on a filled 1M-row buffer with no
env, store or Python in between: "loop ÷ update-only" is what the loop's own overhead leaves.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time

import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from run_rate import steady_rate  # noqa: E402


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
    log_interval: int = 1000
    """eqxrl's log interval (its steady rate is read from these rows)"""
    update_only_calls: int = 1000
    """eqxrl update-only calls to time (0 skips it)"""


def eqxrl_config(a: Args, run_dir: str):
    import eqxrl
    from eqxrl.algorithms import sac

    return sac.Config(run=eqxrl.OnlineRun(
        env_id=a.env_id, seed=a.seed, total_steps=a.steps, start_steps=a.learning_starts,
        eval_interval=a.steps, eval_episodes=1, checkpoint_interval=a.steps,
        log_interval=a.log_interval, run_dir=run_dir, progress=False, tensorboard=False,
    ))


def run_eqxrl(a: Args) -> float:
    from eqxrl.algorithms import sac

    with tempfile.TemporaryDirectory() as tmp:
        config = eqxrl_config(a, os.path.join(tmp, "run"))
        start = time.perf_counter()
        sac.main(config)
        seconds = time.perf_counter() - start
        # Steady training rate: over the log intervals from the first log row after learning
        # starts (the interval up to that row includes compiling the update).
        if a.steps >= a.learning_starts + 2 * a.log_interval:  # else no such interval
            STEADY["eqxrl"] = steady_rate(os.path.join(tmp, "run"),
                                          a.learning_starts + a.log_interval)
    return seconds


def eqxrl_update_only(a: Args, calls: int) -> float:
    """Calls/s of the online loop's compiled `learn` (UTD 1: one update each), back to back."""
    import jax
    import numpy as np

    import eqxrl
    from eqxrl.algorithms import sac
    from eqxrl.data.replay import ReplayBuffer
    from eqxrl.loops.host_steps import make_step_functions
    from eqxrl.run.grid import make_agents

    config = eqxrl_config(a, "unused")
    env = eqxrl.make_env(a.env_id)
    spec = eqxrl.spec_from_env(env)
    env.close()
    example = spec.example_transition()
    agents = make_agents(config.run, config.run.batch_size)

    def fresh(key, config, hyper):
        return (sac.init(key, spec, config, hyper), key), ReplayBuffer.create(example,
                                                                       config.run.buffer_size)

    state_key, buffer = eqxrl.jit(lambda: agents.init(fresh, config))()
    fns = make_step_functions(spec, config, sac, state_key, buffer, agents)
    flat = (fns.sk.flatten(state_key), fns.buf.flatten(buffer))
    del state_key, buffer
    rng = np.random.default_rng(0)
    obs_shape = (1, *spec.observation.shape)
    for _ in range(a.learning_starts):  # fill the buffer as the loop's random phase does
        row = (rng.normal(size=obs_shape).astype(np.float32),
               rng.uniform(-1, 1, (1, spec.action_dim)).astype(np.float32),
               np.ones(1, np.float32), rng.normal(size=obs_shape).astype(np.float32),
               np.zeros(1, bool), np.zeros(1, bool))
        flat, _ = fns.random_step(flat, row)
    sk, buf = flat
    sk, _, _ = fns.learn(sk, buf)  # compile
    jax.block_until_ready(sk)
    start = time.perf_counter()
    for _ in range(calls):
        sk, _, _ = fns.learn(sk, buf)
    jax.block_until_ready(sk)
    return calls / (time.perf_counter() - start)


STEADY: dict[str, float] = {}
UPDATE_ONLY: list[float] = []


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
            if name == "eqxrl" and a.update_only_calls:
                UPDATE_ONLY.append(eqxrl_update_only(a, a.update_only_calls))
            seconds = runners[name](a)
            if name == "eqxrl" and a.update_only_calls:
                UPDATE_ONLY.append(eqxrl_update_only(a, a.update_only_calls))
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
    if "eqxrl" in STEADY and UPDATE_ONLY:
        update_only = sum(UPDATE_ONLY) / len(UPDATE_ONLY)
        loop = STEADY["eqxrl"]
        print(f"eqxrl steady loop {loop:.1f} env steps/s; its update alone "
              f"{' and '.join(f'{u:.1f}' for u in UPDATE_ONLY)}/s (before and after the run); "
              f"loop ÷ update-only = {loop / update_only:.3f}")


if __name__ == "__main__":
    main(tyro.cli(Args))

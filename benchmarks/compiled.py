"""Compiled training loops against rejax at equal configuration, in one invocation.

    pip install -e ".[bench]"      # rejax 0.1.3 (and flax); gymnax comes with [dev]/[gymnax]
    python benchmarks/compiled.py  # ~10 minutes on 2 CPU cores; --quick for a smoke run

Workloads (gymnax envs, `--agents 1 4` agents as one vmapped program on each side):
- SAC, 256×256, batch 256, UTD 1, lr 3e-4, τ 0.005, buffer 131072, 2048 random steps, one env
  per agent, on Pendulum-v1;
- PPO, 64×64 tanh, 8 envs × 128 steps, 4 epochs × 4 minibatches, on CartPole-v1.

Both sides are compared at their steady rate, env steps per second per agent once learning has
begun, without compilation, random steps or evaluation:
- eqxrl runs the algorithm files as a user does (`train_online` / `train_on_policy`: the
  harness with its chunks, logs, one evaluation and one checkpoint at the end). Its rate is
  read from its run's `train.csv` over the log intervals after learning has begun
  (see `eqxrl_train`).
- rejax runs `jax.jit(jax.vmap(algo.train))`, compiled ahead of time, at two budgets: a short
  one (its buffer fill and one eighth of the budget's learning) and the full one. Its rate is
  the difference of the budgets over the difference of the two calls' times, so its buffer
  fill (steps that act but do not learn) and its final evaluation cancel. Its rate over the
  whole call, as earlier versions of this file reported it, counts the 2048 fill steps as
  learning steps (a third of SAC's 6000): it overstated rejax's SAC rate by about 1.5x.
The end-to-end seconds of each side's full-budget run, compilation included, are printed too.
A difference of two runs' times is not used for eqxrl: JAX reuses a compiled program whose
HLO it has seen in the process, so a second run skips compilation. Compile time is what JAX
reports through `jax.monitoring`: tracing + lowering to StableHLO, and XLA's own compilation,
summed over every program a run compiled (nested traces may count twice).
rejax 0.1.3 calls `env.step` with gymnax 0.0.x's signature; `Gymnax1ForRejax` (benchmark
only) returns gymnax 1.0's values as those five, with `done = terminated | truncated`, which
is what rejax stores (so, unlike eqxrl, it does not bootstrap through Pendulum's time limit:
a learning difference, not a speed one).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

import jax

TRACE_AND_LOWER = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration")
XLA_COMPILE = "/jax/core/compile/backend_compile_duration"
compile_seconds = {"trace": 0.0, "xla": 0.0}


def _listen(event: str, duration: float, **kwargs) -> None:
    if event in TRACE_AND_LOWER:
        compile_seconds["trace"] += duration
    elif event == XLA_COMPILE:
        compile_seconds["xla"] += duration


jax.monitoring.register_event_duration_secs_listener(_listen)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from run_rate import steady_rate  # noqa: E402

import eqxrl  # noqa: E402
from eqxrl.algorithms import ppo, sac  # noqa: E402


class Gymnax1ForRejax:
    """A gymnax 1.0 env seen through gymnax 0.0.x's `step` (what rejax 0.1.3 calls)."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):  # only for names not set here (deepcopy makes a bare one)
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action,
                                                                        params)
        return obs, state, reward, terminated | truncated, info


def rejax_algo(name: str, steps: int):
    """rejax's `name` ("sac" or "ppo") configured as eqxrl's, for `steps` env steps."""
    import gymnax
    import rejax

    if name == "sac":
        env, params = gymnax.make("Pendulum-v1")
        return rejax.SAC.create(
            env=Gymnax1ForRejax(env), env_params=params, total_timesteps=steps,
            eval_freq=steps, skip_initial_evaluation=True, num_envs=1, learning_rate=3e-4,
            batch_size=256, buffer_size=131_072, fill_buffer=2048, polyak=0.995, gamma=0.99,
            hidden_layer_sizes=(256, 256), agent_kwargs={"activation": "relu"})
    env, params = gymnax.make("CartPole-v1")
    return rejax.PPO.create(
        env=Gymnax1ForRejax(env), env_params=params, total_timesteps=steps,
        eval_freq=steps, skip_initial_evaluation=True, num_envs=8, num_steps=128,
        num_epochs=4, num_minibatches=4, learning_rate=2.5e-4, max_grad_norm=0.5,
        clip_eps=0.2, vf_coef=0.5, ent_coef=0.01, gae_lambda=0.95, gamma=0.99,
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": (64, 64)})


def rejax_compiled(name: str, steps: int, agents: int):
    """(rejax training `agents` agents for `steps` env steps, compiled ahead of time; its keys;
    seconds to compile it; compile seconds as "trace+lower / XLA")."""
    keys = jax.random.split(jax.random.key(0), agents)
    compile_seconds.update(trace=0.0, xla=0.0)
    start = time.perf_counter()
    train = jax.jit(jax.vmap(rejax_algo(name, steps).train)).lower(keys).compile()
    compiling = time.perf_counter() - start
    return train, keys, compiling, f"{compile_seconds['trace']:.1f} / {compile_seconds['xla']:.1f}"


def timed(train, keys) -> float:
    """Seconds of one call of a compiled rejax `train`."""
    start = time.perf_counter()
    jax.block_until_ready(train(keys))
    return time.perf_counter() - start


def rejax_train(name: str, steps: int, short: int, agents: int) -> tuple[float, float, str]:
    """(rejax's steady env steps per second per agent, end-to-end seconds of the `steps`
    run, compile seconds of it): the rate from the calls at `short` and `steps` steps."""
    train_short, keys, _, _ = rejax_compiled(name, short, agents)
    timed(train_short, keys)  # rejax's first call in a process carries one-off work
    seconds_short = timed(train_short, keys)
    train, keys, compiling, compiled = rejax_compiled(name, steps, agents)
    seconds = timed(train, keys)
    return (steps - short) / (seconds - seconds_short), seconds + compiling, compiled


def eqxrl_train(name: str, steps: int, agents: int) -> tuple[float, float, str]:
    """(steady env steps per second per agent, end-to-end seconds, compile seconds) of
    eqxrl's algorithm file training `agents` agents for `steps` env steps.

    The rate is read from the run's own `train.csv` over the log intervals that learn
    throughout (`run_rate.steady_rate`), which excludes compilation, set-up and the random
    steps. Every chunk has the same length, so nothing compiles then.
    (Earlier versions read each row's rate as the mean since the run's start; it is the
    rate since the previous row.)
    """
    folder = tempfile.mkdtemp(prefix="eqxrl-bench-")
    run_dir = os.path.join(folder, "run")
    common = dict(total_steps=steps, num_seeds=agents, eval_interval=steps,
                  checkpoint_interval=steps, eval_episodes=128, progress=False,
                  tensorboard=False, run_dir=run_dir)
    compile_seconds.update(trace=0.0, xla=0.0)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if name == "sac":
            config = sac.Config(run=eqxrl.OnlineRun(
                env_id="gymnax:Pendulum-v1", start_steps=2048, batch_size=256,
                buffer_size=131_072, log_interval=1000, **common))
            learns_from = config.run.start_steps
            eqxrl.train_online(config, sac)
        else:
            config = ppo.Config(run=eqxrl.OnPolicyRun(
                env_id="gymnax:CartPole-v1", log_interval=16_384, **common))
            learns_from = 1  # from the second row: the first includes compilation
            eqxrl.train_on_policy(config, ppo)
    seconds = time.perf_counter() - start
    compiled = f"{compile_seconds['trace']:.1f} / {compile_seconds['xla']:.1f}"
    return steady_rate(run_dir, learns_from), seconds, compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--workloads", nargs="+", default=["sac", "ppo"],
                        choices=["sac", "ppo"])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    args = parser.parse_args()
    budgets = {"sac": (6000, 2048 + 500), "ppo": (262_144, 32_768)}  # (full, short)
    if args.quick:
        budgets = {"sac": (4000, 2048 + 250), "ppo": (65_536, 16_384)}
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; steps/s are env steps per "
          "second per agent once learning has begun; end-to-end seconds include compilation")
    print(f"{'workload':<20} {'agents':>6} {'eqxrl steps/s':>13} {'rejax steps/s':>13} "
          f"{'ratio':>6} {'eqxrl s':>8} {'rejax s':>8} {'eqxrl compile s':>15} "
          f"{'rejax compile s':>15}  (trace+lower / XLA)")
    for name in args.workloads:
        steps, short = budgets[name]
        for agents in args.agents:
            ours, ours_seconds, ours_setup = eqxrl_train(name, steps, agents)
            theirs, theirs_seconds, theirs_setup = rejax_train(name, steps, short, agents)
            label = {"sac": "SAC gymnax Pendulum", "ppo": "PPO gymnax CartPole"}[name]
            print(f"{label:<20} {agents:>6} {ours:>13.1f} {theirs:>13.1f} {ours / theirs:>6.2f} "
                  f"{ours_seconds:>8.1f} {theirs_seconds:>8.1f} {ours_setup:>15} "
                  f"{theirs_setup:>15}", flush=True)


if __name__ == "__main__":
    main()

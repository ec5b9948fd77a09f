"""CrossQ, TQC and SAC with SimBa networks side by side with sbx's own implementations: the
update alone, env steps/s of whole training runs, and the final deterministic evaluation with
its curve.

Run:  pip install -e ".[bench]"   (sbx-rl; optional)
      python benchmarks/frontier.py --mode update              # the update alone, ~2 min
      python benchmarks/frontier.py --mode train --steps 3000  # whole runs, env steps/s
      python benchmarks/frontier.py --mode train --steps 50000 --num-seeds 3   # learning

Both sides use sbx's defaults for each algorithm, which eqxrl's flags reproduce:
- CrossQ: critics 2 × 1024 (sbx's; the paper's 2048 is eqxrl's default), actor 2 × 256,
  BatchRenorm (momentum 0.99, warmup 100k), Adam lr 1e-3 with β1 0.5, policy delay 3, batch 256;
- TQC: 2 critics × 25 quantiles of 2 × 256, 2 dropped per critic, actor 2 × 256, lr 3e-4,
  τ 0.005, batch 256;
- SAC with SimBa networks (`sac_simba`, sbx's `SAC("SimbaPolicy")`): actor and critics of 2
  residual blocks of 256 (sbx's net_arch), AdamW with optax's default weight decay 1e-4, no
  observation normalisation (sbx has none), log-std clipped at −20, lr 3e-4, batch 256.
Both sample `--learning-starts` uniform random actions first (sbx's `learning_starts`).
- SimbaV2 (`simbav2`) is eqxrl's alone: sbx has none, so it runs with `--only eqxrl` and its
  update is timed at the paper's sizes (critics 2 blocks of 512, actor 1 of 128, batch 256),
  or at `--simbav2-critic-width`; its training runs use `--simbav2-utd` (the paper's 2).

`update` times one update on the same fixed batch of random transitions: eqxrl's compiled
`update` against sbx's jitted `_train` with `gradient_steps=1` (what its `train` calls after
sampling, with its policy-delay offset cycling as `train` does), each called from Python and
blocked on, the frameworks in alternating blocks of 6 calls (median over blocks), so the
delayed actor updates are in every block and drift falls on all alike. The ratio is sbx's time
over eqxrl's. eqxrl is timed twice: called on its `State` (as from a notebook), and
`eqxrl_flat`, as its host loop calls it: on the state's flat list of arrays, donated, so no
Python flattening of the Equinox modules per call. It also reports each side's FLOPs per
update from XLA's cost analysis, and `eqxrl_flat`'s rate over the machine's measured float32
matmul peak. For that fraction the FLOPs are sbx's mean over its policy-delay programs where
sbx ran: eqxrl's cost analysis counts the conditional delayed actor update (CrossQ's) on every
update, which overstates the work of the updates that skip it.

`train` runs each framework from scratch for `--steps` env steps at UTD 1 in this invocation,
one after the other, timed end to end (compilation and evaluations included), then evaluates
10 deterministic episodes. eqxrl runs `--num-seeds` agents as one vmapped job (its rate is
agent env steps per second, and its return the mean over seeds; `--out` gets each seed's
final and curve too); sbx runs seed `--seed`. eqxrl's run folder is deleted afterwards unless
`--runs-dir` names where to keep it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Literal

import numpy as np
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


@dataclasses.dataclass(frozen=True)
class Args:
    mode: Literal["update", "train"] = "update"
    """`update`: the update alone on one batch; `train`: whole training runs"""
    algorithms: tuple[Literal["crossq", "tqc", "sac_simba", "simbav2"], ...] = ("crossq", "tqc")
    env_id: str = "HalfCheetah-v5"
    steps: int = 3000
    """env steps per training run (`train`)"""
    learning_starts: int = 1000
    """random steps before updates begin (`train`)"""
    eval_interval: int = 0
    """env steps between evaluations of the curve (0: only at the end)"""
    eval_episodes: int = 10
    num_seeds: int = 1
    """eqxrl agents in one vmapped run (`train`); sbx runs one"""
    seed: int = 0
    calls: int = 200
    """timed update calls per framework (`update`)"""
    only: tuple[Literal["eqxrl", "sbx"], ...] = ("eqxrl", "sbx")
    """the frameworks to run (simbav2 runs on eqxrl only)"""
    simbav2_critic_width: int = 512
    """SimbaV2's critic width (the paper's 512)"""
    simbav2_utd: int = 2
    """SimbaV2's updates per env step in `train` (the paper's 2)"""
    out: str | None = None
    """write the results as JSON here"""
    runs_dir: str | None = None
    """keep eqxrl's run folders (eval.csv per seed, logs) in <runs-dir>/<algorithm>"""


def eqxrl_config(name: str, run: dict, a: Args | None = None):
    import eqxrl
    from eqxrl.algorithms import crossq, sac, simbav2, tqc

    a = Args() if a is None else a
    if name == "simbav2":
        settings = eqxrl.OnlineRun(batch_size=256, utd=a.simbav2_utd, **run)
        return simbav2, simbav2.Config(run=settings, critic_width=a.simbav2_critic_width)
    settings = eqxrl.OnlineRun(batch_size=256, **run)
    if name == "crossq":
        return crossq, crossq.Config(run=settings, critic_hidden_dims=(1024, 1024))
    if name == "sac_simba":
        net = eqxrl.Networks(network="simba", simba_critic_width=256, simba_critic_blocks=2,
                             simba_actor_width=256, simba_actor_blocks=2, obs_norm=False,
                             weight_decay=1e-4)
        return sac, sac.Config(run=settings, net=net, log_std_min=-20.0,
                               temperature_loss="log_alpha")  # sbx's SAC tunes log α
    return tqc, tqc.Config(run=settings, num_critics=2, num_quantiles=25, drop_per_critic=2,
                           critic_hidden_dims=(256, 256))


def sbx_model(name: str, env, seed: int, learning_starts: int):
    from sbx import SAC, TQC, CrossQ

    if name == "sac_simba":
        return SAC("SimbaPolicy", env, learning_starts=learning_starts, seed=seed, verbose=0)
    cls = CrossQ if name == "crossq" else TQC
    return cls("MlpPolicy", env, learning_starts=learning_starts, seed=seed, verbose=0)


def random_batch(spec, n: int = 256, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    obs_dim, act_dim = spec.obs_dim, spec.action_dim
    return {
        "obs": rng.standard_normal((n, obs_dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "next_obs": rng.standard_normal((n, obs_dim)).astype(np.float32),
        "reward": rng.standard_normal(n).astype(np.float32),
        "terminated": np.zeros(n, bool),
    }


def time_calls(fn, calls: int) -> float:
    """Seconds per call of `fn()` (which blocks), after 10 warm-up calls."""
    for _ in range(10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_interleaved(fns: dict, calls: int, block: int = 6) -> dict:
    """Seconds per call of each blocking `fn()`, timed in alternating blocks of `block` calls
    (a multiple of CrossQ's policy delay), median over blocks: the machine's drift (other
    load, clock changes) falls on every framework alike."""
    for fn in fns.values():
        for _ in range(2 * block):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(max(1, calls // block)):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(block):
                fn()
            times[name].append((time.perf_counter() - start) / block)
    return {name: float(np.median(t)) for name, t in times.items()}


def update_eqxrl(name: str, env, batch: dict, a: Args):
    import jax
    import jax.numpy as jnp

    import eqxrl

    module, config = eqxrl_config(name, {}, a)
    spec = eqxrl.spec_from_env(env)
    state = module.init(jax.random.key(0), spec, config)
    transition = eqxrl.Transition(
        obs=jnp.asarray(batch["obs"]), action=jnp.asarray(batch["action"]),
        reward=jnp.asarray(batch["reward"]), next_obs=jnp.asarray(batch["next_obs"]),
        terminated=jnp.asarray(batch["terminated"]), truncated=jnp.zeros(256, bool),
    )
    compiled = jax.jit(lambda s, b, k: module.update(s, b, k, config)).lower(
        state, transition, jax.random.key(1)).compile()
    flops = float((compiled.cost_analysis() or {}).get("flops", 0.0))
    box = {"state": state, "key": jax.random.key(1)}

    def call():
        box["key"], k = jax.random.split(box["key"])
        box["state"], metrics = compiled(box["state"], transition, k)
        jax.block_until_ready(metrics)

    # As eqxrl's host loop calls it: the state and key held as their flat list of arrays
    # (eqxrl.core.jit.split/merge), donated from call to call, so no Python flattening of the
    # Equinox modules per call.
    from eqxrl.core.jit import merge, split

    dynamic, static = split((state, jax.random.key(1)))

    def flat_update(dynamic, transition):
        state, key = merge(dynamic, static)
        key, k = jax.random.split(key)
        state, metrics = module.update(state, transition, k, config)
        return split((state, key))[0], metrics

    flat = jax.jit(flat_update, donate_argnums=0).lower(dynamic, transition).compile()
    box["dynamic"] = jax.tree.map(jnp.copy, dynamic)

    def call_flat():
        box["dynamic"], metrics = flat(box["dynamic"], transition)
        jax.block_until_ready(metrics)

    return call, call_flat, flops


def sbx_train_args(name: str, model, data, offset: int) -> dict:
    """The keyword arguments of sbx's jitted `_train` for one update on `data`, at the given
    policy-delay offset (sbx's train() passes (updates + 1) % policy_delay, each offset its
    own compiled program)."""
    p = model.policy
    args = dict(target_entropy=model.target_entropy, gradient_steps=1, data=data,
                policy_delay=model.policy_delay, policy_delay_offset=offset,
                actor_state=p.actor_state, ent_coef_state=model.ent_coef_state, key=model.key)
    if name == "crossq":
        return {**args, "qf_state": p.qf_state}
    if name == "sac_simba":
        return {**args, "tau": model.tau, "qf_state": p.qf_state}
    return {**args, "tau": model.tau, "n_target_quantiles": p.n_target_quantiles,
            "qf1_state": p.qf1_state, "qf2_state": p.qf2_state}


def update_sbx(name: str, env, batch: dict):
    """sbx's update as a timed call, and its FLOPs per update: XLA's cost analysis of each
    policy-delay offset's program, averaged over the offsets as train() cycles through them."""
    import jax
    from sbx.common.type_aliases import ReplayBufferSamplesNp

    model = sbx_model(name, env, 0, 100)
    model._setup_learn(1000)  # noqa: SLF001 (sbx's own setup, as learn() runs it)
    data = ReplayBufferSamplesNp(batch["obs"], batch["action"], batch["next_obs"],
                                 batch["terminated"].astype(np.float32), batch["reward"],
                                 np.full(256, model.gamma, np.float32))
    p = model.policy
    train = type(model)._train.__func__  # noqa: SLF001 (the jitted function under the classmethod)
    flops = np.mean([
        float(train.lower(cls=type(model), **sbx_train_args(name, model, data, offset))
              .compile().cost_analysis().get("flops", 0.0))
        for offset in range(model.policy_delay)
    ])
    count = [0]

    def call():
        offset = (count[0] + 1) % model.policy_delay
        count[0] += 1
        *states, model.key, info = model._train(**sbx_train_args(name, model, data, offset))  # noqa: SLF001
        if name == "tqc":
            p.qf1_state, p.qf2_state, p.actor_state, model.ent_coef_state = states
        else:
            p.qf_state, p.actor_state, model.ent_coef_state = states
        jax.block_until_ready(info)

    return call, float(flops)


def matmul_peak() -> float:
    """The machine's float32 matmul FLOP/s, measured on a 2048² product."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    seconds = time_calls(lambda: f(a).block_until_ready(), 20)
    return 2 * 2048**3 / seconds


def run_update(a: Args) -> dict:
    import eqxrl

    env = eqxrl.make_env(a.env_id)
    batch = random_batch(eqxrl.spec_from_env(env))
    results = {"peak_flops": matmul_peak()}
    for name in a.algorithms:
        fns, flops = {}, {}
        if "eqxrl" in a.only:
            fns["eqxrl"], fns["eqxrl_flat"], flops["eqxrl"] = update_eqxrl(name, env, batch, a)
            flops["eqxrl_flat"] = flops["eqxrl"]
        if "sbx" in a.only and name != "simbav2":
            fns["sbx"], flops["sbx"] = update_sbx(name, env, batch)
        seconds = time_interleaved(fns, a.calls)
        row = {k: {"seconds": v, "flops": flops[k]} for k, v in seconds.items()}
        results[name] = row
        print_update(name, row, results["peak_flops"])
    return results


def print_update(name: str, row: dict, peak: float) -> None:
    """One line per algorithm: times, the speed ratio, and FLOPs per update with the fraction
    of the matmul peak. eqxrl's cost analysis counts a conditional's branches (CrossQ's
    delayed actor update) on every update; sbx compiles one program per policy-delay offset,
    so its mean over them is the true FLOPs per update, and (the maths being the same) the
    fraction of peak uses it wherever sbx ran."""
    parts = [f"{k} {v['seconds'] * 1e3:.2f} ms/update" for k, v in row.items()]
    if {"eqxrl", "sbx"} <= set(row):
        parts.append(f"eqxrl ÷ sbx speed {row['sbx']['seconds'] / row['eqxrl']['seconds']:.2f}×"
                     f" (flat: {row['sbx']['seconds'] / row['eqxrl_flat']['seconds']:.2f}×)")
    for k, v in row.items():
        if v["flops"] and k != "eqxrl_flat":
            parts.append(f"{k} cost analysis {v['flops'] / 1e9:.2f} GFLOP")
    flops = row.get("sbx", row.get("eqxrl_flat", {})).get("flops", 0.0)
    if "eqxrl_flat" in row and flops:
        fraction = flops / row["eqxrl_flat"]["seconds"] / peak
        parts.append(f"eqxrl_flat at {100 * fraction:.0f}% of matmul peak "
                     f"({flops / 1e9:.2f} GFLOP per update)")
    print(f"{name:7s} " + "; ".join(parts), flush=True)


def train_eqxrl(name: str, a: Args) -> dict:
    import contextlib

    from eqxrl.run.logging import read_metrics

    keep = a.runs_dir is not None
    with (contextlib.nullcontext(a.runs_dir) if keep else tempfile.TemporaryDirectory()) as root:
        run_dir = os.path.join(root, name if keep else "run")
        module, config = eqxrl_config(name, dict(
            env_id=a.env_id, seed=a.seed, num_seeds=a.num_seeds, total_steps=a.steps,
            start_steps=a.learning_starts, eval_interval=a.eval_interval or a.steps,
            eval_episodes=a.eval_episodes, checkpoint_interval=a.steps, run_dir=run_dir,
            progress=False, tensorboard=False,
        ), a)
        start = time.perf_counter()
        summary = module.main(config)
        seconds = time.perf_counter() - start
        evals = read_metrics(os.path.join(run_dir, "eval.csv"))
    seeds = evals.get("seed", np.full(len(evals["step"]), a.seed))
    curves: dict[int, dict[int, float]] = {}  # seed -> step -> return
    for seed, step, ret in zip(seeds, evals["step"], evals["return_mean"], strict=True):
        curves.setdefault(int(seed), {})[int(step)] = float(ret)
    steps = sorted({step for c in curves.values() for step in c})
    returns = [agent["final_eval_return"] for agent in summary["agents"]] \
        if "agents" in summary else [summary["final_eval_return"]]
    return {"seconds": seconds, "steps_per_second": a.num_seeds * a.steps / seconds,
            "final_return": float(np.mean(returns)), "per_seed": returns,
            "curve": {k: float(np.mean([c[k] for c in curves.values() if k in c]))
                      for k in steps},
            "per_seed_curve": {seed: dict(sorted(c.items())) for seed, c in curves.items()},
            "run_dir": run_dir if keep else None}


def evaluate_sbx(model, env_id: str, episodes: int, seed: int) -> float:
    import gymnasium as gym

    env = gym.make(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 1000 + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def train_sbx(name: str, a: Args) -> dict:
    import gymnasium as gym
    from stable_baselines3.common.callbacks import BaseCallback

    curve: dict[int, float] = {}
    interval = a.eval_interval or a.steps

    class Curve(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % interval == 0 and self.num_timesteps < a.steps:
                curve[self.num_timesteps] = evaluate_sbx(self.model, a.env_id, a.eval_episodes,
                                                         a.seed)
            return True

    model = sbx_model(name, gym.make(a.env_id), a.seed, a.learning_starts)
    start = time.perf_counter()
    model.learn(a.steps, callback=Curve())
    final = evaluate_sbx(model, a.env_id, a.eval_episodes, a.seed)
    seconds = time.perf_counter() - start
    curve[a.steps] = final
    return {"seconds": seconds, "steps_per_second": a.steps / seconds, "final_return": final,
            "curve": curve}


def run_train(a: Args) -> dict:
    if a.runs_dir is not None and "eqxrl" in a.only:
        for name in a.algorithms:
            if os.path.exists(os.path.join(a.runs_dir, name)):
                raise FileExistsError(
                    f"--runs-dir: {os.path.join(a.runs_dir, name)} exists already; choose "
                    f"another --runs-dir, or move that run away.")
    results = {}
    for name in a.algorithms:
        row = {}
        if "eqxrl" in a.only:
            row["eqxrl"] = train_eqxrl(name, a)
        if "sbx" in a.only and name != "simbav2":
            row["sbx"] = train_sbx(name, a)
        results[name] = row
        parts = [f"{k} {v['steps_per_second']:.1f} env steps/s, final eval "
                 f"{v['final_return']:.1f}" for k, v in row.items()]
        if {"eqxrl", "sbx"} <= set(row):
            ratio = row["eqxrl"]["steps_per_second"] / row["sbx"]["steps_per_second"]
            parts.append(f"eqxrl ÷ sbx rate {ratio:.2f}×")
        print(f"{name:7s} " + "; ".join(parts), flush=True)
        for k, v in row.items():
            print(f"        {k} curve: " + ", ".join(f"{s}: {r:.1f}" for s, r in
                                                 v["curve"].items()), flush=True)
    return results


def main(a: Args) -> None:
    import jax

    print(f"{a.mode} on {a.env_id}, jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"{os.cpu_count()} CPU cores", flush=True)
    results = run_update(a) if a.mode == "update" else run_train(a)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": dataclasses.asdict(a), "results": results}, f, indent=1)


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Training loops that algorithm files wire their pure `init`, `update` and `act` into.

`train_online` steps a gymnasium env on the host and makes ONE compiled call per env step:
store the transition, run `utd` updates on sampled batches (a `lax.scan`), and choose the next
action. The replay buffer lives inside that call and is donated, so it is updated in place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import checkpoints
from .data import ReplayBuffer
from .envs import EnvSpec, make_env, spec_from_env
from .evaluation import evaluate, make_eval_envs
from .jit import jit
from .logging import Logger
from .types import Transition


@runtime_checkable
class OnlineConfig(Protocol):
    """The run settings `train_online` reads from an algorithm's `Config`."""

    env_id: str
    seed: int
    total_steps: int
    start_steps: int
    batch_size: int
    buffer_size: int
    utd: int
    eval_interval: int
    eval_episodes: int
    log_interval: int
    checkpoint_interval: int
    keep_checkpoints: int
    run_dir: str | None
    tensorboard: bool
    wandb: bool
    nan_check: bool
    progress: bool


class Carry(eqx.Module):
    """Everything the compiled step changes: algorithm state, replay buffer, PRNG key."""

    state: Any
    buffer: ReplayBuffer
    key: jax.Array


def _seed(*parts: int) -> int:
    """A 31-bit seed derived deterministically from integers (episode and eval seeds)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def _random_action(spec: EnvSpec, key: jax.Array) -> jax.Array:
    if spec.discrete:
        return jax.random.randint(key, (), 0, spec.num_actions)
    return jax.random.uniform(key, spec.action_shape, minval=-1.0, maxval=1.0)


def make_online_step(spec: EnvSpec, config: Any, update: Callable, act: Callable):
    """The compiled per-env-step functions `(random_step, train_step)`.

    Both take `(carry, transition, obs)`, with the fields of one `Transition` as a tuple of
    host arrays (it is built inside the compiled call): they store it, and return the new carry
    and the action for `obs`. `train_step` also runs `config.utd` updates and returns their
    metrics (averaged over the updates) and whether all of them are finite.
    """

    @jit(donate=(0,))
    def random_step(carry: Carry, transition: tuple, obs):
        key, k = jax.random.split(carry.key)
        buffer = carry.buffer.add(Transition(*transition))
        return Carry(carry.state, buffer, key), _random_action(spec, k)

    @jit(donate=(0,))
    def train_step(carry: Carry, transition: tuple, obs):
        key, k_update, k_act = jax.random.split(carry.key, 3)
        buffer = carry.buffer.add(Transition(*transition))

        def one_update(state, k):
            k_sample, k_loss = jax.random.split(k)
            return update(state, buffer.sample(k_sample, config.batch_size), k_loss, config)

        state, metrics = jax.lax.scan(one_update, carry.state, jax.random.split(k_update, config.utd))
        metrics = {k: jnp.mean(v) for k, v in metrics.items()}
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        batch_obs = jax.tree.map(lambda x: x[None], obs)
        action = act(state, batch_obs, k_act)[0]
        return Carry(state, buffer, key), action, metrics, finite

    return random_step, train_step


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: leave signals alone
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def default_run_dir(algo: str, config: Any) -> str:
    """`runs/<algo>__<env>__s<seed>__<time>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{algo}__{config.env_id}__s{config.seed}__{stamp}")


def train_online(
    config: OnlineConfig,
    *,
    init: Callable,
    update: Callable,
    act: Callable,
    algo: str,
    resume: bool = False,
) -> dict[str, Any]:
    """Train an off-policy algorithm online in `config.env_id`; return a summary dict.

    Writes `<run_dir>/` with `config.json`, TensorBoard events, `train.csv`, `eval.csv`,
    `checkpoints/` and `summary.json`. With `resume=True`, continues from the newest
    checkpoint in `config.run_dir`; on CPU the result equals an uninterrupted run.
    """
    run_dir = config.run_dir or default_run_dir(algo, config)
    config = dataclasses.replace(config, run_dir=run_dir)  # saved with the run, for --resume
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    env = make_env(config.env_id)
    spec = spec_from_env(env)
    eval_envs = make_eval_envs(config.env_id, config.eval_episodes)
    random_step, train_step = make_online_step(spec, config, update, act)
    policy = jit(lambda state, obs: act(state, obs, jax.random.key(0), deterministic=True))

    def fresh_carry(key):
        k_init, k_loop = jax.random.split(key)
        buffer = ReplayBuffer.create(spec.example_transition(), config.buffer_size)
        carry = Carry(init(k_init, spec, config), buffer, k_loop)
        # A state may share arrays between leaves (a target network that starts as a copy of
        # the online one); donation needs every buffer once, so give each leaf its own.
        return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, carry)

    key = jax.random.key(config.seed)
    host = {"step": 0, "episode": 0, "episode_actions": [], "episodes_done": 0,
            "episode_returns": [], "last_eval": None, "best_eval": None, "wall_time": 0.0}
    if resume:
        found = checkpoints.list_checkpoints(ckpt_dir)
        if not found:
            raise FileNotFoundError(f"--resume {run_dir!r}: no checkpoint in {ckpt_dir!r}.")
        step, path = found[-1]
        like = {"carry": eqx.filter_eval_shape(fresh_carry, key),
                "action": eqx.filter_eval_shape(_random_action, spec, key)}
        tree, meta = checkpoints.restore(path, like, config=config)
        carry, action, host = tree["carry"], tree["action"], meta
        obs, _ = env.reset(seed=_seed(config.seed, host["episode"]))
        for a in host["episode_actions"]:  # replay the unfinished episode: envs are seeded
            obs, *_ = env.step(np.asarray(a, dtype=np.asarray(action).dtype))
    else:
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(checkpoints.config_dict(config), f, indent=2)
        carry = fresh_carry(key)
        obs, _ = env.reset(seed=_seed(config.seed, 0))
        key, k = jax.random.split(carry.key)
        carry = Carry(carry.state, carry.buffer, key)
        action = _random_action(spec, k)

    logger = Logger(run_dir, tensorboard=config.tensorboard, wandb=config.wandb,
                    config=checkpoints.config_dict(config), resume_step=host["step"] if resume else None)

    def save():
        tree = {"carry": carry, "action": action}
        checkpoints.save(checkpoints.checkpoint_path(ckpt_dir, host["step"]), tree,
                         config=config, meta=host)
        checkpoints.prune(ckpt_dir, config.keep_checkpoints)

    def run_eval():
        stats = evaluate(lambda o: policy(carry.state, o), eval_envs,
                         seed=_seed(config.seed, 1, host["step"]))
        logger.log(stats, host["step"], group="eval")
        host["last_eval"] = stats["return_mean"]
        host["best_eval"] = max(host["best_eval"] or -np.inf, stats["return_mean"])
        return stats

    session_start, start_step, wall_before = time.perf_counter(), host["step"], host["wall_time"]
    bar = tqdm(total=config.total_steps, initial=host["step"], unit="step", dynamic_ncols=True,
               disable=not config.progress, desc=f"{algo} {config.env_id}")
    stopped_early = False
    try:
        with _StopFlag() as stop:
            while host["step"] < config.total_steps:
                if stop.requested:
                    stopped_early = True
                    break
                action_np = np.asarray(action)
                next_obs, reward, terminated, truncated, info = env.step(action_np)
                transition = (obs, action_np, np.float32(reward), next_obs,
                              np.bool_(terminated), np.bool_(truncated))
                episode_actions = host["episode_actions"] + [action_np.tolist()]
                episode = host["episode"]
                episode_returns = host["episode_returns"]
                if terminated or truncated:
                    episode_returns = episode_returns + [float(info["episode"]["r"])]
                    episode += 1
                    episode_actions = []
                    next_obs, _ = env.reset(seed=_seed(config.seed, episode))
                step = host["step"] + 1
                if step < config.start_steps:
                    carry, action = random_step(carry, transition, next_obs)
                    metrics = None
                else:
                    carry, action, metrics, finite = train_step(carry, transition, next_obs)
                    if config.nan_check and not bool(finite):
                        bad = [k for k, v in metrics.items() if not np.isfinite(np.asarray(v))]
                        raise FloatingPointError(
                            f"Non-finite {bad} at env step {step} (nan_check is on). The last "
                            f"checkpoint in {ckpt_dir!r} holds the state before it."
                        )
                obs = next_obs
                host.update(step=step, episode=episode, episode_actions=episode_actions,
                            episode_returns=episode_returns,
                            episodes_done=host["episodes_done"] + (episode - host["episode"]))
                bar.update(1)
                if metrics is not None and step % config.log_interval == 0:
                    row = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    if host["episode_returns"]:
                        row["episode_return"] = float(np.mean(host["episode_returns"]))
                        host["episode_returns"] = []
                    row["steps_per_second"] = (step - start_step) / (time.perf_counter() - session_start)
                    logger.log(row, step)
                if step % config.eval_interval == 0 or step == config.total_steps:
                    stats = run_eval()
                    bar.set_postfix(eval_return=f"{stats['return_mean']:.1f}")
                    if config.progress:
                        tqdm.write(f"step {step}: eval return {stats['return_mean']:.1f} "
                                   f"± {stats['return_std']:.1f} over {config.eval_episodes} episodes")
                host["wall_time"] = wall_before + time.perf_counter() - session_start
                if step % config.checkpoint_interval == 0 or step == config.total_steps:
                    save()
            if stopped_early:
                save()
    finally:
        bar.close()
        logger.close()
        env.close()
        eval_envs.close()
    elapsed = time.perf_counter() - session_start
    summary = {
        "algo": algo, "env_id": config.env_id, "seed": config.seed, "run_dir": run_dir,
        "env_steps": host["step"], "episodes": host["episodes_done"],
        "final_eval_return": host["last_eval"], "best_eval_return": host["best_eval"],
        "wall_time_s": round(host["wall_time"], 1),
        "steps_per_second": round((host["step"] - start_step) / max(elapsed, 1e-9), 1),
        "interrupted": stopped_early,
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """Print a short final summary of a run."""
    state = "interrupted (resume with --resume " + summary["run_dir"] + ")" if summary["interrupted"] else "done"
    final = summary["final_eval_return"]
    best = summary["best_eval_return"]
    print(
        f"\n{summary['algo']} on {summary['env_id']} (seed {summary['seed']}): {state}\n"
        f"  env steps        {summary['env_steps']} in {summary['wall_time_s']} s "
        f"({summary['steps_per_second']} steps/s this session)\n"
        f"  final eval       {final if final is None else round(final, 1)}\n"
        f"  best eval        {best if best is None else round(best, 1)}\n"
        f"  run folder       {summary['run_dir']} (tensorboard --logdir {summary['run_dir']})"
    )

"""Training loops that algorithm files wire their pure `init`, `update` and `act` into.

`train_online` steps a gymnasium env on the host and makes two compiled calls per env step:
one stores the transition in the replay buffer (donated, so updated in place), one runs `utd`
updates on sampled batches (a `lax.scan`) and chooses the next action. `train_offline` keeps
the dataset on the device and runs a `lax.scan` of updates up to the next log, evaluation or
checkpoint boundary per call.
"""

from __future__ import annotations

import dataclasses
import functools
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
from .data import Dataset, ReplayBuffer
from .envs import EnvSpec, make_env, spec_from_env
from .evaluation import evaluate, make_eval_envs
from .jit import _merge, _split, jit
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


class _Flat:
    """A PyTree held as its dynamic leaves between compiled calls, with the way back.

    Flattening an Equinox state and rebuilding it are Python work (~0.1-0.2 ms each for SAC's
    state); the online loop makes two compiled calls per env step, so it keeps the carry flat
    and rebuilds the tree only to evaluate or checkpoint. The split is `eqxrl.jit`'s: arrays
    are dynamic, everything else stays in the static part.
    """

    def __init__(self, example: Any):
        self.static = _split(example)[1]

    def flatten(self, tree: Any) -> list:
        dynamic, (treedef, _) = _split(tree)
        if treedef != self.static[0]:
            raise ValueError(f"Structure changed: expected {self.static[0]}, got {treedef}.")
        return dynamic

    def rebuild(self, dynamic: list) -> Any:
        return _merge(dynamic, self.static)


class _FlatCarry:
    """A `Carry` as `(state-and-key leaves, buffer leaves)`: two parts, donated separately."""

    def __init__(self, carry: Carry):
        self.state_key = _Flat((carry.state, carry.key))
        self.buffer = _Flat(carry.buffer)

    def flatten(self, carry: Carry) -> tuple[list, list]:
        return self.state_key.flatten((carry.state, carry.key)), self.buffer.flatten(carry.buffer)

    def rebuild(self, flat: tuple[list, list]) -> Carry:
        state, key = self.state_key.rebuild(flat[0])
        return Carry(state, self.buffer.rebuild(flat[1]), key)


def make_online_step(spec: EnvSpec, config: Any, update: Callable, act: Callable, carry: Carry):
    """The per-env-step functions `(random_step, train_step, flat)`, built on compiled calls.

    Both take `(flat_carry, transition, obs)`, where `flat_carry = flat.flatten(carry)` (and
    `flat.rebuild` gives the `Carry` back) and `transition` has the fields of one `Transition`
    as a tuple of host arrays (built inside the compiled call). They store it, and return the
    new flat carry and the action for `obs`. `train_step` also runs `config.utd` updates and
    returns their metrics (averaged over the updates) and whether all of them are finite.
    `carry` is an example of the carry (its structure).
    """
    flat = _FlatCarry(carry)

    def store_in(buffer_arrays: list, transition: tuple) -> list:
        new = flat.buffer.rebuild(buffer_arrays).add(Transition(*transition))
        return flat.buffer.flatten(new)

    @functools.partial(jax.jit, donate_argnums=0)
    def random_step(f: tuple[list, list], transition: tuple, obs):
        state, key = flat.state_key.rebuild(f[0])
        key, k = jax.random.split(key)
        buffer_arrays = store_in(f[1], transition)
        return (flat.state_key.flatten((state, key)), buffer_arrays), _random_action(spec, k)

    # Storing and learning are two compiled calls on purpose: in one call that both updates
    # the donated buffer and trains on samples from it, XLA copied the whole buffer every
    # step (+100-130 ms for a 1M-row HalfCheetah buffer on CPU; a store alone takes ~0.2 ms).
    store = jax.jit(store_in, donate_argnums=0)

    @functools.partial(jax.jit, donate_argnums=0)
    def learn(sk_arrays: list, buffer_arrays: list, obs):
        state, key = flat.state_key.rebuild(sk_arrays)
        data = flat.buffer.rebuild(buffer_arrays)
        key, k_update, k_act = jax.random.split(key, 3)

        def one_update(state, k):
            k_sample, k_loss = jax.random.split(k)
            return update(state, data.sample(k_sample, config.batch_size), k_loss, config)

        state, metrics = jax.lax.scan(one_update, state, jax.random.split(k_update, config.utd))
        metrics = {k: jnp.mean(v) for k, v in metrics.items()}
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        action = act(state, jax.tree.map(lambda x: x[None], obs), k_act)[0]
        return flat.state_key.flatten((state, key)), action, metrics, finite

    def train_step(f: tuple[list, list], transition: tuple, obs):
        buffer_arrays = store(f[1], transition)
        sk_arrays, action, metrics, finite = learn(f[0], buffer_arrays, obs)
        return (sk_arrays, buffer_arrays), action, metrics, finite

    return random_step, train_step, flat


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


def _fresh_copy(tree: Any) -> Any:
    # A state may share arrays between leaves (a target network that starts as a copy of the
    # online one); donation needs every buffer once, so give each leaf its own. The loops call
    # this inside one compiled call, where the copies cost nothing.
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, tree)


class _Run:
    """What both loops share: the run folder, logs, evaluation, checkpoints and summary.

    `host` is the JSON-able bookkeeping saved as checkpoint metadata; `step` counts env steps
    (online) or updates (offline).
    """

    def __init__(
        self,
        config: Any,
        algo: str,
        act: Callable,
        resume: bool,
        total: int,
        unit: str,
        host: dict[str, Any],
        reference: tuple[float, float] | None = None,
    ):
        run_dir = config.run_dir or default_run_dir(algo, config)
        self.config = dataclasses.replace(config, run_dir=run_dir)  # saved, for --resume
        self.algo, self.resume, self.reference = algo, resume, reference
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        os.makedirs(self.ckpt_dir, exist_ok=True)
        self.host = {
            "step": 0,
            "last_eval": None,
            "best_eval": None,
            "last_score": None,
            "wall_time": 0.0,
        } | host
        self.eval_envs = make_eval_envs(config.env_id, config.eval_episodes)
        self.policy = jit(lambda state, obs: act(state, obs, jax.random.key(0), deterministic=True))
        self.total, self.unit = total, unit
        self.logger: Logger | None = None
        self.bar: Any = None

    def restore(self, like: Any) -> Any:
        """Load the newest checkpoint into `like`; its metadata becomes `host`."""
        found = checkpoints.list_checkpoints(self.ckpt_dir)
        if not found:
            raise FileNotFoundError(
                f"--resume {self.config.run_dir!r}: no checkpoint in {self.ckpt_dir!r}."
            )
        tree, self.host = checkpoints.restore(found[-1][1], like, config=self.config)
        return tree

    def start(self) -> None:
        """Write config.json (new runs), open the logger and the progress bar."""
        config = self.config
        if not self.resume:
            with open(os.path.join(config.run_dir, "config.json"), "w") as f:
                json.dump(checkpoints.config_dict(config), f, indent=2)
        self.logger = Logger(
            config.run_dir,
            tensorboard=config.tensorboard,
            wandb=config.wandb,
            config=checkpoints.config_dict(config),
            resume_step=self.host["step"] if self.resume else None,
        )
        self.session_start = time.perf_counter()
        self.start_step, self.wall_before = self.host["step"], self.host["wall_time"]
        self.bar = tqdm(
            total=self.total,
            initial=self.host["step"],
            unit=self.unit,
            dynamic_ncols=True,
            mininterval=1.0,
            disable=not config.progress,
            desc=f"{self.algo} {config.env_id}",
        )

    def rate(self) -> float:
        """Steps (or updates) per second in this session."""
        return (self.host["step"] - self.start_step) / max(
            time.perf_counter() - self.session_start, 1e-9
        )

    def check_finite(self, finite: jax.Array, metrics: dict[str, Any]) -> None:
        """With nan_check on, stop with an error that names the metric and the step."""
        if self.config.nan_check and not bool(finite):
            bad = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))]
            raise FloatingPointError(
                f"Non-finite {bad} at {self.unit} {self.host['step']} (nan_check is on). The "
                f"last checkpoint in {self.ckpt_dir!r} holds the state before it."
            )

    def evaluate(self, state: Any) -> dict[str, float]:
        """Evaluate the deterministic policy, log it and show it."""
        step = self.host["step"]
        stats = evaluate(
            lambda o: self.policy(state, o),
            self.eval_envs,
            seed=_seed(self.config.seed, 1, step),
            reference=self.reference,
        )
        self.logger.log(stats, step, group="eval")
        self.host["last_eval"] = stats["return_mean"]
        self.host["last_score"] = stats.get("normalized_score_mean")
        self.host["best_eval"] = max(self.host["best_eval"] or -np.inf, stats["return_mean"])
        self.bar.set_postfix(eval_return=f"{stats['return_mean']:.1f}")
        if self.config.progress:
            score = (
                f", normalized score {stats['normalized_score_mean']:.1f}"
                if "normalized_score_mean" in stats
                else ""
            )
            tqdm.write(
                f"{self.unit} {step}: eval return {stats['return_mean']:.1f} ± "
                f"{stats['return_std']:.1f} over {self.config.eval_episodes} episodes{score}"
            )
        return stats

    def save(self, tree: Any) -> None:
        """Checkpoint `tree` with `host` as metadata, atomically; keep the newest few."""
        self.host["wall_time"] = self.wall_before + time.perf_counter() - self.session_start
        checkpoints.save(
            checkpoints.checkpoint_path(self.ckpt_dir, self.host["step"]),
            tree,
            config=self.config,
            meta=self.host,
        )
        checkpoints.prune(self.ckpt_dir, self.config.keep_checkpoints)

    def close(self, interrupted: bool, **extra: Any) -> dict[str, Any]:
        """Close every sink and write `summary.json`; return the summary."""
        if self.bar is not None:
            self.bar.close()
        if self.logger is not None:
            self.logger.close()
        self.eval_envs.close()
        config = self.config
        summary = {
            "algo": self.algo,
            "env_id": config.env_id,
            "seed": config.seed,
            "run_dir": config.run_dir,
            "unit": self.unit,
            "steps": self.host["step"],
            "final_eval_return": self.host["last_eval"],
            "final_normalized_score": self.host["last_score"],
            "best_eval_return": self.host["best_eval"],
            "wall_time_s": round(self.wall_before + time.perf_counter() - self.session_start, 1),
            "per_second": round(self.rate(), 1),
            "interrupted": interrupted,
        } | extra
        with open(os.path.join(config.run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        return summary


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
    run = _Run(
        config,
        algo,
        act,
        resume,
        config.total_steps,
        "step",
        {"episode": 0, "episode_actions": [], "episodes_done": 0, "episode_returns": []},
    )
    config = run.config
    env = make_env(config.env_id)
    spec = spec_from_env(env)

    def fresh_carry(key):
        k_init, k_loop = jax.random.split(key)
        buffer = ReplayBuffer.create(spec.example_transition(), config.buffer_size)
        return _fresh_copy(Carry(init(k_init, spec, config), buffer, k_loop))

    key = jax.random.key(config.seed)
    if resume:
        tree = run.restore(
            {
                "carry": eqx.filter_eval_shape(fresh_carry, key),
                "action": eqx.filter_eval_shape(_random_action, spec, key),
            }
        )
        carry, action = tree["carry"], tree["action"]
        obs, _ = env.reset(seed=_seed(config.seed, run.host["episode"]))
        for a in run.host["episode_actions"]:  # replay the unfinished episode: envs are seeded
            obs, *_ = env.step(np.asarray(a, dtype=np.asarray(action).dtype))
    else:
        # One compiled call: run eagerly, the network constructors compile ~50 tiny programs
        # (each init distribution per weight shape), which took ~9 s of a run's start-up.
        carry = jit(fresh_carry)(key)
        obs, _ = env.reset(seed=_seed(config.seed, 0))
        key, k = jax.random.split(carry.key)
        carry = Carry(carry.state, carry.buffer, key)
        action = _random_action(spec, k)
    random_step, train_step, flat = make_online_step(spec, config, update, act, carry)
    carry_arrays = flat.flatten(carry)  # donated from here on: `carry` must not be used
    del carry

    host = run.host
    interrupted = False
    try:
        run.start()
        with _StopFlag() as stop:
            while host["step"] < config.total_steps:
                if stop.requested:
                    interrupted = True
                    break
                action_np = np.asarray(action)
                next_obs, reward, terminated, truncated, info = env.step(action_np)
                transition = (
                    obs,
                    action_np,
                    np.float32(reward),
                    next_obs,
                    np.bool_(terminated),
                    np.bool_(truncated),
                )
                episode_actions = host["episode_actions"] + [action_np.tolist()]
                episode, episode_returns = host["episode"], host["episode_returns"]
                if terminated or truncated:
                    episode_returns = episode_returns + [float(info["episode"]["r"])]
                    episode += 1
                    episode_actions = []
                    next_obs, _ = env.reset(seed=_seed(config.seed, episode))
                step = host["step"] + 1
                metrics = None
                if step < config.start_steps:
                    carry_arrays, action = random_step(carry_arrays, transition, next_obs)
                else:
                    carry_arrays, action, metrics, finite = train_step(
                        carry_arrays, transition, next_obs
                    )
                obs = next_obs
                host.update(
                    step=step,
                    episode=episode,
                    episode_actions=episode_actions,
                    episode_returns=episode_returns,
                    episodes_done=host["episodes_done"] + (episode - host["episode"]),
                )
                if metrics is not None:
                    run.check_finite(finite, metrics)
                run.bar.update(1)
                if metrics is not None and step % config.log_interval == 0:
                    row = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    if host["episode_returns"]:
                        row["episode_return"] = float(np.mean(host["episode_returns"]))
                        host["episode_returns"] = []
                    row["steps_per_second"] = run.rate()
                    run.logger.log(row, step)
                if step % config.eval_interval == 0 or step == config.total_steps:
                    run.evaluate(flat.rebuild(carry_arrays).state)
                if step % config.checkpoint_interval == 0 or step == config.total_steps:
                    run.save({"carry": flat.rebuild(carry_arrays), "action": action})
            if interrupted:
                run.save({"carry": flat.rebuild(carry_arrays), "action": action})
    finally:
        env.close()
        summary = run.close(interrupted, episodes=host["episodes_done"])
    return summary


@runtime_checkable
class OfflineConfig(Protocol):
    """The run settings `train_offline` reads from an algorithm's `Config`."""

    env_id: str
    seed: int
    total_updates: int
    batch_size: int
    updates_per_call: int
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


class OfflineCarry(eqx.Module):
    """What the offline loop's compiled call changes: algorithm state and PRNG key."""

    state: Any
    key: jax.Array


def train_offline(
    config: OfflineConfig,
    dataset: Dataset,
    *,
    init: Callable,
    update: Callable,
    act: Callable,
    algo: str,
    resume: bool = False,
    reference: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Train on a fixed `dataset` of Transitions, evaluating in `config.env_id`.

    The dataset is put on the device once; each compiled call runs up to
    `config.updates_per_call` updates as a `lax.scan`, sampling batches inside. `reference`
    = (random return, expert return) adds D4RL-style normalised scores to evaluations. Run
    folder, logging, checkpoints and exact resume are as in `train_online`.
    """
    run = _Run(config, algo, act, resume, config.total_updates, "update", {}, reference)
    config = run.config
    env = make_env(config.env_id)
    spec = spec_from_env(env)
    env.close()
    spec.check_batch(dataset.data, name="dataset")  # obs/action layout must match the env
    data = jax.device_put(dataset)

    @jit(donate=(0,))
    def train_chunk(carry: OfflineCarry, data: Dataset, n: int):
        def one_update(state, k):
            k_sample, k_loss = jax.random.split(k)
            return update(state, data.sample(k_sample, config.batch_size), k_loss, config)

        key, k = jax.random.split(carry.key)
        state, metrics = jax.lax.scan(one_update, carry.state, jax.random.split(k, n))
        metrics = {name: jnp.mean(v) for name, v in metrics.items()}
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        return OfflineCarry(state, key), metrics, finite

    def fresh_carry(key):
        k_init, k_loop = jax.random.split(key)
        return _fresh_copy(OfflineCarry(init(k_init, spec, config), k_loop))

    key = jax.random.key(config.seed)
    if resume:
        carry = run.restore({"carry": eqx.filter_eval_shape(fresh_carry, key)})["carry"]
    else:
        carry = jit(fresh_carry)(key)  # one compiled call, as in train_online
    host = run.host
    interrupted = False
    intervals = (config.log_interval, config.eval_interval, config.checkpoint_interval)
    try:
        run.start()
        with _StopFlag() as stop:
            while host["step"] < config.total_updates:
                if stop.requested:
                    interrupted = True
                    break
                step = host["step"]
                # Run up to the next log/eval/checkpoint boundary: a few distinct chunk
                # lengths at most, each compiled once.
                n = min(
                    [config.updates_per_call, config.total_updates - step]
                    + [i - step % i for i in intervals]
                )
                carry, metrics, finite = train_chunk(carry, data, n)
                host["step"] = step = step + n
                run.check_finite(finite, metrics)
                run.bar.update(n)
                if step % config.log_interval == 0:
                    row = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    run.logger.log(row | {"updates_per_second": run.rate()}, step)
                if step % config.eval_interval == 0 or step == config.total_updates:
                    run.evaluate(carry.state)
                if step % config.checkpoint_interval == 0 or step == config.total_updates:
                    run.save({"carry": carry})
            if interrupted:
                run.save({"carry": carry})
    finally:
        summary = run.close(interrupted)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """Print a short final summary of a run."""
    state = (
        "interrupted (continue with --resume " + summary["run_dir"] + ")"
        if summary["interrupted"]
        else "done"
    )
    rounded = {
        k: (None if summary[k] is None else round(summary[k], 1))
        for k in ("final_eval_return", "best_eval_return", "final_normalized_score")
    }
    score = (
        ""
        if rounded["final_normalized_score"] is None
        else f"\n  normalized score {rounded['final_normalized_score']}"
    )
    print(
        f"\n{summary['algo']} on {summary['env_id']} (seed {summary['seed']}): {state}\n"
        f"  {summary['unit'] + 's':<16} {summary['steps']} in {summary['wall_time_s']} s "
        f"({summary['per_second']} {summary['unit']}s/s this session)\n"
        f"  final eval       {rounded['final_eval_return']}{score}\n"
        f"  best eval        {rounded['best_eval_return']}\n"
        f"  run folder       {summary['run_dir']} (tensorboard --logdir {summary['run_dir']})"
    )

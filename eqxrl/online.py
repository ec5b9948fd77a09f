"""The online off-policy loop: a gymnasium env stepped on the host, a replay buffer on the device.

Per env step the loop makes two compiled calls: one stores the transition in the donated
replay buffer (updated in place), one runs `utd` updates on sampled batches (a `lax.scan`)
and chooses the next action with `act`. Before `start_steps` the action is uniform random.
Between the calls the carry (state, key, buffer) is held as flat lists of arrays
(`eqxrl.jit.split`): rebuilding SAC's ~80-leaf state in Python twice per step cost ~0.5 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .data import ReplayBuffer
from .envs import EnvSpec, derived_seed, make_env, spec_from_env
from .harness import Run, run_loop
from .jit import jit, merge, split
from .record import resolve_resume
from .types import Transition


def random_action(spec: EnvSpec, key: jax.Array) -> jax.Array:
    """A uniformly random action of `spec` (in [-1, 1] for continuous actions)."""
    if spec.discrete:
        return jax.random.randint(key, (), 0, spec.num_actions)
    return jax.random.uniform(key, spec.action_shape, minval=-1.0, maxval=1.0)


def filled_rows(buffer: ReplayBuffer) -> dict[str, Any]:
    """The filled rows of a replay buffer and its counters: what a checkpoint stores."""
    rows = int(buffer.size)
    data = jax.tree.map(lambda x: x[:rows], buffer.data)
    return {"data": data, "position": buffer.position, "size": buffer.size}


def filled_rows_like(example: Any, rows: int) -> dict[str, Any]:
    """The template of `filled_rows`' output for `rows` rows laid out like `example`."""
    counter = jax.ShapeDtypeStruct((), jnp.int32)
    data = jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows, *x.shape), x.dtype), example)
    return {"data": data, "position": counter, "size": counter}


def from_filled_rows(saved: dict[str, Any], example: Any, capacity: int) -> ReplayBuffer:
    """A replay buffer of `capacity` rows from `filled_rows`' output (the rest are zeros)."""
    empty = ReplayBuffer.create(example, capacity)
    data = jax.tree.map(lambda buf, x: buf.at[: x.shape[0]].set(x), empty.data, saved["data"])
    return ReplayBuffer(data, saved["position"], saved["size"], capacity)


def fresh_copy(tree: Any) -> Any:
    """Give every array leaf its own buffer (donation needs each buffer once, and a target
    network starts as the online network). Inside a compiled call the copies cost nothing."""
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, tree)


class Flat:
    """A PyTree held as its list of arrays between compiled calls, with the way back."""

    def __init__(self, example: Any):
        self.static = split(example)[1]

    def flatten(self, tree: Any) -> list:
        dynamic, static = split(tree)
        if static[0] != self.static[0]:
            raise ValueError(f"Structure changed: expected {self.static[0]}, got {static[0]}.")
        return dynamic

    def rebuild(self, dynamic: list) -> Any:
        return merge(dynamic, self.static)


def make_step_functions(spec: EnvSpec, config: Any, algorithm: ModuleType, state_key, buffer):
    """`(random_step, train_step)` on flat `(state-and-key arrays, buffer arrays)` carries.

    Both take the flat carry, one transition (a tuple of host arrays, the fields of
    `Transition`) and the next observation; they store the transition and return the new flat
    carry and the next action. `train_step` also runs `config.run.utd` updates and returns their
    metrics (averaged over the updates) and whether all of them are finite.
    """
    sk, buf = Flat(state_key), Flat(buffer)
    batch_size, utd = config.run.batch_size, config.run.utd

    def store_in(buffer_arrays: list, transition: tuple) -> list:
        return buf.flatten(buf.rebuild(buffer_arrays).add(Transition(*transition)))

    @functools.partial(jax.jit, donate_argnums=0)
    def random_step(flat: tuple[list, list], transition: tuple, obs):
        state, key = sk.rebuild(flat[0])
        key, k = jax.random.split(key)
        return (sk.flatten((state, key)), store_in(flat[1], transition)), random_action(spec, k)

    # Storing and learning are two compiled calls on purpose: in one call that both updates
    # the donated buffer and trains on samples from it, XLA copied the whole buffer every
    # step (+100-130 ms for a 1M-row HalfCheetah buffer on CPU; a store alone takes ~0.2 ms).
    store = jax.jit(store_in, donate_argnums=0)

    @functools.partial(jax.jit, donate_argnums=0)
    def learn(sk_arrays: list, buffer_arrays: list, obs):
        state, key = sk.rebuild(sk_arrays)
        data = buf.rebuild(buffer_arrays)
        key, k_update, k_act = jax.random.split(key, 3)

        def one_update(state, k):
            k_sample, k_loss = jax.random.split(k)
            return algorithm.update(state, data.sample(k_sample, batch_size), k_loss, config)

        state, metrics = jax.lax.scan(one_update, state, jax.random.split(k_update, utd))
        metrics = {k: jnp.mean(v) for k, v in metrics.items()}
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        action = algorithm.act(state, jax.tree.map(lambda x: x[None], obs), k_act)[0]
        return sk.flatten((state, key)), action, metrics, finite

    def train_step(flat: tuple[list, list], transition: tuple, obs):
        buffer_arrays = store(flat[1], transition)
        sk_arrays, action, metrics, finite = learn(flat[0], buffer_arrays, obs)
        return (sk_arrays, buffer_arrays), action, metrics, finite

    return random_step, train_step, (sk, buf)


def train_online(
    config: Any, algorithm: ModuleType, *, make_env: Callable[[str], Any] = make_env
) -> dict[str, Any]:
    """Train `algorithm` (a module with `init`, `update`, `act`) online; return the summary.

    `config.run` is an `OnlineRun`. With `config.run.resume`, the run continues from the
    newest checkpoint of that folder; on CPU the result equals an uninterrupted run (the
    unfinished episode is replayed from its seed). `make_env(env_id)` builds the training env
    (for example to add a wrapper); evaluation envs are always `eqxrl.make_env`'s.
    """
    config = resolve_resume(config)
    run = Run(config, algorithm, "step",
              {"episode": 0, "episode_actions": [], "episodes_done": 0, "episode_returns": []})
    config, settings = run.config, run.config.run
    env = make_env(settings.env_id)
    try:
        spec = spec_from_env(env)
        example = spec.example_transition()

        def fresh(key):
            k_init, k_loop, k_action = jax.random.split(key, 3)
            state = algorithm.init(k_init, spec, config)
            buffer = ReplayBuffer.create(example, settings.buffer_size)
            return fresh_copy((state, k_loop)), buffer, random_action(spec, k_action)

        key = jax.random.key(settings.seed)
        if run.resume:
            (state_like, key_like), _, action = eqx.filter_eval_shape(fresh, key)

            def like(meta):
                return {"state": state_like, "key": key_like, "action": action,
                        "buffer": filled_rows_like(example, meta["buffer_rows"])}

            tree = run.restore(like)
            state_key = (tree["state"], tree["key"])
            buffer = jit(from_filled_rows)(tree["buffer"], example, settings.buffer_size)
            action = tree["action"]
            obs, _ = env.reset(seed=derived_seed(settings.seed, run.host["episode"]))
            for a in run.host["episode_actions"]:  # the unfinished episode, replayed
                obs, *_ = env.step(np.asarray(a, dtype=np.asarray(action).dtype))
        else:
            # One compiled call: eagerly, the network constructors compile ~50 tiny programs.
            state_key, buffer, action = jit(fresh)(key)
            obs, _ = env.reset(seed=derived_seed(settings.seed, 0))
        random_step, train_step, (sk, buf) = make_step_functions(
            spec, config, algorithm, state_key, buffer
        )
        flat = (sk.flatten(state_key), buf.flatten(buffer))  # donated from here on
        del state_key, buffer
    except BaseException:
        env.close()
        raise

    host = run.host

    def checkpoint():
        state, key = sk.rebuild(flat[0])
        buffer = buf.rebuild(flat[1])
        host["buffer_rows"] = int(buffer.size)
        run.save({"state": state, "key": key, "buffer": filled_rows(buffer), "action": action})

    def body(stop) -> str:
        nonlocal flat, action, obs
        while host["step"] < run.total:
            if stop.requested:
                checkpoint()
                return "interrupted"
            action_np = np.asarray(action)
            next_obs, reward, terminated, truncated, info = env.step(action_np)
            transition = (obs, action_np, np.float32(reward), next_obs, np.bool_(terminated),
                          np.bool_(truncated))
            episode_actions = host["episode_actions"] + [action_np.tolist()]
            episode, returns = host["episode"], host["episode_returns"]
            if terminated or truncated:
                returns = returns + [float(info["episode"]["r"])]
                episode, episode_actions = episode + 1, []
                next_obs, _ = env.reset(seed=derived_seed(settings.seed, episode))
            step = host["step"] + 1
            metrics = None
            if step < settings.start_steps:
                flat, action = random_step(flat, transition, next_obs)
            else:
                flat, action, metrics, finite = train_step(flat, transition, next_obs)
            obs = next_obs
            host.update(step=step, episode=episode, episode_actions=episode_actions,
                        episode_returns=returns,
                        episodes_done=host["episodes_done"] + (episode - host["episode"]))
            run.extra["episodes"] = host["episodes_done"]
            if metrics is not None:
                run.check_finite(finite, metrics)
            run.bar.update(1)
            if metrics is not None and step % settings.log_interval == 0:
                extra = {}
                if host["episode_returns"]:
                    extra["episode_return"] = float(np.mean(host["episode_returns"]))
                    host["episode_returns"] = []
                run.log(metrics, **extra)
            if run.due(step, settings.eval_interval):
                run.evaluate(sk.rebuild(flat[0])[0])
            if run.due(step, settings.checkpoint_interval):
                checkpoint()
        return "done"

    try:
        return run_loop(run, algorithm.act, body)
    finally:
        env.close()

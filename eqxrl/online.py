"""The online off-policy loop: a gymnasium env stepped on the host, a replay buffer on the device.

Per env step the loop makes three compiled calls: one stores the transition in the donated
replay buffer (updated in place), one chooses the next action with `act`, and one runs `utd`
updates on sampled batches (a `lax.scan`, or written out for image observations); with
`update_every` k > 1 the updates run on every k-th env step only (fractional update-to-data
ratios). The action is chosen before the updates, so the host steps the envs while the device
learns; it is one env step's updates behind. Before `start_steps` the action is uniform
random.

Two optional hooks of an algorithm module change what the loops (this one and
`eqxrl.train_compiled`) do: an `act` with an `env_step` parameter is given the number of env
steps taken so far (exploration schedules such as DQN's ε follow env steps, not updates), and
`sample_batch(buffer, key, batch_size, config)` replaces `buffer.sample` (DQN draws n-step
windows with `ReplayBuffer.sample_n_step`).
Each agent (one per seed and grid point, `eqxrl.agents`) has its own env; the compiled calls
are vmapped over the agents. Between the calls the carry (state, key, buffer) is held as
flat lists of arrays (`eqxrl.jit.split`): rebuilding SAC's ~80-leaf state in Python twice
per step cost ~0.5 ms.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .agents import Agents, agents_for, connect, tree_bytes
from .data import ReplayBuffer
from .envs import EnvSpec, derived_seed, make_env, spec_from_env
from .envs import make_env as default_make_env
from .frames import FrameReplayBuffer
from .harness import Run, run_loop
from .jaxenvs import is_jax_env_id
from .jit import jit, merge, split
from .record import resolve_resume
from .types import Transition
from .vision.obs_encoder import has_images

UNROLL_IMAGE_UPDATES = 8


def random_action(spec: EnvSpec, key: jax.Array) -> jax.Array:
    """A uniformly random action of `spec` (in [-1, 1] for continuous actions)."""
    if spec.discrete:
        return jax.random.randint(key, (), 0, spec.num_actions)
    return jax.random.uniform(key, spec.action_shape, minval=-1.0, maxval=1.0)


def filled_rows(buffer: ReplayBuffer, rows: int | None = None) -> dict[str, Any]:
    """The filled rows (`rows`, by default read from the buffer) of a replay buffer and its
    counters: what a checkpoint stores. A buffer of several agents (counters with an agent
    axis) keeps its agent axis first."""
    rows = int(np.max(np.asarray(buffer.size))) if rows is None else rows
    lead = (slice(None),) * np.ndim(buffer.size)
    data = jax.tree.map(lambda x: x[(*lead, slice(0, rows))], buffer.data)
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


def make_buffer(spec: EnvSpec, capacity: int) -> ReplayBuffer | FrameReplayBuffer:
    """The replay of the online loops for `spec`: a `FrameReplayBuffer` (each frame stored
    once) when its observations stack frames, else a `ReplayBuffer` of `Transition`s."""
    if spec.frame_stack > 1:
        return FrameReplayBuffer.create(spec, capacity)
    return ReplayBuffer.create(spec.example_transition(), capacity)


def buffer_saved(buffer: ReplayBuffer | FrameReplayBuffer, rows: int
                 ) -> tuple[dict[str, Any], dict[str, int]]:
    """What a checkpoint keeps of a replay buffer whose first `rows` rows are filled, and the
    sizes (`buffer_rows`, `buffer_frames`) its metadata needs to read it back."""
    if isinstance(buffer, FrameReplayBuffer):
        frames = buffer.frames_in_use()
        return buffer.filled(rows, frames), {"buffer_rows": rows, "buffer_frames": frames}
    return filled_rows(buffer, rows), {"buffer_rows": rows}


def buffer_saved_like(spec: EnvSpec, capacity: int, meta: dict[str, Any]) -> dict[str, Any]:
    """The template of `buffer_saved`'s tree, from the checkpoint's metadata."""
    if spec.frame_stack > 1:
        return FrameReplayBuffer.filled_like(spec, capacity, meta["buffer_rows"],
                                             meta["buffer_frames"])
    return filled_rows_like(spec.example_transition(), meta["buffer_rows"])


def buffer_from_saved(saved: dict[str, Any], spec: EnvSpec, capacity: int
                      ) -> ReplayBuffer | FrameReplayBuffer:
    """The replay buffer `buffer_saved` kept."""
    if spec.frame_stack > 1:
        return FrameReplayBuffer.from_filled(saved, spec, capacity)
    return from_filled_rows(saved, spec.example_transition(), capacity)


def stack_rows(rows: list) -> Any:
    """Host values of each agent (trees of numpy arrays) stacked along a new agent axis."""
    if len(rows) == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], rows[0])
    return jax.tree.map(lambda *xs: np.stack(xs), *rows)


def fresh_copy(tree: Any) -> Any:
    """Give every array leaf its own buffer (donation needs each buffer once, and a target
    network starts as the online network). Inside a compiled call the copies cost nothing."""
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, tree)


def batch_sampler(algorithm: ModuleType, config: Any) -> Callable[[ReplayBuffer, jax.Array], Any]:
    """`sample(buffer, key)`: one batch of `config.run.batch_size` for `algorithm.update`, drawn
    by the algorithm's `sample_batch(buffer, key, batch_size, config)` if it has one, else by
    `buffer.sample`."""
    batch_size = config.run.batch_size
    custom = getattr(algorithm, "sample_batch", None)
    if custom is None:
        return lambda buffer, key: buffer.sample(key, batch_size)
    return lambda buffer, key: custom(buffer, key, batch_size, config)


def batch_like(algorithm: ModuleType, config: Any, spec: EnvSpec) -> Any:
    """The shapes and dtypes of one batch that the loops give `algorithm.update`."""
    sample = batch_sampler(algorithm, config)
    capacity = config.run.batch_size
    return jax.eval_shape(
        lambda key: sample(make_buffer(spec, capacity), key), jax.random.key(0))


def explorer(algorithm: ModuleType) -> Callable[..., Any]:
    """`explore(state, obs, key, env_step)`: the loops' call of `algorithm.act`, which is given
    `env_step` (the env steps taken so far, an int32 array) when it has that parameter."""
    act = algorithm.act
    if "env_step" in inspect.signature(act).parameters:
        return lambda state, obs, key, env_step: act(state, obs, key, env_step=env_step)
    return lambda state, obs, key, env_step: act(state, obs, key)


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


class StepFunctions(NamedTuple):
    """What `make_step_functions` returns."""

    random_step: Callable
    train_step: Callable
    act: Callable
    learn: Callable
    sk: Flat  # rebuilds and flattens the (state, key) carry
    buf: Flat  # rebuilds and flattens the replay buffer


def make_step_functions(
    spec: EnvSpec, config: Any, algorithm: ModuleType, state_key: Any, buffer: Any, agents: Agents
):
    """The loop's compiled calls on flat `(state-and-key arrays, buffer arrays)` carries.

    Every array has the agent axis first. `random_step` and `train_step` take the flat carry
    and one transition per agent (a tuple of host arrays, the fields of `Transition`); they
    store the transitions and return the new flat carry and the next actions. `train_step`
    also takes the next observations and the env step they are acted on, and (unless told not
    to learn) runs `config.run.utd` updates per agent and returns their metrics (averaged over
    the updates) and whether all of them are finite, per agent. Its
    parts `act(state-and-key arrays, obs)` and `learn(state-and-key arrays, buffer arrays)` are
    returned too (`benchmarks/sac_online.py` times `learn` alone).
    """
    sk, buf = Flat(state_key), Flat(buffer)
    utd = config.run.utd
    # Pixel updates are written out one after another (compile time grows with utd, so up to
    # UNROLL_IMAGE_UPDATES of them); vector ones run in a scan.
    unrolled = utd == 1 or (has_images(spec) and utd <= UNROLL_IMAGE_UPDATES)
    sample, explore = batch_sampler(algorithm, config), explorer(algorithm)

    def store_in(buffer_arrays: list, transition: tuple) -> list:
        return buf.flatten(buf.rebuild(buffer_arrays).add(Transition(*transition)))

    def random_one(sk_arrays: list, buffer_arrays: list, transition: tuple):
        state, key = sk.rebuild(sk_arrays)
        key, k = jax.random.split(key)
        carry = (sk.flatten((state, key)), store_in(buffer_arrays, transition))
        return carry, random_action(spec, k)

    random_step = jax.jit(
        lambda flat, transition: agents.over(random_one)(*flat, transition), donate_argnums=0
    )
    # Storing and learning are two compiled calls on purpose: in one call that both updates
    # the donated buffer and trains on samples from it, XLA copied the whole buffer every
    # step (+100-130 ms for a 1M-row HalfCheetah buffer on CPU; a store alone takes ~0.2 ms).
    store = jax.jit(agents.over(store_in), donate_argnums=0)

    # The next action is chosen before this step's updates, in its own small call, and the
    # updates are dispatched after it: the host reads the action as soon as `act` is done and
    # steps the envs while the device is still learning (the action is one step's updates
    # behind). Both calls split the carry's key the same way: `learn` keeps the first part and
    # uses the second, `act` uses the third.
    def act_one(sk_arrays: list, obs, env_step):
        state, key = sk.rebuild(sk_arrays)
        k_act = jax.random.split(key, 3)[2]
        return explore(state, jax.tree.map(lambda x: x[None], obs), k_act, env_step)[0]

    def learn_one(sk_arrays: list, buffer_arrays: list):
        state, key = sk.rebuild(sk_arrays)
        data = buf.rebuild(buffer_arrays)
        key, k_update, _ = jax.random.split(key, 3)

        def one_update(state, k):
            k_sample, k_loss = jax.random.split(k)
            batch = agents.split_batch(sample(data, k_sample))
            return algorithm.update(state, batch, k_loss, config)

        keys = jax.random.split(k_update, utd)
        if unrolled:
            # Straight-line code, not a scan: on XLA's CPU backend a conv net trains 4-6x
            # slower inside a loop (DrQ's learn call at batch 8: 654 ms against 96 ms for one
            # update; 609 against 93 ms an update at --utd 2).
            steps = []
            for k in keys:
                state, metrics = one_update(state, k)
                steps.append(metrics)
            metrics = jax.tree.map(lambda *v: jnp.stack(v), *steps)  # as the scan stacks them
        else:
            state, metrics = jax.lax.scan(one_update, state, keys)
        metrics = {k: jnp.mean(v) for k, v in metrics.items()}
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        return sk.flatten((state, key)), metrics, finite

    act = jax.jit(agents.over(act_one, (0, 0, None)))
    learn = jax.jit(agents.over(learn_one), donate_argnums=0)

    def train_step(flat: tuple[list, list], transition: tuple, obs, env_step: int,
                   learns: bool = True):
        """Store, act for env step `env_step` (0-based), then learn if `learns`; the metrics
        and the finite flag are None when it does not."""
        buffer_arrays = store(flat[1], transition)
        action = act(flat[0], obs, np.int32(env_step))
        if not learns:
            return (flat[0], buffer_arrays), action, None, None
        sk_arrays, metrics, finite = learn(flat[0], buffer_arrays)
        return (sk_arrays, buffer_arrays), action, metrics, finite

    return StepFunctions(random_step, train_step, act, learn, sk, buf)


def train_online(
    config: Any, algorithm: ModuleType, *, make_env: Callable[[str], Any] = make_env
) -> dict[str, Any]:
    """Train `algorithm` (a module with `init`, `update`, `act`) online; return the summary.

    `config.run` is an `OnlineRun`. With `config.run.resume`, the run continues from the
    newest checkpoint of that folder; on CPU the result equals an uninterrupted run (the
    unfinished episode is replayed from its seed). `make_env(env_id)` builds the training env
    (for example to add a wrapper); evaluation envs are always `eqxrl.make_env`'s. Several
    seeds or a grid (`config.run.num_seeds`, `seeds`, `grid`) train one agent each, with one
    env per agent, as one vmapped program (`eqxrl.agents`). A JAX-native `env_id`
    (`gymnax:Pendulum-v1`, `brax:ant`) is trained by the compiled loop, `eqxrl.train_compiled`.
    """
    config = resolve_resume(config)
    settings = config.run
    if is_jax_env_id(settings.env_id):  # gymnax:..., brax:...: the whole loop is compiled
        if make_env is not default_make_env:
            raise ValueError(
                f"--env-id {settings.env_id} is a JAX-native env, trained by the compiled loop; "
                "make_env builds host (gymnasium) envs and cannot be used with it.")
        from .compiled import train_compiled

        return train_compiled(config, algorithm)
    connect(settings)
    envs = [make_env(settings.env_id)]
    try:
        spec = spec_from_env(envs[0])
        agents = agents_for(config, algorithm, lambda k, c: algorithm.init(k, spec, c),
                            batch_like(algorithm, config, spec))
        run = Run(config, algorithm, "step", agents,
                  {"episode": 0, "episode_actions": [], "episodes_done": 0,
                   "episode_returns": []})
        config = run.config
        if agents.multi and not agents.stacked:
            raise ValueError(
                f"--num-processes {settings.num_processes} with one agent: the online loop "
                "splits agents over processes; train several (--num-seeds) or use one process."
            )
        mine = agents.mine  # the agents whose envs this process steps (all, in one process)
        envs += [make_env(settings.env_id) for _ in range(len(mine) - 1)]

        def fresh(key, config):
            k_init, k_loop, k_action = jax.random.split(key, 3)
            state = algorithm.init(k_init, spec, config)
            buffer = make_buffer(spec, settings.buffer_size)
            return fresh_copy((state, k_loop)), buffer, random_action(spec, k_action)

        one = eqx.filter_eval_shape(fresh, jax.random.key(0), config)
        agents.check_memory(tree_bytes(one))
        if run.resume:
            (state_like, key_like), _, action_like = one

            def like(meta):
                return agents.saved_like({
                    "state": state_like, "key": key_like, "action": action_like,
                    "buffer": buffer_saved_like(spec, settings.buffer_size, meta)})

            tree = agents.from_saved(run.restore(like))
            state_key = (tree["state"], tree["key"])
            capacity = settings.buffer_size
            buffer = jit(agents.over(lambda b: buffer_from_saved(b, spec, capacity)))(
                tree["buffer"])
            state_key, buffer = agents.place(state_key), agents.place(buffer, rows_axis=1)
            action = tree["action"]
            obs, dtype = [], np.dtype(action.dtype)
            for env, i in zip(envs, mine, strict=True):
                h = run.host["agents"][i]
                o, _ = env.reset(seed=derived_seed(agents.seeds[i], h["episode"]))
                for a in h["episode_actions"]:  # the unfinished episode, replayed
                    o, *_ = env.step(np.asarray(a, dtype=dtype))
                obs.append(o)
        else:
            # One compiled call: eagerly, the network constructors compile ~50 tiny programs.
            def placed_init():
                state_key, buffer, action = agents.init(fresh, config)
                return (agents.place(state_key), agents.place(buffer, rows_axis=1),
                        agents.place(action))

            state_key, buffer, action = jit(placed_init)()
            obs = [env.reset(seed=derived_seed(agents.seeds[i], 0))[0]
                   for env, i in zip(envs, mine, strict=True)]
        random_step, train_step, _, _, sk, buf = make_step_functions(
            spec, config, algorithm, state_key, buffer, agents
        )
        flat = (sk.flatten(state_key), buf.flatten(buffer))  # donated from here on
        del state_key, buffer
    except BaseException:
        for env in envs:
            env.close()
        raise

    host = run.host
    per_agent = [host["agents"][i] for i in mine]

    def checkpoint():
        state, key = sk.rebuild(flat[0])
        rows = min(host["step"], settings.buffer_size)  # every agent has stored as many
        kept, sizes = buffer_saved(buf.rebuild(flat[1]), rows)
        host.update(sizes)
        run.save(agents.to_saved({"state": state, "key": key, "action": action,
                                  "buffer": kept}))

    def body(stop) -> str:
        nonlocal flat, action, obs
        while host["step"] < run.total:
            if stop.requested:
                checkpoint()
                return "interrupted"
            actions = agents.to_host(action)
            rows, next_obs = [], []
            for i, (env, h) in enumerate(zip(envs, per_agent, strict=True)):
                a = actions[i]
                o, reward, terminated, truncated, info = env.step(a)
                rows.append((obs[i], a, np.float32(reward), o, np.bool_(terminated),
                             np.bool_(truncated)))
                h["episode_actions"].append(a.tolist())
                if terminated or truncated:
                    h["episode_returns"].append(float(info["episode"]["r"]))
                    h["episode"] += 1
                    h["episodes_done"] += 1
                    h["episode_actions"] = []
                    o, _ = env.reset(seed=derived_seed(agents.seeds[mine[i]], h["episode"]))
                next_obs.append(o)
            transition = agents.from_host(stack_rows(rows))
            step = host["step"] + 1
            metrics = None
            if step < settings.start_steps:
                flat, action = random_step(flat, transition)
            else:
                flat, action, metrics, finite = train_step(
                    flat, transition, agents.from_host(stack_rows(next_obs)), step,
                    learns=step % settings.update_every == 0)
            obs = next_obs
            host["step"] = step
            run.extra["episodes"] = sum(h["episodes_done"] for h in per_agent)
            if metrics is not None:
                run.check_finite(finite, metrics)
            run.bar.update(1)
            if metrics is not None and step % settings.log_interval == 0:
                extra = []
                for h in per_agent:
                    returns, h["episode_returns"] = h["episode_returns"], []
                    extra.append({"episode_return": float(np.mean(returns))} if returns else {})
                run.log(metrics, extra)
            if run.due(step, settings.eval_interval):
                run.evaluate(sk.rebuild(flat[0])[0])
            if run.due(step, settings.checkpoint_interval):
                checkpoint()
        return "done"

    try:
        return run_loop(run, algorithm.act, body)
    finally:
        for env in envs:
            env.close()

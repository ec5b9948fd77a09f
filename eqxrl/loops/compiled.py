"""The off-policy loop compiled end to end on a JAX-native env (gymnax, Brax).

`python algorithms/sac.py --env-id gymnax:Pendulum-v1` lands here (`train_online` sends every
`gymnax:`/`brax:` id to `train_compiled`): the same algorithm file, its `init`/`update`/`act`
unchanged. One compiled call runs a chunk of env steps, each `act` → env step (auto-reset, the
final observation kept for the bootstrap) → store → `utd` updates (on every `update_every`-th
step; `act` and `sample_batch` hooks as in `eqxrl.loops.host`), as a `lax.scan` vmapped over
the agents (seeds and grid points, `eqxrl.run.agents`) and placed on the devices like the host
loop's. Between chunks the host logs, evaluates (also compiled, on the same env), checkpoints
and answers Ctrl-C; chunks end on the log, eval and checkpoint steps, so a resumed run takes
the same chunks as an uninterrupted one.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from eqxrl.core.hyper import hyper_of
from eqxrl.core.jit import jit
from eqxrl.core.types import Transition
from eqxrl.data.replay import ReplayBuffer
from eqxrl.data.saved import filled_rows, filled_rows_like, from_filled_rows
from eqxrl.envs.native import is_jax_env_id, make_evaluator, make_jax_env
from eqxrl.loops.common import batch_sampler, explorer, fresh_copy, random_action
from eqxrl.loops.contract import OffPolicyAlgorithm, OffPolicyHooks, check_algorithm
from eqxrl.loops.nan_check import raise_first_bad, step_code
from eqxrl.run.agents import tree_bytes
from eqxrl.run.drive import Advanced, drive
from eqxrl.run.grid import agents_for
from eqxrl.run.harness import Run
from eqxrl.run.processes import connect
from eqxrl.run.record import resolve_resume


def train_compiled(config: Any, algorithm: ModuleType,
                   hooks: OffPolicyHooks = OffPolicyHooks()) -> dict[str, Any]:  # noqa: B008
    """Train an off-policy `algorithm` on a JAX-native env, compiled; return the summary.

    `config.run` is an `OnlineRun` whose `env_id` is `gymnax:<id>` or `brax:<name>`; every
    other setting, and `hooks`, mean what they mean in `eqxrl.train_online`, and `--resume`
    continues the run exactly (on CPU).
    """
    config = resolve_resume(config)
    check_algorithm(algorithm, OffPolicyAlgorithm)
    settings = config.run
    if not is_jax_env_id(settings.env_id):
        raise ValueError(
            f"--env-id {settings.env_id!r} is stepped on the host, not inside a compiled loop: "
            "use a JAX-native env (gymnax:Pendulum-v1, brax:ant), or train it with "
            "eqxrl.train_online."
        )
    connect(settings)
    env = make_jax_env(settings.env_id)
    spec = env.spec
    example = spec.example_transition()
    agents = agents_for(config)
    run = Run(config, algorithm, "step", agents,
              evaluator=make_evaluator(env, algorithm.act, settings.eval_episodes))
    config = run.config
    if agents.multi and not agents.stacked:
        raise ValueError(
            f"--num-processes {settings.num_processes} with one agent: the compiled loop splits "
            "agents over processes; train several (--num-seeds) or use one process.")

    def fresh(key, config, hyper):
        k_init, k_loop, k_env = jax.random.split(key, 3)
        obs, env_state = env.reset(k_env)
        return fresh_copy({"state": algorithm.init(k_init, spec, config, hyper), "key": k_loop,
                           "obs": obs, "env": env_state,
                           "buffer": ReplayBuffer.create(example, settings.buffer_size)})

    one = eqx.filter_eval_shape(fresh, jax.random.key(0), config, hyper_of(config))
    agents.check_memory(tree_bytes(one))

    def place(carry):
        rest = {k: v for k, v in carry.items() if k != "buffer"}
        return agents.place(rest) | {"buffer": agents.place(carry["buffer"], rows_axis=1)}

    if run.resume:
        def like(progress):
            return agents.saved_like({k: v for k, v in one.items() if k != "buffer"} | {
                "buffer": filled_rows_like(example, progress.buffer_sizes["buffer_rows"])})

        carry = agents.from_saved(run.restore(like))
        capacity = settings.buffer_size
        carry["buffer"] = jit(agents.over(lambda b: from_filled_rows(b, example, capacity)))(
            carry["buffer"])
        carry = place(carry)
    else:
        carry = jit(lambda: place(agents.init(fresh, config)))()

    utd, start_steps, every = settings.utd, settings.start_steps, settings.update_every
    sample_one, explore = batch_sampler(hooks, config), explorer(algorithm, hooks)

    def sample(buffer, key):
        return jax.vmap(lambda k: agents.split_batch(sample_one(buffer, k)))(
            jax.random.split(key, utd))

    def learn(state, batches, key):
        def one_update(state, xs):
            batch, k = xs
            return algorithm.update(state, batch, k, config)

        state, metrics = jax.lax.scan(one_update, state, (batches, jax.random.split(key, utd)))
        return state, {k: jnp.mean(v) for k, v in metrics.items()}

    batches_like = jax.eval_shape(sample, one["buffer"], jax.random.key(0))
    metrics_like = jax.eval_shape(learn, one["state"], batches_like, jax.random.key(0))[1]

    def env_step(carry, t):
        """One env step of one agent; `t` (0-based, the same for every agent) is unbatched, so
        the learning-starts test stays a `cond` under the vmap over agents."""
        key, k_random, k_act, k_env, k_sample, k_learn = jax.random.split(carry["key"], 6)
        state, obs = carry["state"], carry["obs"]
        action = jax.lax.cond(
            t < start_steps, lambda: random_action(spec, k_random),
            lambda: explore(state, jax.tree.map(lambda x: x[None], obs), k_act, t)[0])
        out = env.step(k_env, carry["env"], action)
        transition = Transition(obs, action, out.reward, out.final_obs, out.terminated,
                                out.truncated)
        if hooks.observe is not None:
            state = hooks.observe(state, jax.tree.map(lambda x: x[None], transition))
        buffer = carry["buffer"].add(transition)
        learns = (t + 1 >= start_steps) & ((t + 1) % every == 0)

        def skip(state, batches, key):
            return state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_like)

        # The batches are drawn outside the cond: a buffer passed into it was copied each step.
        batches = sample(buffer, k_sample)
        state, metrics = jax.lax.cond(learns, learn, skip, state, batches, k_learn)
        carry = {"state": state, "key": key, "obs": out.obs, "env": out.state, "buffer": buffer}
        row = {"metrics": metrics, "learned": learns, "episode_return": out.episode_return}
        if settings.nan_check:  # the action, then what the env made of it
            row["nan_code"] = step_code(action, out.final_obs, out.reward)
        return carry, row

    # The scan runs inside the per-agent function: scanning the vmapped step instead made XLA
    # copy the replay buffer at every step (2.6x slower with a 1M-row buffer).
    chunk = jit(agents.over(lambda c, steps: jax.lax.scan(env_step, c, steps), (0, None)),
                donate=(0,))

    def checkpoint():
        rows = min(run.progress.step, settings.buffer_size)  # every agent has stored as many
        saved = {k: v for k, v in carry.items() if k != "buffer"}
        run.save(agents.to_saved(saved | {"buffer": filled_rows(carry["buffer"], rows)}),
                 {"buffer_rows": rows})

    def advance(start: int) -> Advanced:
        """One compiled chunk of env steps, up to the next log, eval or checkpoint step."""
        nonlocal carry
        end = run.next_stop(start, settings.log_interval, settings.eval_interval,
                            settings.checkpoint_interval)
        carry, out = chunk(carry, jnp.arange(start, end, dtype=jnp.int32))
        if settings.nan_check:
            raise_first_bad(agents.to_host(out["nan_code"]), settings.env_id, agents.mine,
                            start + 1)
        extra = run.finished_episodes(agents.to_host(out["episode_return"]))
        if not (end > start_steps - 1 and end % settings.log_interval == 0):
            return Advanced(end)
        # the mean over the steps that updated (the log step is one of them)
        learned = out["learned"].astype(jnp.float32)
        metrics = {k: jnp.sum(v * learned, axis=1) / jnp.sum(learned, axis=1)
                   for k, v in out["metrics"].items()}
        finite = None
        if settings.nan_check:
            finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]), 0)
        return Advanced(end, metrics, finite, log=True, extra=extra)

    return drive(run, algorithm.act, advance, checkpoint, lambda: carry["state"], compiled=True)

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
Each agent (one per seed and grid point, `eqxrl.run.agents`) has its own env; the compiled calls
are vmapped over the agents. Between the calls the carry (state, key, buffer) is held as
flat lists of arrays (`eqxrl.jit.split`): rebuilding SAC's ~80-leaf state in Python twice
per step cost ~0.5 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import equinox as eqx
import jax
import numpy as np

from eqxrl.core.hyper import hyper_of
from eqxrl.core.jit import jit
from eqxrl.core.seeds import derived_seed
from eqxrl.data.saved import buffer_from_saved, buffer_saved, buffer_saved_like, make_buffer
from eqxrl.envs.gym import spec_from_env
from eqxrl.loops.common import fresh_copy, random_action, stack_rows
from eqxrl.loops.contract import OffPolicyHooks
from eqxrl.loops.host_steps import make_step_functions
from eqxrl.loops.nan_check import check_action, check_env_output
from eqxrl.loops.offline_mix import load_offline_data, trained_states
from eqxrl.run.agents import tree_bytes
from eqxrl.run.drive import Advanced, drive
from eqxrl.run.grid import agents_for
from eqxrl.run.harness import Run
from eqxrl.run.processes import connect


def train_host(config: Any, algorithm: ModuleType, hooks: OffPolicyHooks,
               make_env: Callable[[str], Any]) -> dict[str, Any]:
    """Train an off-policy `algorithm` on gymnasium envs stepped on the host; return the
    summary. `eqxrl.train_online` (`eqxrl.loops.online`) says what each argument means."""
    settings = config.run
    connect(settings)
    envs = [make_env(settings.env_id)]
    try:
        spec = spec_from_env(envs[0])
        agents = agents_for(config)
        run = Run(config, algorithm, "step", agents, envs=1)
        config = run.config
        if agents.multi and not agents.stacked:
            raise ValueError(
                f"--num-processes {settings.num_processes} with one agent: the online loop "
                "splits agents over processes; train several (--num-seeds) or use one process."
            )
        mine = agents.mine  # the agents whose envs this process steps (all, in one process)
        envs += [make_env(settings.env_id) for _ in range(len(mine) - 1)]

        def fresh(key, config, hyper):
            k_init, k_loop, k_action = jax.random.split(key, 3)
            state = algorithm.init(k_init, spec, config, hyper)
            buffer = make_buffer(spec, settings.buffer_size)
            return fresh_copy((state, k_loop)), buffer, random_action(spec, k_action)

        one = eqx.filter_eval_shape(fresh, jax.random.key(0), config, hyper_of(config))
        per_agent = tree_bytes(one)
        agents.check_memory(per_agent)
        offline, rewards = load_offline_data(  # (refused if it does not fit beside the agents)
            config, spec, hooks.offline_preset,
            fits=lambda nbytes: agents.check_memory(per_agent, shared_bytes=nbytes))
        if run.resume:
            (state_like, key_like), _, action_like = one

            def like(progress):
                return agents.saved_like({
                    "state": state_like, "key": key_like, "action": action_like,
                    "buffer": buffer_saved_like(spec, settings.buffer_size,
                                                progress.buffer_sizes)})

            tree = agents.from_saved(run.restore(like))
            state_key = (tree["state"], tree["key"])
            capacity = settings.buffer_size
            buffer = jit(agents.over(lambda b: buffer_from_saved(b, spec, capacity)))(
                tree["buffer"])
            state_key, buffer = agents.place(state_key), agents.place(buffer, rows_axis=1)
            action = tree["action"]
            obs, dtype = [], np.dtype(action.dtype)
            for env, i in zip(envs, mine, strict=True):
                h = run.progress.agents[i]
                o, _ = env.reset(seed=derived_seed(agents.seeds[i], h.episode[0]))
                for a in h.episode_actions[0]:  # the unfinished episode, replayed
                    o, *_ = env.step(np.asarray(a, dtype=dtype))
                obs.append(o)
        else:
            # One compiled call: eagerly, the network constructors compile ~50 tiny programs.
            def placed_init():
                state_key, buffer, action = agents.init(fresh, config)
                return (agents.place(state_key), agents.place(buffer, rows_axis=1),
                        agents.place(action))

            state_key, buffer, action = jit(placed_init)()
            if hooks.start_from is not None:  # fine-tuning: the trained agents, a new key
                state_key = (agents.place(trained_states(hooks.start_from, agents, algorithm)),
                             state_key[1])
            obs = [env.reset(seed=derived_seed(agents.seeds[i], 0))[0]
                   for env, i in zip(envs, mine, strict=True)]
        if offline is not None and agents.mesh is not None:
            offline = agents.place(offline, rows_axis=0)
        random_step, train_step, _, _, sk, buf = make_step_functions(
            spec, config, algorithm, state_key, buffer, agents, hooks, offline, rewards
        )
        flat = (sk.flatten(state_key), buf.flatten(buffer))  # donated from here on
        del state_key, buffer
    except BaseException:
        for env in envs:
            env.close()
        raise

    per_agent = [run.progress.agents[i] for i in mine]

    def checkpoint():
        state, key = sk.rebuild(flat[0])
        rows = min(run.progress.step, settings.buffer_size)  # every agent has stored as many
        kept, sizes = buffer_saved(buf.rebuild(flat[1]), rows)
        run.save(agents.to_saved({"state": state, "key": key, "action": action,
                                  "buffer": kept}), sizes)

    def advance(start: int) -> Advanced:
        """One env step of every agent, and the learning call it triggers."""
        nonlocal flat, action, obs
        actions = agents.to_host(action)
        rows, next_obs = [], []
        for i, (env, h) in enumerate(zip(envs, per_agent, strict=True)):
            a = actions[i]
            if settings.nan_check:
                check_action(a, settings.env_id, mine[i], start + 1)
            o, reward, terminated, truncated, info = env.step(a)
            if settings.nan_check:
                check_env_output(o, reward, settings.env_id, mine[i], start + 1)
            rows.append((obs[i], a, np.float32(reward), o, np.bool_(terminated),
                         np.bool_(truncated)))
            h.episode_actions[0].append(a.tolist())
            if terminated or truncated:
                h.end_episode(0, info["episode"]["r"])
                o, _ = env.reset(seed=derived_seed(agents.seeds[mine[i]], h.episode[0]))
            next_obs.append(o)
        transition = agents.from_host(stack_rows(rows))
        step = start + 1
        obs = next_obs
        run.count_episodes()
        if step < settings.start_steps:
            flat, action = random_step(flat, transition)
            return Advanced(step)
        flat, action, metrics, finite = train_step(
            flat, transition, agents.from_host(stack_rows(next_obs)), step,
            learns=step % settings.update_every == 0)
        if metrics is None or step % settings.log_interval:
            return Advanced(step, metrics, finite)
        extra = [h.take_returns() for h in per_agent]
        return Advanced(step, metrics, finite, log=True, extra=extra)

    try:
        return drive(run, algorithm.act, advance, checkpoint, lambda: sk.rebuild(flat[0])[0])
    finally:
        for env in envs:
            env.close()

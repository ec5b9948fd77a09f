"""The on-policy loop: collect a rollout of `num_envs` × `num_steps` transitions, update, repeat.

An on-policy algorithm module has `init(key, spec, config)`, `act(state, obs, key,
deterministic)`, `explore(state, obs, key) -> (action, aux)` (aux: per-env arrays the update
needs, such as log-probabilities and values) and `update(state, rollout, key, config) ->
(state, metrics)` on an `eqxrl.Rollout`. The same file trains in two loops:

- a gymnasium id (`CartPole-v1`): a gymnasium `SyncVectorEnv` per agent stepped on the host,
  one compiled `explore` call per step and one compiled `update` per rollout. Every episode of
  env j is reset with its own seed, so a run is reproducible and `--resume` replays the
  episodes in progress, as the off-policy loop does.
- a JAX-native id (`gymnax:CartPole-v1`, `brax:ant`): rollouts and updates compiled together,
  several per call, vmapped over the agents (seeds, grid points).

Continuous actions are clipped to [-1, 1] for the env; the rollout keeps the sampled action.
Logs, evaluations and checkpoints happen after the rollout that crosses each multiple of their
interval (and after the last one).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import equinox as eqx
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from eqxrl.core.hyper import hyper_of
from eqxrl.core.jit import jit
from eqxrl.core.seeds import derived_seed
from eqxrl.core.types import Rollout
from eqxrl.envs.gym import make_env, spec_from_env
from eqxrl.envs.native import is_jax_env_id, make_evaluator, make_jax_env
from eqxrl.loops.common import fresh_copy
from eqxrl.loops.contract import OnPolicyAlgorithm, check_algorithm
from eqxrl.loops.nan_check import check_action, check_env_output, raise_first_bad, step_code
from eqxrl.run.agents import tree_bytes
from eqxrl.run.drive import Advanced, drive
from eqxrl.run.grid import agents_for
from eqxrl.run.harness import Run
from eqxrl.run.processes import connect
from eqxrl.run.record import resolve_resume


def train_on_policy(config: Any, algorithm: ModuleType) -> dict[str, Any]:
    """Train an on-policy `algorithm` (see the module docstring); return the run's summary.

    `config.run` is an `OnPolicyRun`. Several seeds or a grid train one agent each, as one
    vmapped program; `--resume` continues a run from its newest checkpoint.
    """
    config = resolve_resume(config)
    check_algorithm(algorithm, OnPolicyAlgorithm)
    settings = config.run
    if is_jax_env_id(settings.env_id):
        env = make_jax_env(settings.env_id)
        spec = env.spec
    else:
        env = None
        probe = make_env(settings.env_id)
        spec = spec_from_env(probe)
        probe.close()
    connect(settings)
    agents = agents_for(config)
    if agents.multi and not agents.stacked:
        raise ValueError(
            f"--num-processes {settings.num_processes} with one agent: the on-policy loop "
            "splits agents over processes; train several (--num-seeds) or use one process.")
    if env is not None:
        return _compiled(config, algorithm, env, agents)
    return _host(config, algorithm, spec, agents)


def _fresh_state(algorithm: ModuleType, spec: Any):
    def fresh(key, config, hyper):
        k_init, k_loop = jax.random.split(key)
        return fresh_copy({"state": algorithm.init(k_init, spec, config, hyper), "key": k_loop})

    return fresh


def _start(run: Run, agents: Any, fresh: Any, config: Any) -> Any:
    """The loop's carry (agent axis first, on the devices): restored from the newest
    checkpoint, or `fresh(key, config, hyper)` for every agent in one compiled call."""
    one = eqx.filter_eval_shape(fresh, jax.random.key(0), config, hyper_of(config))
    agents.check_memory(tree_bytes(one))
    if run.resume:
        return agents.place(agents.from_saved(run.restore(lambda progress: agents.saved_like(one))))
    return jit(lambda: agents.place(agents.init(fresh, config)))()


def _compiled(config: Any, algorithm: ModuleType, env: Any, agents: Any) -> dict[str, Any]:
    settings = config.run
    spec, num_envs, num_steps = env.spec, settings.num_envs, settings.num_steps
    run = Run(config, algorithm, "step", agents,
              evaluator=make_evaluator(env, algorithm.act, settings.eval_episodes))
    config = run.config
    base = _fresh_state(algorithm, spec)

    def fresh(key, config, hyper):
        k_state, k_env = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, num_envs))
        return base(k_state, config, hyper) | {"obs": obs, "env": env_state}

    carry = _start(run, agents, fresh, config)

    def env_step(carry, _):
        key, k_act, k_env = jax.random.split(carry["key"], 3)
        obs = carry["obs"]
        action, aux = algorithm.explore(carry["state"], obs, k_act)
        out = jax.vmap(env.step)(jax.random.split(k_env, num_envs), carry["env"], action)
        row = Rollout(obs, action, out.reward, out.final_obs, out.terminated, out.truncated, aux)
        carry = carry | {"key": key, "obs": out.obs, "env": out.state}
        # with --nan-check: one code per step, for all the envs (the action, then the env's output)
        code = step_code(action, out.final_obs, out.reward) if settings.nan_check else None
        return carry, (row, out.episode_return, code)

    def iteration(carry, _):
        carry, (rollout, returns, codes) = jax.lax.scan(env_step, carry, None, length=num_steps)
        key, k_update = jax.random.split(carry["key"])
        state, metrics = algorithm.update(carry["state"], rollout, k_update, config)
        return carry | {"state": state, "key": key}, (metrics, returns, codes)

    def rollouts(carry, count: int):
        return jax.lax.scan(iteration, carry, None, length=count)

    chunk = jit(lambda carry, count: agents.over(lambda c: rollouts(c, count))(carry),
                donate=(0,))
    size = settings.rollout_size

    def advance(start: int) -> Advanced:
        """Whole rollouts up to the first that reaches the next log/eval/checkpoint step."""
        nonlocal carry
        stop_at = run.next_stop(start, settings.log_interval, settings.eval_interval,
                                settings.checkpoint_interval)
        count = max(1, -(-(stop_at - start) // size))
        carry, (metrics, returns, codes) = chunk(carry, count)
        if settings.nan_check:  # codes: (agent, rollout, step)
            raise_first_bad(agents.to_host(codes), settings.env_id, agents.mine, start + 1,
                            steps_per_index=num_envs)
        end = start + count * size
        returns = agents.to_host(returns)  # (agent, rollout, step, env)
        extra = run.finished_episodes(returns.reshape(returns.shape[0], -1))
        return Advanced(end, jax.tree.map(lambda v: jnp.mean(v, axis=1), metrics),
                        log=run.due(end, settings.log_interval, since=start), extra=extra)

    return drive(run, algorithm.act, advance, lambda: run.save(agents.to_saved(carry)),
                 lambda: carry["state"], compiled=True)


def _host(config: Any, algorithm: ModuleType, spec: Any, agents: Any) -> dict[str, Any]:
    settings = config.run
    if isinstance(spec.observation, tuple):
        raise ValueError(
            f"--env-id {settings.env_id} has dict observations ({[k for k, _ in spec.observation]}"
            "): the host on-policy loop stacks array observations only. Flatten them with "
            "gymnasium.wrappers.FlattenObservation, or use a JAX-native env.")
    num_envs, num_steps = settings.num_envs, settings.num_steps
    # Per agent and env: the episode index (its reset seed) and the actions since that reset
    # (replayed on --resume).
    run = Run(config, algorithm, "step", agents, envs=num_envs)
    config = run.config
    fresh = _fresh_state(algorithm, spec)
    carry = _start(run, agents, fresh, config)

    mine = agents.mine
    per_agent = [run.progress.agents[i] for i in mine]
    seeds = [agents.seeds[i] for i in mine]
    mode = gym.vector.AutoresetMode.DISABLED  # we reset finished envs, each with its own seed
    vectors = [gym.vector.SyncVectorEnv([lambda: make_env(settings.env_id)] * num_envs,
                                        autoreset_mode=mode) for _ in mine]
    action_dtype = np.dtype(np.int32 if spec.discrete else np.float32)

    def episode_seeds(seed, h):
        return [derived_seed(seed, 0, j, e) for j, e in enumerate(h.episode)]

    def to_env(action):
        return action if spec.discrete else np.clip(action, -1.0, 1.0)

    try:
        obs, running = [], []
        for vec, seed, h in zip(vectors, seeds, per_agent, strict=True):
            o, _ = vec.reset(seed=episode_seeds(seed, h))
            ret = np.zeros(num_envs)
            for j, actions in enumerate(h.episode_actions):  # the unfinished episodes
                for a in actions:
                    oj, r, *_ = vec.envs[j].step(to_env(np.asarray(a, action_dtype)))
                    o[j], ret[j] = oj, ret[j] + r
            obs.append(o)
            running.append(ret)

        @jit
        def explore(state, key, obs):
            def one_agent(state, key, obs):
                key, k = jax.random.split(key)
                return key, *algorithm.explore(state, obs, k)

            return agents.over(one_agent)(state, key, obs)

        @jit(donate=(0,))
        def learn(carry, rollout):
            def one_agent(carry, rollout):
                key, k = jax.random.split(carry["key"])
                state, metrics = algorithm.update(carry["state"], Rollout(**rollout), k, config)
                return {"state": state, "key": key}, metrics

            return agents.over(one_agent)(carry, rollout)
    except BaseException:
        for vec in vectors:
            vec.close()
        raise

    def advance(start: int) -> Advanced:
        """One rollout of every agent's envs, then one update."""
        nonlocal carry, obs
        rows, key = [], carry["key"]
        for t in range(num_steps):
            key, action, aux = explore(carry["state"], key, agents.from_host(np.stack(obs)))
            actions = agents.to_host(action)
            step_rows = []
            for i, (vec, h) in enumerate(zip(vectors, per_agent, strict=True)):
                a = actions[i]
                if settings.nan_check:
                    check_action(a, settings.env_id, mine[i], start + t * num_envs + 1)
                o, r, term, trunc, _ = vec.step(to_env(a))
                if settings.nan_check:
                    check_env_output(o, r, settings.env_id, mine[i], start + t * num_envs + 1)
                done = term | trunc
                final = o.copy()
                running[i] += r
                for j in range(num_envs):
                    h.episode_actions[j].append(a[j].tolist())
                    if done[j]:
                        h.end_episode(j, running[i][j])
                        running[i][j] = 0.0
                if done.any():
                    o, _ = vec.reset(seed=episode_seeds(seeds[i], h),
                                     options={"reset_mask": done})
                step_rows.append((obs[i], a, r.astype(np.float32), final, term, trunc))
                obs[i] = o
            rows.append((step_rows, jax.tree.map(agents.to_host, aux)))
        carry = carry | {"key": key}
        rollout = _stack_rollout(rows, len(mine))
        carry, metrics = learn(carry, agents.from_host(rollout))
        end = start + num_steps * num_envs
        run.count_episodes()
        if not run.due(end, settings.log_interval, since=start):
            return Advanced(end, metrics)
        return Advanced(end, metrics, log=True, extra=[h.take_returns() for h in per_agent])

    try:
        return drive(run, algorithm.act, advance, lambda: run.save(agents.to_saved(carry)),
                     lambda: carry["state"])
    finally:
        for vec in vectors:
            vec.close()


def _stack_rollout(rows: list, num_agents: int) -> dict[str, Any]:
    """Host rows (per step: per agent (obs, action, reward, next_obs, terminated, truncated),
    and the aux arrays of all agents) as the fields of a Rollout with axes (agent, step, env)."""
    def field(k):
        return np.stack([np.stack([step[0][i][k] for step in rows]) for i in range(num_agents)])

    aux = {name: np.stack([step[1][name] for step in rows], axis=1) for name in rows[0][1]}
    return dict(obs=field(0), action=field(1), reward=field(2), next_obs=field(3),
                terminated=field(4), truncated=field(5), aux=aux)

"""`train_online`: the one place that chooses the host loop or the compiled loop for an
off-policy algorithm, from the env id (gymnasium ids: host; `gymnax:` and `brax:` ids: compiled).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from eqxrl.envs.gym import make_env as default_make_env
from eqxrl.envs.native import is_jax_env_id
from eqxrl.loops.compiled import train_compiled
from eqxrl.loops.contract import OffPolicyAlgorithm, OffPolicyHooks, check_algorithm
from eqxrl.loops.host import train_host
from eqxrl.loops.offline_mix import check_offline_data
from eqxrl.run.record import resolve_resume


def train_online(
    config: Any, algorithm: ModuleType,
    hooks: OffPolicyHooks = OffPolicyHooks(),  # noqa: B008 (a frozen record)
    *, make_env: Callable[[str], Any] = default_make_env,
) -> dict[str, Any]:
    """Train an off-policy `algorithm` online; return the run's summary.

    `algorithm` is a module with `Config`, `State`, `init`, `update` and `act` (checked first);
    `hooks` changes how the loop explores or samples (`eqxrl.OffPolicyHooks`). `config.run` is
    an `OnlineRun`. With `config.run.resume`, the run continues from the newest checkpoint of
    that folder; on CPU the result equals an uninterrupted run (the unfinished episode is
    replayed from its seed). `make_env(env_id)` builds the training env (for example to add a
    wrapper); evaluation envs are always `eqxrl.make_env`'s. Several seeds or a grid
    (`config.run.num_seeds`, `seeds`, `grid`) train one agent each, with one env per agent, as
    one vmapped program (`eqxrl.run.agents`). A JAX-native `env_id` (`gymnax:Pendulum-v1`,
    `brax:ant`) is trained by the compiled loop, `eqxrl.train_compiled`.
    """
    config = resolve_resume(config)
    check_algorithm(algorithm, OffPolicyAlgorithm)
    check_offline_data(config, hooks)
    if hooks.start_from is not None and is_jax_env_id(config.run.env_id):
        raise ValueError(f"Fine-tuning starts host-loop agents; --env-id {config.run.env_id} is "
                         "trained by the compiled loop. Use the gymnasium env of the dataset.")
    if is_jax_env_id(config.run.env_id):  # gymnax:..., brax:...: the whole loop is compiled
        if make_env is not default_make_env:
            raise ValueError(
                f"--env-id {config.run.env_id} is a JAX-native env, trained by the compiled "
                "loop; make_env builds host (gymnasium) envs and cannot be used with it.")
        return train_compiled(config, algorithm, hooks)
    return train_host(config, algorithm, hooks, make_env)

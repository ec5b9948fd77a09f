# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Writing a new update function against typed state
#
# This notebook writes a small variant of SAC, following the guide "Writing an algorithm"
# and its part "Building on another algorithm": SAC whose critics minimise a Huber loss of
# the TD error instead of its square, so that large errors early in training give bounded
# gradients. It reuses SAC's named steps (`critic_target`, `policy_step`) and replaces only
# the critics' loss. Then it makes two deliberate shape mistakes and shows how the jaxtyping
# annotations, checked by beartype, report them; and it trains the variant with the run
# harness for a few thousand steps.
#
# The training run at the end is tiny, so that the notebook runs in CI; it shows that the
# variant runs, not that it learns. For a budget that learns Pendulum-v1 with SAC, the
# Results page gives 15k env steps with 1k random ones (−120.0 with seed 0,
# against about −1200 for a random policy).

# %% [markdown]
# `EQXRL_TYPECHECK=1` makes eqxrl check every jaxtyping annotation of the package with
# beartype when a function is called or traced. It must be set before eqxrl is first imported,
# so this cell only has its effect in a fresh kernel. Our own functions are checked by
# decorating them with `jaxtyped(typechecker=beartype)`.

# %%
# ruff: noqa: E402
import os

os.environ["EQXRL_TYPECHECK"] = "1"

import dataclasses
import tempfile
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from beartype import beartype
from jaxtyping import Array, Float, PRNGKeyArray, jaxtyped

import eqxrl
from eqxrl.algorithms import sac
from eqxrl.core import positive
from eqxrl.datasets import collect_episodes, random_policy

# %% [markdown]
# ## Config
#
# The variant's `Config` extends SAC's, so it keeps every SAC hyperparameter and the run
# settings in `run`. Its one new field is marked `eqxrl.Swept`, so a grid may give it several
# values in one program; its docstring would be its `--help` text. `__post_init__` checks it
# (the error would name the flag) and refuses SimBa networks and resets, which this variant's
# `update` does not apply.


# %%
@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    """SAC whose critics minimise a Huber loss of the TD error."""

    huber_delta: eqxrl.Swept[float] = 1.0
    """TD error beyond which the critics' loss grows linearly instead of quadratically"""

    def __post_init__(self):
        super().__post_init__()
        positive(self, "huber_delta")
        self.net.require_default("SAC with a Huber critic loss")


# %% [markdown]
# ## State and init
#
# The state holds SAC's state and the new hyperparameter as a float32 array leaf. `init`
# reads the swept value from `hyper`, never from `config`: a grid stacks one `Hyper` per
# agent and vmaps `init` over them.


# %%
class State(eqx.Module):
    """SAC's state and the Huber threshold (an array leaf, so a grid can sweep it)."""

    sac: sac.State
    huber_delta: Float[Array, ""]


def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """SAC's networks and optimisers for `spec`, and the Huber threshold."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    return State(sac=sac.init(key, spec, config, hyper), huber_delta=hyper.huber_delta)


# %% [markdown]
# ## The loss
#
# The loss is split in two. `huber_td_loss` works on arrays only: for each critic, the mean
# over the batch of 2·huber(Q − y), which equals SAC's squared error (Q − y)² where
# |Q − y| ≤ δ and grows as 2δ|Q − y| − δ² beyond; summed over the critics. `critic_loss`
# evaluates the ensemble (`eqxrl.ensemble_q` gives one row per critic) and returns
# `(loss, metrics)`, the form `TrainState.apply_loss_fn` expects. The annotations say which
# axes must agree: `ensemble batch` for the Q-values, ` batch` for the targets.


# %%
@jaxtyped(typechecker=beartype)
def huber_td_loss(
    q: Float[Array, "ensemble batch"], target_q: Float[Array, " batch"],
    delta: Float[Array, ""] | float,
) -> Float[Array, ""]:
    """Σ_j mean_batch 2·huber_δ(Q_j − y)."""
    return jnp.sum(jnp.mean(2.0 * optax.huber_loss(q, target_q[None], delta=delta), axis=1))


@jaxtyped(typechecker=beartype)
def critic_loss(
    critic: eqxrl.Ensemble, batch: eqxrl.Transition, target_q: Float[Array, " batch"],
    delta: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Each critic regressed to the soft TD target with the Huber loss."""
    q = eqxrl.ensemble_q(critic, batch.obs, batch.action)  # (ensemble, batch)
    loss = huber_td_loss(q, target_q, delta)
    return loss, {"q_mean": jnp.mean(q), "target_q_mean": jnp.mean(target_q)}


# %% [markdown]
# A check against values worked out by hand, with δ = 1: the first critic's errors 0 and 2
# give 0 and 2·1.5 = 3, mean 1.5; the second's 0.5 and −3 give 0.25 and 5, mean 2.625;
# the sum is 4.125.

# %%
q = jnp.array([[0.0, 2.0], [0.5, -3.0]])
loss = huber_td_loss(q, jnp.zeros(2), 1.0)
print(float(loss))
assert np.isclose(loss, 4.125)

# %% [markdown]
# ## update and act
#
# `update` starts with the two checks every algorithm's update makes while it is traced:
# `check_one_agent` refuses a state of stacked agents passed without `jax.vmap`, and
# `spec.check_batch` names any batch field whose shape does not fit the env. Then SAC's
# target, our loss in place of SAC's, and SAC's `policy_step` (actor, temperature, target
# critics), which also names the metrics. `act` is SAC's on the inner state.


# %%
@jaxtyped(typechecker=beartype)
def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One step: SAC's soft target, the Huber critic loss, then SAC's actor and temperature."""
    eqxrl.check_one_agent(state, "huber_sac.update")
    inner = state.sac
    inner.spec.check_batch(batch)
    k_next, k_subset, k_target, k_actor = jax.random.split(key, 4)
    target_q = sac.critic_target(inner, batch, (k_next, k_subset, k_target), config)
    critic, critic_info = inner.critic.apply_loss_fn(
        critic_loss, batch, target_q, state.huber_delta
    )
    inner, metrics = sac.policy_step(inner, critic, critic_info, batch.obs, k_actor, config)
    return dataclasses.replace(state, sac=inner), metrics


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """SAC's actions for a batch of observations."""
    return sac.act(state.sac, obs, key, deterministic)


# %% [markdown]
# ## Data to try it on
#
# A thousand random-policy transitions of Pendulum-v1 (`eqxrl.datasets.collect_episodes`), a
# state, and a batch of 256 sampled from them. Every field of the batch has the batch axis
# first: the reward is `(256,)`.

# %%
spec = eqxrl.spec_from_env(eqxrl.make_env("Pendulum-v1"))
data = collect_episodes("Pendulum-v1", random_policy(spec), 1_000, seed=0)
config = Config(hidden_dims=(64, 64))
state = init(jax.random.key(0), spec, config)
batch = data.sample(jax.random.key(1), 256)
print(jax.tree.map(jnp.shape, batch))

# %% [markdown]
# ## Mistake 1: a reward with a trailing axis
#
# Suppose the batch is built from your own arrays, where rewards are stored as a column of
# shape `(N, 1)`, as some dataset files do. Added to a `(256,)` value, a `(256, 1)` reward
# would broadcast silently to `(256, 256)` targets. With `EQXRL_TYPECHECK=1` the
# `Transition` refuses it when it is built: `reward`, `terminated` and `truncated` are
# annotated `Float[Array, "*batch"]` and `Bool[Array, "*batch"]`, so jaxtyping binds
# `*batch = (256, 1)` from the reward and then reports `terminated`, whose shape is `(256,)`.
# (Without the variable, the `Transition`'s own check raises a `ValueError` naming both
# shapes.)

# %%
rewards = np.asarray(batch.reward)[:, None]  # (256, 1): the mistake
try:
    eqxrl.Transition(obs=batch.obs, action=batch.action, reward=jnp.asarray(rewards),
                     next_obs=batch.next_obs, terminated=batch.terminated,
                     truncated=batch.truncated)
except Exception as e:
    print(type(e).__name__, e)

# %% [markdown]
# The fix is to drop the trailing axis:

# %%
fixed = eqxrl.Transition(obs=batch.obs, action=batch.action, reward=jnp.asarray(rewards[:, 0]),
                         next_obs=batch.next_obs, terminated=batch.terminated,
                         truncated=batch.truncated)
print(fixed.reward.shape)

# %% [markdown]
# ## Mistake 2: Q-values with their axes swapped
#
# Calling the ensemble under `jax.vmap` over the batch gives one row per example,
# `(batch, ensemble)`, not the `(ensemble, batch)` that `eqxrl.ensemble_q` gives and our loss
# is annotated with. jaxtyping binds `ensemble = 256` and `batch = 2` from `q`, then finds a
# target whose `batch` is 256, and beartype reports the call, naming the parameter and the
# size of each axis.

# %%
critic = state.sac.critic.model
target_q = sac.critic_target(state.sac, batch, tuple(jax.random.split(jax.random.key(2), 3)),
                             config)
q_swapped = jax.vmap(critic)(batch.obs, batch.action)  # (256, 2): the mistake
try:
    huber_td_loss(q_swapped, target_q, state.huber_delta)
except Exception as e:
    print(type(e).__name__, e)

# %% [markdown]
# The fixed call:

# %%
q = eqxrl.ensemble_q(critic, batch.obs, batch.action)
print(q.shape, float(huber_td_loss(q, target_q, state.huber_delta)))

# %% [markdown]
# ## One update, compiled
#
# The checks run while `update` is traced, so the compiled step pays nothing for them. The
# config is closed over and so static; state, batch and key are traced.

# %%
step = eqxrl.jit(lambda state, batch, key: update(state, batch, key, config))
new_state, metrics = step(state, batch, jax.random.key(3))
print({name: round(float(value), 3) for name, value in metrics.items()})

# %% [markdown]
# ## Training it with the run harness
#
# The loops need a module with the five names `Config`, `State`, `init`, `update` and `act`
# (the `eqxrl.loops.OffPolicyAlgorithm` protocol, checked when a run starts). In a file of
# your own that is the file itself (`sys.modules[__name__]`, as `algorithms/sac.py` passes);
# in a notebook we make a module object from the names above. Its name is what `config.json`
# records and what the run is called.

# %%
huber_sac = types.ModuleType("huber_sac")
huber_sac.Config, huber_sac.State = Config, State
huber_sac.init, huber_sac.update, huber_sac.act = init, update, act
eqxrl.check_algorithm(huber_sac, eqxrl.loops.OffPolicyAlgorithm)

run_dir = os.path.join(tempfile.mkdtemp(), "huber-sac")
config = Config(
    run=eqxrl.OnlineRun(
        env_id="Pendulum-v1", total_steps=3_000, start_steps=1_000, eval_interval=1_000,
        eval_episodes=3, run_dir=run_dir, progress=False,
    ),
    hidden_dims=(64, 64),
)
summary = eqxrl.train_online(config, huber_sac)
eqxrl.print_summary(summary)

# %% [markdown]
# `load_policy` imports only eqxrl's own algorithm modules from a `config.json`; a run of a
# module of your own is loaded by passing the module.

# %%
policy, loaded_config = eqxrl.load_policy(run_dir, algorithm=huber_sac)
print(type(loaded_config).__name__, loaded_config.huber_delta,
      policy(np.zeros(3, np.float32)))

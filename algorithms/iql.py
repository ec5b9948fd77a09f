r"""Implicit Q-Learning (Kostrikov, Nair and Levine, 2021): offline RL without querying OOD actions.

Run:   python algorithms/iql.py --dataset data/hopper-medium-v2.hdf5
AntMaze:  python algorithms/iql.py --dataset <antmaze.hdf5> --preset antmaze --expectile 0.9 \
          --temperature 10.0
Help:  python algorithms/iql.py --help
Resume an interrupted run:  python algorithms/iql.py --resume runs/<name>

Three networks learn from dataset actions only. V(s) is fitted by expectile regression to
min_j Q̄_j(s, a) (an upper expectile approximates a max over in-distribution actions); the
twin critics regress to r + γ·(1 − terminated)·V(s'); the Gaussian actor is extracted by
advantage-weighted regression −E[min(exp(β·(min Q̄ − V)), 100)·log π(a|s)]. The actor's
learning rate follows a cosine decay to 0 over training. Defaults are those of the IQL paper
and jaxrl_m for MuJoCo locomotion (rewards scaled by 1000 / (max − min episode return)).

Offline → online: `--finetune-steps N` continues the trained agents online for N env steps
(one update each, in `<run-dir>/finetune`), half of every batch from the dataset
(`--finetune-fraction`), with the dataset's reward scaling applied to the online rewards too.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.core import at_least, layer_sizes, non_negative, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """Implicit Q-Learning on a D4RL-style offline dataset with continuous actions."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun(preset="locomotion")
    finetune: Annotated[eqxrl.Finetune, tyro.conf.arg(name="")] = eqxrl.Finetune()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of actor, critics and value network"""
    actor_lr: eqxrl.Swept[float] = 3e-4
    """initial actor learning rate (cosine-decayed to 0 over --total-updates, plus
    --finetune-steps)"""
    critic_lr: eqxrl.Swept[float] = 3e-4
    """critic learning rate"""
    value_lr: eqxrl.Swept[float] = 3e-4
    """value-network learning rate"""
    discount: eqxrl.Swept[float] = 0.99
    """discount factor γ"""
    tau: eqxrl.Swept[float] = 0.005
    """polyak rate of the target critics"""
    expectile: eqxrl.Swept[float] = 0.7
    """expectile τ of the value regression (0.5 is the mean; AntMaze uses 0.9)"""
    temperature: eqxrl.Swept[float] = 3.0
    """inverse temperature β of the advantage weights exp(β·(Q − V)) (AntMaze uses 10)"""
    max_weight: eqxrl.Swept[float] = 100.0
    """upper clip of the advantage weights"""
    num_critics: int = 2
    """critics in the ensemble (their minimum is used)"""
    log_std_min: float = -5.0
    """lower clip of the actor's learned, state-independent log-std"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "actor_lr", "critic_lr", "value_lr", "max_weight")
        non_negative(self, "temperature")
        at_least(self, 1, "num_critics")
        within(self, "expectile", 0, 1, open_low=True, open_high=True)
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(Config):
    """IQL's online fine-tuning phase (--finetune-steps): the offline run's hyperparameters with
    online run settings (`eqxrl.run.finetuning.online_settings` derives them)."""

    run: eqxrl.OnlineRun = eqxrl.OnlineRun()


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything IQL's update changes. Swept hyperparameters are array leaves."""

    actor: eqxrl.TrainState  # model: GaussianPolicy (no tanh, learned state-independent std)
    critic: eqxrl.TrainState  # model: Ensemble of QFunction
    target_critic: eqxrl.Ensemble
    value: eqxrl.TrainState  # model: ValueFunction
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    expectile: Float[Array, ""]
    temperature: Float[Array, ""]
    max_weight: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)


def _adam_cosine(learning_rate, decay_steps):
    """Adam whose step is scaled by a cosine decay from 1 to 0 over `decay_steps` updates."""
    decay = lambda count: 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(count / decay_steps, 1.0)))
    return optax.chain(optax.adam(learning_rate), optax.scale_by_schedule(decay))


# One object, so every State shares the same static field (and compiled program); the learning
# rate and the decay length live in the optimiser state as arrays.
ADAM_COSINE = optax.inject_hyperparams(_adam_cosine)(learning_rate=3e-4, decay_steps=1.0)


# ---------------------------------------------------------------------------- losses
def expectile_loss(
    diff: Float[Array, " batch"], expectile: Float[Array, ""] | float
) -> Float[Array, " batch"]:
    """|τ − 1(diff < 0)|·diff²: asymmetric squares, weight τ above and 1 − τ below zero."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def value_loss(
    value: eqxrl.ValueFunction,
    target_critic: eqxrl.Ensemble,
    batch: eqxrl.Transition,
    expectile: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Expectile regression of V(s) onto min_j Q̄_j(s, a) at dataset actions."""
    q = jnp.min(eqxrl.ensemble_q(target_critic, batch.obs, batch.action), axis=0)
    v = jax.vmap(value)(batch.obs)
    loss = jnp.mean(expectile_loss(q - v, expectile))
    return loss, {"v_mean": jnp.mean(v), "v_max": jnp.max(v), "v_min": jnp.min(v)}


def awr_weights(
    advantage: Float[Array, " batch"],
    temperature: Float[Array, ""] | float,
    max_weight: Float[Array, ""] | float,
) -> Float[Array, " batch"]:
    """min(exp(β·A), max_weight): exponentiated advantages, clipped for stability."""
    return jnp.minimum(jnp.exp(temperature * advantage), max_weight)


def actor_loss(
    actor: eqxrl.GaussianPolicy,
    obs: eqxrl.Obs,
    action: Float[Array, "batch action_dim"],
    weights: Float[Array, " batch"],
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Advantage-weighted regression: −E[w·log π(a|s)] with fixed weights w."""
    log_prob = jax.vmap(lambda o, a: actor(o).log_prob(a))(obs, action)
    loss = -jnp.mean(weights * log_prob)
    return loss, {"log_prob": jnp.mean(log_prob), "weight_mean": jnp.mean(weights),
                  "weight_max": jnp.max(weights)}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build actor, critics, target critics and value network for `spec`."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("IQL")
    spec.require_vector_obs("IQL", "algorithms/bc.py (--encoder)")
    k_actor, k_critic, k_value = jax.random.split(key, 3)
    actor = eqxrl.GaussianPolicy(
        spec.obs_dim, spec.action_dim, config.hidden_dims, tanh_squash=False,
        state_dependent_std=False, log_std_min=config.log_std_min, key=k_actor,
    )
    critic = eqxrl.q_ensemble(spec, config.hidden_dims, config.num_critics, key=k_critic)
    value = eqxrl.ValueFunction(spec.obs_dim, config.hidden_dims, key=k_value)
    return State(
        # The decay spans the offline updates and the fine-tuning steps, as in IQL's code (a
        # fine-tuning phase takes its state, schedule included, from the offline run).
        actor=eqxrl.TrainState.create(
            actor, ADAM_COSINE, learning_rate=hyper.actor_lr,
            decay_steps=float(config.run.budget + config.finetune.finetune_steps)),
        critic=eqxrl.TrainState.create(critic, eqxrl.ADAM, learning_rate=hyper.critic_lr),
        target_critic=critic,
        value=eqxrl.TrainState.create(value, eqxrl.ADAM, learning_rate=hyper.value_lr),
        discount=hyper.discount,
        tau=hyper.tau,
        expectile=hyper.expectile,
        temperature=hyper.temperature,
        max_weight=hyper.max_weight,
        spec=spec,
    )


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One IQL step: value, then actor and critics on the new value, then the targets.

    The order is the original IQL code's; `key` is unused (IQL's losses are deterministic).
    """
    eqxrl.check_one_agent(state, "iql.update")
    state.spec.check_batch(batch)
    value, value_info = state.value.apply_loss_fn(
        value_loss, state.target_critic, batch, state.expectile
    )
    q = jnp.min(eqxrl.ensemble_q(state.target_critic, batch.obs, batch.action), axis=0)
    advantage = q - jax.vmap(value.model)(batch.obs)
    weights = awr_weights(advantage, state.temperature, state.max_weight)
    actor, actor_info = state.actor.apply_loss_fn(actor_loss, batch.obs, batch.action, weights)

    next_v = jax.vmap(value.model)(batch.next_obs)
    target_q = eqxrl.td_target(batch.reward, batch.terminated, next_v, state.discount)
    critic, critic_info = state.critic.apply_loss_fn(
        eqxrl.critic_td_loss, batch.obs, batch.action, target_q
    )
    new_state = dataclasses.replace(
        state,
        actor=actor,
        critic=critic,
        target_critic=eqxrl.polyak(critic.model, state.target_critic, state.tau),
        value=value,
    )
    actor_info["advantage_mean"] = jnp.mean(advantage)
    return new_state, eqxrl.prefixed(critic=critic_info, value=value_info, actor=actor_info)


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations; `deterministic` takes the mean.

    The Gaussian is not squashed, so its samples (and mean) are clipped to the action bounds.
    """
    eqxrl.check_one_agent(state, "iql.act")
    state.spec.batch_size(obs, "obs")
    return jnp.clip(eqxrl.policy_actions(state.actor.model, obs, key, deterministic), -1.0, 1.0)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train IQL on the dataset (then online, with --finetune-steps); return the summary."""
    return eqxrl.train_offline_online(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

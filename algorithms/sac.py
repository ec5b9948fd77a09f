"""Soft Actor-Critic (Haarnoja et al., 2018), with REDQ- and DroQ-style critic options.

Run:   python algorithms/sac.py --env-id HalfCheetah-v5
Help:  python algorithms/sac.py --help
Resume an interrupted run:  python algorithms/sac.py --resume runs/<name>

Twin (or N) critics with polyak-averaged targets, a tanh-Gaussian actor and a learned
temperature. The critic target is r + γ·(1 − terminated)·(min_j Q̄_j(s', a') − α·log π(a'|s')):
time-limit truncation keeps bootstrapping. REDQ: `--num-critics 10 --num-min-critics 2 --utd 20`.
DroQ: `--critic-dropout 0.01 --critic-layer-norm --utd 20`. SimBa (Lee et al., 2025):
`--network simba` (residual actor and critics, running observation normalisation, AdamW);
resets every N updates: `--reset-interval N`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.core import at_least, layer_sizes, ordered, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """Soft Actor-Critic on a gymnasium env with continuous actions."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun()
    net: Annotated[eqxrl.Networks, tyro.conf.arg(name="")] = eqxrl.Networks()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of actor and critics (--network mlp)"""
    actor_lr: eqxrl.Swept[float] = 3e-4
    """actor learning rate"""
    critic_lr: eqxrl.Swept[float] = 3e-4
    """critic learning rate"""
    temperature_lr: eqxrl.Swept[float] = 3e-4
    """temperature learning rate"""
    discount: eqxrl.Swept[float] = 0.99
    """discount factor γ"""
    tau: eqxrl.Swept[float] = 0.005
    """polyak rate of the target critics"""
    num_critics: int = 2
    """critics in the ensemble"""
    num_min_critics: int | None = None
    """critics drawn at random for the target minimum (REDQ); None uses all of them"""
    actor_q_reduction: Literal["min", "mean"] = "min"
    """how the actor loss combines the critics (REDQ uses mean)"""
    critic_layer_norm: bool = False
    """LayerNorm in the critics (DroQ)"""
    critic_dropout: float = 0.0
    """dropout rate in the critics, also applied to the targets (DroQ uses 0.01)"""
    init_temperature: eqxrl.Swept[float] = 1.0
    """initial entropy temperature α"""
    temperature_loss: eqxrl.TemperatureLoss = "alpha"
    """how α is tuned: 'alpha' is α·(H − H̄), jaxrl_m's and the SAC paper's; 'log_alpha' is
    log α·(H − H̄), SB3's and sbx's (see eqxrl.temperature_loss)"""
    target_entropy_per_dim: eqxrl.Swept[float] = -1.0
    """target entropy per action dimension: −1 gives the usual −action_dim; jaxrl_m used −0.5"""
    backup_entropy: bool = True
    """subtract α·log π(a'|s') in the critic target"""
    log_std_min: float = -10.0
    """lower clip of the actor's log-std"""
    log_std_max: float = 2.0
    """upper clip of the actor's log-std"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "actor_lr", "critic_lr", "temperature_lr", "init_temperature")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)
        at_least(self, 1, "num_critics")
        if self.num_min_critics is not None:
            within(self, "num_min_critics", 1, self.num_critics)
        within(self, "critic_dropout", 0, 1, open_high=True)
        ordered(self, "log_std_min", "log_std_max")
        self.net.refuse_mlp_options(critic_layer_norm=self.critic_layer_norm,
                                    critic_dropout=self.critic_dropout)
        self.net.refuse_mlp_sizes(self, "hidden_dims")


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything SAC's update changes. Swept hyperparameters are array leaves."""

    actor: eqxrl.TrainState  # model: GaussianPolicy (tanh-squashed)
    critic: eqxrl.TrainState  # model: Ensemble of QFunction
    target_critic: eqxrl.Ensemble
    temperature: eqxrl.TrainState  # model: LogScalar
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    target_entropy: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)
    obs_norm: eqxrl.RunningNormalizer | None = None  # with --network simba (or --obs-norm)


# ---------------------------------------------------------------------------- losses
def critic_loss(
    critic: eqxrl.Ensemble, batch: eqxrl.Transition, target_q: Float[Array, " batch"],
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Each critic regressed to the soft TD target; `key` drives critic dropout (DroQ)."""
    return eqxrl.critic_td_loss(critic, batch.obs, batch.action, target_q, key)


def actor_loss(
    actor: eqx.Module,  # obs -> tanh-Gaussian (a GaussianPolicy, possibly behind a trunk)
    critic: eqx.Module,  # (obs, action) -> one Q per critic (an Ensemble, or one on features)
    obs: eqxrl.Obs,
    alpha: Float[Array, ""],
    key: PRNGKeyArray,
    reduction: str = "min",
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """E[α·log π(ã|s) − Q(s, ã)] with ã ~ π(·|s) reparameterised."""
    action, log_prob = eqxrl.sample_actions(actor, obs, key)
    q = eqxrl.ensemble_q(critic, obs, action)
    q = jnp.min(q, axis=0) if reduction == "min" else jnp.mean(q, axis=0)
    return jnp.mean(alpha * log_prob - q), {"entropy": -jnp.mean(log_prob)}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build actor, critics, targets and temperature for `spec`."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("SAC")
    spec.require_vector_obs("SAC", "algorithms/drq.py or dqn.py")
    k_actor, k_critic = jax.random.split(key)
    net = config.net
    actor_hidden, actor_kwargs = net.actor(config.hidden_dims, trunk=True)
    actor = eqxrl.GaussianPolicy(
        spec.obs_dim, spec.action_dim, actor_hidden, log_std_min=config.log_std_min,
        log_std_max=config.log_std_max, key=k_actor, **actor_kwargs,
    )
    critic_hidden, critic_kwargs = net.critic(
        config.hidden_dims, layer_norm=config.critic_layer_norm,
        dropout_rate=config.critic_dropout,
    )
    critic = eqxrl.q_ensemble(spec, critic_hidden, config.num_critics, key=k_critic,
                              **critic_kwargs)
    temperature = eqxrl.LogScalar.create(hyper.init_temperature)
    return State(
        actor=net.train_state(actor, hyper.actor_lr),
        critic=net.train_state(critic, hyper.critic_lr),
        target_critic=critic,
        temperature=eqxrl.TrainState.create(
            temperature, eqxrl.ADAM, learning_rate=hyper.temperature_lr
        ),
        discount=hyper.discount,
        tau=hyper.tau,
        target_entropy=jnp.float32(hyper.target_entropy_per_dim * spec.action_dim),
        spec=spec,
        obs_norm=net.obs_normalizer(spec.example_obs()),
    )


def critic_target(
    state: State, batch: eqxrl.Transition, keys: tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray],
    config: Config,
) -> Float[Array, " batch"]:
    """The soft TD target r + γ·(1 − terminated)·(min_j Q̄_j(s', a') − α·log π(a'|s')), with
    `keys` = (next action, REDQ's critic subset, target dropout)."""
    k_next, k_subset, k_target = keys
    dropout = config.critic_dropout > 0
    next_action, next_log_prob = eqxrl.sample_actions(state.actor.model, batch.next_obs, k_next)
    next_q = eqxrl.ensemble_q(
        state.target_critic, batch.next_obs, next_action, k_target if dropout else None
    )
    if config.num_min_critics is not None and config.num_min_critics < config.num_critics:
        subset = jax.random.choice(
            k_subset, config.num_critics, (config.num_min_critics,), replace=False
        )
        next_q = next_q[subset]
    next_value = jnp.min(next_q, axis=0)
    if config.backup_entropy:
        next_value = next_value - state.temperature.model() * next_log_prob
    return eqxrl.td_target(batch.reward, batch.terminated, next_value, state.discount)


def policy_step(
    state: State, critic: eqxrl.TrainState, critic_info: eqxrl.Metrics, obs: eqxrl.Obs,
    key: PRNGKeyArray, config: Config,
) -> tuple[State, eqxrl.Metrics]:
    """What follows the critics' step: the actor on the new critics, then the temperature on the
    actor's entropy, then the target critics; returns the new state and the step's metrics."""
    alpha = state.temperature.model()
    actor, actor_info = state.actor.apply_loss_fn(
        actor_loss, critic.model, obs, alpha, key, config.actor_q_reduction
    )
    temperature, temperature_info = state.temperature.apply_loss_fn(
        eqxrl.temperature_loss, jax.lax.stop_gradient(actor_info["entropy"]),
        state.target_entropy, form=config.temperature_loss,
    )
    new_state = dataclasses.replace(
        state,
        actor=actor,
        critic=critic,
        target_critic=eqxrl.polyak(critic.model, state.target_critic, state.tau),
        temperature=temperature,
    )
    temperature_info.pop("grad_norm")
    return new_state, eqxrl.prefixed(
        critic=critic_info, actor=actor_info, temperature=temperature_info
    )


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One SAC step: critics, then the actor on the new critics, then the temperature.

    An algorithm built on SAC composes the same named steps with its own critic loss (CQL):
    `critic_target`, the critics' loss, `policy_step`. With `--network simba` the batch's
    observations first update the running normaliser and are normalised by it; with
    `--reset-interval` the networks are re-initialised on schedule before the step.
    """
    eqxrl.check_one_agent(state, "sac.update")
    state.spec.check_batch(batch)
    obs_norm, batch = eqxrl.observe_batch(state.obs_norm, batch)
    state = eqxrl.scheduled_reset(dataclasses.replace(state, obs_norm=obs_norm),
                                  state.critic.step, key, config.net,
                                  lambda k: init(k, state.spec, config))
    k_next, k_subset, k_target, k_critic, k_actor = jax.random.split(key, 5)
    target_q = critic_target(state, batch, (k_next, k_subset, k_target), config)
    dropout_key = k_critic if config.critic_dropout > 0 else None
    critic, critic_info = state.critic.apply_loss_fn(critic_loss, batch, target_q, dropout_key)
    return policy_step(state, critic, critic_info, batch.obs, k_actor, config)


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations; `deterministic` takes the mode."""
    eqxrl.check_one_agent(state, "sac.act")
    state.spec.batch_size(obs, "obs")
    obs = eqxrl.normalised(state.obs_norm, obs)
    return eqxrl.policy_actions(state.actor.model, obs, key, deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train SAC online and return the run's summary."""
    return eqxrl.train_online(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

"""Conservative Q-Learning (Kumar et al., 2020), continuous actions, on top of SAC.

Run:   python algorithms/cql.py --dataset data/hopper-medium-v2.hdf5
Lagrange-tuned α (as the paper does for AntMaze):  ... --cql-lagrange --cql-target-gap 5.0
Help:  python algorithms/cql.py --help
Resume an interrupted run:  python algorithms/cql.py --resume runs/<name>

SAC's twin critics, tanh-Gaussian actor and learned entropy temperature, plus the CQL(H)
regulariser on each critic: α·(E_s[T·log Σ_k exp((Q(s, a_k) − log μ(a_k))/T)] − E_(s,a)~D[Q(s, a)]),
with a_k drawn `--num-sampled-actions` times each from Uniform[-1, 1] (log μ = log 0.5^action_dim),
from π(·|s) and from π(·|s') (log μ = log π, importance-sampled; all evaluated at s). With
`--cql-lagrange`, α is multiplied by α' ≥ 0, learned so the gap stays near `--cql-target-gap`.
Defaults follow the CQL authors' code for MuJoCo (actor lr 1e-4, critic lr 3e-4, α 5, 10 samples,
temperature 1, no entropy term in the backup), with the (256, 256) networks of eqxrl's SAC; the
paper's critics had three hidden layers (`--hidden-dims 256 256 256`).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.config import at_least, layer_sizes, non_negative, ordered, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """Conservative Q-Learning (SAC-based) on a D4RL-style offline dataset."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of actor and critics"""
    actor_lr: float = 1e-4
    """actor learning rate"""
    critic_lr: float = 3e-4
    """critic learning rate"""
    temperature_lr: float = 3e-4
    """entropy-temperature learning rate"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """polyak rate of the target critics"""
    num_critics: int = 2
    """critics in the ensemble"""
    init_temperature: float = 1.0
    """initial entropy temperature"""
    target_entropy_per_dim: float = -1.0
    """target entropy per action dimension (−action_dim in all)"""
    backup_entropy: bool = False
    """subtract the entropy term in the critic target (CQL's code uses a deterministic backup)"""
    cql_alpha: float = 5.0
    """weight α of the CQL regulariser (multiplied by the learned α' with --cql-lagrange)"""
    num_sampled_actions: int = 10
    """actions drawn from each of uniform, π(·|s) and π(·|s') per state for the logsumexp"""
    cql_temperature: float = 1.0
    """temperature T of the logsumexp over sampled actions"""
    cql_lagrange: bool = False
    """learn α' by dual gradient descent so the CQL gap tracks --cql-target-gap"""
    cql_target_gap: float = 5.0
    """target value of the CQL gap (logsumexp Q − data Q) with --cql-lagrange"""
    cql_lagrange_lr: float = 3e-4
    """learning rate of log α' with --cql-lagrange"""
    log_std_min: float = -10.0
    """lower clip of the actor's log-std"""
    log_std_max: float = 2.0
    """upper clip of the actor's log-std"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "actor_lr", "critic_lr", "temperature_lr", "init_temperature",
                 "cql_temperature", "cql_lagrange_lr")
        non_negative(self, "cql_alpha")
        at_least(self, 1, "num_critics", "num_sampled_actions")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)
        ordered(self, "log_std_min", "log_std_max")


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything CQL's update changes. Swept hyperparameters are array leaves."""

    actor: eqxrl.TrainState
    critic: eqxrl.TrainState  # model: Ensemble of QFunction
    target_critic: eqxrl.Ensemble
    temperature: eqxrl.TrainState  # model: LogScalar, the entropy temperature
    cql_multiplier: eqxrl.TrainState  # model: LogScalar, α' (stays 1 unless --cql-lagrange)
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    target_entropy: Float[Array, ""]
    cql_alpha: Float[Array, ""]
    cql_temperature: Float[Array, ""]
    cql_target_gap: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)


MAX_MULTIPLIER = 1e6  # α' is clipped to [0, 1e6], as in the CQL authors' code


# ---------------------------------------------------------------------------- losses
def cql_gap(
    critic: eqxrl.Ensemble,
    obs: eqxrl.Obs,
    q_data: Float[Array, "ensemble batch"],
    sampled_actions: Float[Array, "batch samples action_dim"],
    log_density: Float[Array, "batch samples"],
    temperature: Float[Array, ""] | float,
) -> Float[Array, " ensemble"]:
    """E_s[T·logsumexp_k((Q(s, a_k) − log μ(a_k))/T)] − E[Q(s, a_data)] for each critic."""
    q = jax.vmap(lambda o, acts: jax.vmap(lambda a: critic(o, a))(acts))(obs, sampled_actions)
    q = jnp.moveaxis(q, -1, 0)  # (ensemble, batch, samples)
    soft_max = temperature * jax.nn.logsumexp((q - log_density[None]) / temperature, axis=-1)
    return jnp.mean(soft_max, axis=1) - jnp.mean(q_data, axis=1)


def critic_loss(
    critic: eqxrl.Ensemble,
    batch: eqxrl.Transition,
    target_q: Float[Array, " batch"],
    sampled_actions: Float[Array, "batch samples action_dim"],
    log_density: Float[Array, "batch samples"],
    cql_weight: Float[Array, ""],
    target_gap: Float[Array, ""] | float,
    cql_temperature: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Σ_j [mean TD error² + w·(gap_j − target_gap)]: SAC's critic loss plus CQL's penalty."""
    q = eqxrl.ensemble_q(critic, batch.obs, batch.action)  # (ensemble, batch)
    td_loss = jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))
    gap = cql_gap(critic, batch.obs, q, sampled_actions, log_density, cql_temperature)
    loss = td_loss + cql_weight * jnp.sum(gap - target_gap)
    return loss, {"td_loss": td_loss, "cql_gap": jnp.mean(gap), "q_mean": jnp.mean(q),
                  "target_q_mean": jnp.mean(target_q)}


def actor_loss(
    actor: eqxrl.GaussianPolicy, critic: eqxrl.Ensemble, obs: eqxrl.Obs, alpha: Float[Array, ""],
    key: PRNGKeyArray,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """E[α·log π(ã|s) − min_j Q_j(s, ã)] with ã ~ π(·|s) reparameterised."""
    action, log_prob = eqxrl.sample_actions(actor, obs, key)
    q = jnp.min(eqxrl.ensemble_q(critic, obs, action), axis=0)
    loss = jnp.mean(alpha * log_prob - q)
    return loss, {"entropy": -jnp.mean(log_prob)}


def multiplier_loss(
    multiplier: eqxrl.LogScalar,
    gap: Float[Array, ""],
    cql_alpha: Float[Array, ""] | float,
    target_gap: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """−α'·α·(gap − target): α' grows while the gap exceeds its target, shrinks below it."""
    value = jnp.clip(multiplier(), 0.0, MAX_MULTIPLIER)
    return -value * cql_alpha * (gap - target_gap), {"value": value}


# ---------------------------------------------------------------------------- init / update / act
def init(key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config) -> State:
    """Build actor, critics, targets, temperature and CQL multiplier for `spec`."""
    spec.require_unit_box_actions("CQL")
    k_actor, k_critic = jax.random.split(key)
    actor = eqxrl.GaussianPolicy(
        spec.obs_dim, spec.action_dim, config.hidden_dims, log_std_min=config.log_std_min,
        log_std_max=config.log_std_max, key=k_actor,
    )
    critic = eqxrl.q_ensemble(spec, config.hidden_dims, config.num_critics, key=k_critic)
    temperature = eqxrl.LogScalar.create(config.init_temperature)
    return State(
        actor=eqxrl.TrainState.create(actor, eqxrl.ADAM, learning_rate=config.actor_lr),
        critic=eqxrl.TrainState.create(critic, eqxrl.ADAM, learning_rate=config.critic_lr),
        target_critic=critic,
        temperature=eqxrl.TrainState.create(
            temperature, eqxrl.ADAM, learning_rate=config.temperature_lr
        ),
        cql_multiplier=eqxrl.TrainState.create(
            eqxrl.LogScalar.create(1.0), eqxrl.ADAM, learning_rate=config.cql_lagrange_lr
        ),
        discount=jnp.float32(config.discount),
        tau=jnp.float32(config.tau),
        target_entropy=jnp.float32(config.target_entropy_per_dim * spec.action_dim),
        cql_alpha=jnp.float32(config.cql_alpha),
        cql_temperature=jnp.float32(config.cql_temperature),
        cql_target_gap=jnp.float32(config.cql_target_gap if config.cql_lagrange else 0.0),
        spec=spec,
    )


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One CQL step: critics (TD + CQL penalty), actor, temperature, then α' if Lagrange-tuned."""
    state.spec.check_batch(batch)
    k_next, k_random, k_curr, k_later, k_actor = jax.random.split(key, 5)
    alpha = state.temperature.model()
    n, dim, num = batch.reward.shape[0], state.spec.action_dim, config.num_sampled_actions

    next_action, next_log_prob = eqxrl.sample_actions(state.actor.model, batch.next_obs, k_next)
    next_q = eqxrl.ensemble_q(state.target_critic, batch.next_obs, next_action)
    next_value = jnp.min(next_q, axis=0)
    if config.backup_entropy:
        next_value = next_value - alpha * next_log_prob
    target_q = eqxrl.td_target(batch.reward, batch.terminated, next_value, state.discount)

    # Actions for the logsumexp, all scored at s, each with the log-density it was drawn from.
    random_actions = jax.random.uniform(k_random, (n, num, dim), minval=-1.0, maxval=1.0)
    curr_actions, curr_log_prob = eqxrl.sample_actions(state.actor.model, batch.obs, k_curr, num)
    later_actions, later_log_prob = eqxrl.sample_actions(
        state.actor.model, batch.next_obs, k_later, num
    )
    sampled = jax.lax.stop_gradient(
        jnp.concatenate([random_actions, curr_actions, later_actions], axis=1))
    log_density = jax.lax.stop_gradient(jnp.concatenate(
        [jnp.full((n, num), dim * np.log(0.5), jnp.float32), curr_log_prob, later_log_prob],
        axis=1))
    multiplier = jnp.clip(state.cql_multiplier.model(), 0.0, MAX_MULTIPLIER)
    critic, critic_info = state.critic.apply_loss_fn(
        critic_loss, batch, target_q, sampled, log_density, state.cql_alpha * multiplier,
        state.cql_target_gap, state.cql_temperature,
    )
    actor, actor_info = state.actor.apply_loss_fn(
        actor_loss, critic.model, batch.obs, alpha, k_actor
    )
    temperature, temperature_info = state.temperature.apply_loss_fn(
        eqxrl.temperature_loss, jax.lax.stop_gradient(actor_info["entropy"]),
        state.target_entropy,
    )
    new_state = dataclasses.replace(
        state,
        actor=actor,
        critic=critic,
        target_critic=eqxrl.polyak(critic.model, state.target_critic, state.tau),
        temperature=temperature,
    )
    temperature_info.pop("grad_norm")
    metrics = eqxrl.prefixed(critic=critic_info, actor=actor_info, temperature=temperature_info)
    if config.cql_lagrange:
        cql_multiplier, mult_info = state.cql_multiplier.apply_loss_fn(
            multiplier_loss, jax.lax.stop_gradient(critic_info["cql_gap"]), state.cql_alpha,
            state.cql_target_gap,
        )
        new_state = dataclasses.replace(new_state, cql_multiplier=cql_multiplier)
        mult_info.pop("grad_norm")
        metrics |= eqxrl.prefixed(cql_multiplier=mult_info)
    return new_state, metrics


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations; `deterministic` takes the mode."""
    state.spec.batch_size(obs, "obs")
    return eqxrl.policy_actions(state.actor.model, obs, key, deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train CQL on the dataset and return the run's summary."""
    return eqxrl.train_offline(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

"""Soft Actor-Critic (Haarnoja et al., 2018), with REDQ- and DroQ-style critic options.

Run:   python algorithms/sac.py --env-id HalfCheetah-v5
Help:  python algorithms/sac.py --help
Resume an interrupted run:  python algorithms/sac.py --resume runs/<name>

Twin (or N) critics with polyak-averaged targets, a tanh-Gaussian actor and a learned
temperature. The critic target is r + γ·(1 − terminated)·(min_j Q̄_j(s', a') − α·log π(a'|s')):
time-limit truncation keeps bootstrapping. REDQ: `--num-critics 10 --num-min-critics 2 --utd 20`.
DroQ: `--critic-dropout 0.01 --critic-layer-norm --utd 20`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import tyro
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from eqxrl import (
    Ensemble,
    EnvSpec,
    GaussianPolicy,
    Metrics,
    Obs,
    QFunction,
    TrainState,
    Transition,
    load_config,
    polyak,
    print_summary,
    train_online,
)


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """Soft Actor-Critic on a gymnasium env with continuous actions."""

    env_id: str = "HalfCheetah-v5"
    """gymnasium environment id (continuous actions)"""
    seed: int = 0
    """seed for network init, exploration, replay sampling and env resets"""
    total_steps: int = 1_000_000
    """environment steps to train for"""
    start_steps: int = 10_000
    """steps of uniform random actions before learning starts"""
    batch_size: int = 256
    """transitions per gradient update"""
    buffer_size: int = 1_000_000
    """replay buffer capacity"""
    utd: int = 1
    """updates per env step (update-to-data ratio), run as one compiled lax.scan"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of actor and critics"""
    actor_lr: float = 3e-4
    """actor learning rate"""
    critic_lr: float = 3e-4
    """critic learning rate"""
    temperature_lr: float = 3e-4
    """temperature learning rate"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
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
    init_temperature: float = 1.0
    """initial entropy temperature α"""
    target_entropy_per_dim: float = -1.0
    """target entropy per action dimension: −1 gives the usual −action_dim; jaxrl_m used −0.5"""
    backup_entropy: bool = True
    """subtract α·log π(a'|s') in the critic target"""
    log_std_min: float = -10.0
    """lower clip of the actor's log-std"""
    log_std_max: float = 2.0
    """upper clip of the actor's log-std"""
    eval_interval: int = 10_000
    """env steps between evaluations"""
    eval_episodes: int = 10
    """episodes per evaluation (run as one vectorised env)"""
    log_interval: int = 1_000
    """env steps between training-metric logs"""
    checkpoint_interval: int = 50_000
    """env steps between checkpoints"""
    keep_checkpoints: int = 2
    """how many recent checkpoints to keep"""
    run_dir: str | None = None
    """output folder; default runs/sac__<env>__s<seed>__<time>"""
    resume: str | None = None
    """a run folder to continue from its newest checkpoint (its saved config is used)"""
    tensorboard: bool = True
    """write TensorBoard events"""
    wandb: bool = False
    """also log to Weights & Biases (pip install 'eqxrl[wandb]')"""
    nan_check: bool = False
    """stop with an error naming the metric and step when a loss becomes NaN or inf"""
    progress: bool = True
    """show a progress bar and evaluation lines"""

    def __post_init__(self):
        positive = (
            "total_steps",
            "batch_size",
            "buffer_size",
            "utd",
            "num_critics",
            "eval_interval",
            "eval_episodes",
            "log_interval",
            "checkpoint_interval",
            "keep_checkpoints",
            "start_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}."
                )
        for name in ("actor_lr", "critic_lr", "temperature_lr", "init_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}."
                )
        if not 0 < self.tau <= 1:
            raise ValueError(f"--tau must be in (0, 1], got {self.tau}.")
        if not 0 <= self.discount <= 1:
            raise ValueError(f"--discount must be in [0, 1], got {self.discount}.")
        if self.batch_size > self.buffer_size:
            raise ValueError(
                f"--batch-size ({self.batch_size}) must not exceed "
                f"--buffer-size ({self.buffer_size})."
            )
        m = self.num_min_critics
        if m is not None and not 1 <= m <= self.num_critics:
            raise ValueError(f"--num-min-critics must be in [1, {self.num_critics}], got {m}.")
        if not 0 <= self.critic_dropout < 1:
            raise ValueError(f"--critic-dropout must be in [0, 1), got {self.critic_dropout}.")
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"--hidden-dims must be positive sizes, got {self.hidden_dims}.")


# ---------------------------------------------------------------------------- state
class Temperature(eqx.Module):
    """The entropy temperature α, learned in log space."""

    log_value: Float[Array, ""]

    def __call__(self) -> Float[Array, ""]:
        return jnp.exp(self.log_value)


class State(eqx.Module):
    """Everything SAC's update changes. Swept hyperparameters are array leaves."""

    actor: TrainState
    critic: TrainState  # model: Ensemble of QFunction
    target_critic: Ensemble
    temperature: TrainState  # model: Temperature
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    target_entropy: Float[Array, ""]
    spec: EnvSpec = eqx.field(static=True)


# One optimiser object, so every State shares the same static field (and compiled program);
# learning rates are set per TrainState and live in the optimiser state.
ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)


# ---------------------------------------------------------------------------- losses
def td_target(
    reward: Float[Array, " batch"],
    terminated: Bool[Array, " batch"],
    next_value: Float[Array, " batch"],
    discount: Float[Array, ""] | float,
) -> Float[Array, " batch"]:
    """r + γ·(1 − terminated)·V(s'): truncated episodes keep bootstrapping."""
    return reward + discount * jnp.where(terminated, 0.0, next_value)


def sample_actions(
    actor: GaussianPolicy, obs: Obs, key: PRNGKeyArray
) -> tuple[Float[Array, "batch action_dim"], Float[Array, " batch"]]:
    """Sample an action and its log-probability for each observation of a batch."""
    n = jax.tree.leaves(obs)[0].shape[0]
    return jax.vmap(lambda o, k: actor(o).sample_and_log_prob(seed=k))(
        obs, jax.random.split(key, n)
    )


def ensemble_q(critic: Ensemble, obs: Obs, action, key=None) -> Float[Array, "ensemble batch"]:
    """Q-values of every critic on a batch; `key` enables dropout."""
    if key is None:
        return jax.vmap(critic, out_axes=1)(obs, action)
    keys = jax.random.split(key, action.shape[0])
    return jax.vmap(lambda o, a, k: critic(o, a, key=k), out_axes=1)(obs, action, keys)


def critic_loss(
    critic: Ensemble, batch: Transition, target_q: Float[Array, " batch"], key=None
) -> tuple[Float[Array, ""], Metrics]:
    """Mean squared TD error of each critic, summed over the ensemble."""
    q = ensemble_q(critic, batch.obs, batch.action, key)  # (ensemble, batch)
    loss = jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))
    return loss, {"q_mean": jnp.mean(q), "target_q_mean": jnp.mean(target_q)}


def actor_loss(
    actor: GaussianPolicy,
    critic: Ensemble,
    obs: Obs,
    alpha: Float[Array, ""],
    key: PRNGKeyArray,
    reduction: str = "min",
) -> tuple[Float[Array, ""], Metrics]:
    """E[α·log π(ã|s) − Q(s, ã)] with ã ~ π(·|s) reparameterised."""
    action, log_prob = sample_actions(actor, obs, key)
    q = ensemble_q(critic, obs, action)
    q = jnp.min(q, axis=0) if reduction == "min" else jnp.mean(q, axis=0)
    loss = jnp.mean(alpha * log_prob - q)
    return loss, {"entropy": -jnp.mean(log_prob)}


def temperature_loss(
    temperature: Temperature, entropy: Float[Array, ""], target_entropy: Float[Array, ""]
) -> tuple[Float[Array, ""], Metrics]:
    """α·(H − H_target): raises α when the policy's entropy falls below the target."""
    alpha = temperature()
    return alpha * (entropy - target_entropy), {"value": alpha}


# ---------------------------------------------------------------------------- init / update / act
def init(key: PRNGKeyArray, spec: EnvSpec, config: Config) -> State:
    """Build actor, critics, targets and temperature for `spec`."""
    spec.require_unit_box_actions("SAC")
    k_actor, k_critic = jax.random.split(key)
    actor = GaussianPolicy(
        spec.obs_dim,
        spec.action_dim,
        config.hidden_dims,
        log_std_min=config.log_std_min,
        log_std_max=config.log_std_max,
        key=k_actor,
    )
    critic = Ensemble(
        lambda k: QFunction(
            spec.obs_dim,
            spec.action_dim,
            config.hidden_dims,
            layer_norm=config.critic_layer_norm,
            dropout_rate=config.critic_dropout,
            key=k,
        ),
        config.num_critics,
        key=k_critic,
    )
    log_alpha = jnp.log(jnp.asarray(config.init_temperature, jnp.float32))
    return State(
        actor=TrainState.create(actor, ADAM, learning_rate=config.actor_lr),
        critic=TrainState.create(critic, ADAM, learning_rate=config.critic_lr),
        target_critic=critic,
        temperature=TrainState.create(
            Temperature(log_alpha), ADAM, learning_rate=config.temperature_lr
        ),
        discount=jnp.asarray(config.discount, jnp.float32),
        tau=jnp.asarray(config.tau, jnp.float32),
        target_entropy=jnp.asarray(config.target_entropy_per_dim * spec.action_dim, jnp.float32),
        spec=spec,
    )


def update(
    state: State, batch: Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, Metrics]:
    """One SAC step: critics, then the actor on the new critics, then the temperature."""
    state.spec.check_batch(batch)
    k_next, k_subset, k_target, k_critic, k_actor = jax.random.split(key, 5)
    dropout = config.critic_dropout > 0
    alpha = state.temperature.model()

    next_action, next_log_prob = sample_actions(state.actor.model, batch.next_obs, k_next)
    next_q = ensemble_q(
        state.target_critic, batch.next_obs, next_action, k_target if dropout else None
    )
    if config.num_min_critics is not None and config.num_min_critics < config.num_critics:
        subset = jax.random.choice(
            k_subset, config.num_critics, (config.num_min_critics,), replace=False
        )
        next_q = next_q[subset]
    next_value = jnp.min(next_q, axis=0)
    if config.backup_entropy:
        next_value = next_value - alpha * next_log_prob
    target_q = td_target(batch.reward, batch.terminated, next_value, state.discount)

    critic, critic_info = state.critic.apply_loss_fn(
        critic_loss, batch, target_q, k_critic if dropout else None
    )
    actor, actor_info = state.actor.apply_loss_fn(
        actor_loss, critic.model, batch.obs, alpha, k_actor, config.actor_q_reduction
    )
    temperature, temp_info = state.temperature.apply_loss_fn(
        temperature_loss, jax.lax.stop_gradient(actor_info["entropy"]), state.target_entropy
    )
    new_state = dataclasses.replace(
        state,
        actor=actor,
        critic=critic,
        target_critic=polyak(critic.model, state.target_critic, state.tau),
        temperature=temperature,
    )
    metrics = {f"critic/{k}": v for k, v in critic_info.items()}
    metrics |= {f"actor/{k}": v for k, v in actor_info.items()}
    metrics |= {f"temperature/{k}": v for k, v in temp_info.items() if k != "grad_norm"}
    return new_state, metrics


def act(
    state: State, obs: Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations; `deterministic` takes the mode."""
    (n,) = state.spec.obs_batch_shape(obs, "obs")
    if deterministic:
        return jax.vmap(lambda o: state.actor.model(o).mode())(obs)
    return jax.vmap(lambda o, k: state.actor.model(o).sample(seed=k))(obs, jax.random.split(key, n))


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train SAC online, print a summary, and return it."""
    resume = config.resume is not None
    if resume:
        config = dataclasses.replace(load_config(Config, config.resume), resume=None)
    summary = train_online(config, init=init, update=update, act=act, algo="sac", resume=resume)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main(tyro.cli(Config))

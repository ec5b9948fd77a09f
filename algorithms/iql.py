"""Implicit Q-Learning (Kostrikov, Nair and Levine, 2021): offline RL without querying OOD actions.

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
    ValueFunction,
    datasets,
    load_config,
    polyak,
    print_summary,
    train_offline,
)


# ---------------------------------------------------------------------------- config
def _flag(field: str) -> str:
    """The command-line flag of a Config field: `actor_lr` -> `--actor-lr`."""
    return "--" + field.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Config:
    """Implicit Q-Learning on a D4RL-style offline dataset with continuous actions."""

    dataset: str = ""
    """path to a D4RL-style HDF5 dataset (required unless --resume)"""
    env_id: str | None = None
    """gymnasium env for evaluation; None reads it from the dataset's metadata"""
    preset: Literal["locomotion", "antmaze", "none"] = "locomotion"
    """data preprocessing: locomotion scales rewards by 1000/(max−min episode return), antmaze
    subtracts 1 from rewards; both clip actions to ±(1 − 1e-5)"""
    seed: int = 0
    """seed for network init, batch sampling and evaluation"""
    total_updates: int = 1_000_000
    """gradient updates to train for (the actor's cosine decay reaches 0 here)"""
    batch_size: int = 256
    """transitions per gradient update"""
    updates_per_call: int = 1_000
    """updates per compiled call (a lax.scan that samples its batches inside)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of actor, critics and value network"""
    actor_lr: float = 3e-4
    """initial actor learning rate (cosine-decayed to 0 over --total-updates)"""
    critic_lr: float = 3e-4
    """critic learning rate"""
    value_lr: float = 3e-4
    """value-network learning rate"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """polyak rate of the target critics"""
    expectile: float = 0.7
    """expectile τ of the value regression (0.5 is the mean; AntMaze uses 0.9)"""
    temperature: float = 3.0
    """inverse temperature β of the advantage weights exp(β·(Q − V)) (AntMaze uses 10)"""
    max_weight: float = 100.0
    """upper clip of the advantage weights"""
    num_critics: int = 2
    """critics in the ensemble (their minimum is used)"""
    log_std_min: float = -5.0
    """lower clip of the actor's learned, state-independent log-std"""
    eval_interval: int = 5_000
    """updates between evaluations"""
    eval_episodes: int = 10
    """episodes per evaluation (run as one vectorised env)"""
    log_interval: int = 1_000
    """updates between training-metric logs"""
    checkpoint_interval: int = 100_000
    """updates between checkpoints"""
    keep_checkpoints: int = 2
    """how many recent checkpoints to keep"""
    run_dir: str | None = None
    """output folder; default runs/iql__<env>__s<seed>__<time>"""
    resume: str | None = None
    """a run folder to continue from its newest checkpoint (its saved config is used)"""
    tensorboard: bool = True
    """write TensorBoard events"""
    wandb: bool = False
    """also log to Weights & Biases (pip install 'eqxrl[wandb]')"""
    nan_check: bool = False
    """stop with an error naming the metric and update when a loss becomes NaN or inf"""
    progress: bool = True
    """show a progress bar and evaluation lines"""

    def __post_init__(self):
        if not self.dataset and self.resume is None:
            raise ValueError("--dataset is required (a D4RL-style HDF5 file), got ''.")
        positive = ("total_updates", "batch_size", "updates_per_call", "num_critics",
                    "eval_interval", "eval_episodes", "log_interval", "checkpoint_interval",
                    "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}.")
        for name in ("actor_lr", "critic_lr", "value_lr", "max_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{_flag(name)} must be > 0, got {getattr(self, name)}.")
        if not self.temperature >= 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.expectile < 1:
            raise ValueError(f"--expectile must be in (0, 1), got {self.expectile}.")
        if not 0 < self.tau <= 1:
            raise ValueError(f"--tau must be in (0, 1], got {self.tau}.")
        if not 0 <= self.discount <= 1:
            raise ValueError(f"--discount must be in [0, 1], got {self.discount}.")
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"--hidden-dims must be positive sizes, got {self.hidden_dims}.")


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything IQL's update changes. Swept hyperparameters are array leaves."""

    actor: TrainState  # model: GaussianPolicy (no tanh, learned state-independent std)
    critic: TrainState  # model: Ensemble of QFunction
    target_critic: Ensemble
    value: TrainState  # model: ValueFunction
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    expectile: Float[Array, ""]
    temperature: Float[Array, ""]
    max_weight: Float[Array, ""]
    spec: EnvSpec = eqx.field(static=True)


def _adam_cosine(learning_rate, decay_steps):
    """Adam whose step is scaled by a cosine decay from 1 to 0 over `decay_steps` updates."""
    decay = lambda count: 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(count / decay_steps, 1.0)))
    return optax.chain(optax.adam(learning_rate), optax.scale_by_schedule(decay))


# One optimiser object each, so every State shares the same static fields (and compiled
# program); learning rates and the decay length live in the optimiser state as arrays.
ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)
ADAM_COSINE = optax.inject_hyperparams(_adam_cosine)(learning_rate=3e-4, decay_steps=1.0)


# ---------------------------------------------------------------------------- losses
def td_target(
    reward: Float[Array, " batch"],
    terminated: Bool[Array, " batch"],
    next_value: Float[Array, " batch"],
    discount: Float[Array, ""] | float,
) -> Float[Array, " batch"]:
    """r + γ·(1 − terminated)·V(s'): truncated episodes keep bootstrapping."""
    return reward + discount * jnp.where(terminated, 0.0, next_value)


def ensemble_q(critic: Ensemble, obs: Obs, action) -> Float[Array, "ensemble batch"]:
    """Q-values of every critic on a batch."""
    return jax.vmap(critic, out_axes=1)(obs, action)


def expectile_loss(
    diff: Float[Array, " batch"], expectile: Float[Array, ""] | float
) -> Float[Array, " batch"]:
    """|τ − 1(diff < 0)|·diff²: asymmetric squares, weight τ above and 1 − τ below zero."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff**2


def value_loss(
    value: ValueFunction,
    target_critic: Ensemble,
    batch: Transition,
    expectile: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], Metrics]:
    """Expectile regression of V(s) onto min_j Q̄_j(s, a) at dataset actions."""
    q = jnp.min(ensemble_q(target_critic, batch.obs, batch.action), axis=0)
    v = jax.vmap(value)(batch.obs)
    loss = jnp.mean(expectile_loss(q - v, expectile))
    return loss, {"v_mean": jnp.mean(v), "v_max": jnp.max(v), "v_min": jnp.min(v)}


def critic_loss(
    critic: Ensemble, batch: Transition, target_q: Float[Array, " batch"]
) -> tuple[Float[Array, ""], Metrics]:
    """Mean squared TD error of each critic, summed over the ensemble."""
    q = ensemble_q(critic, batch.obs, batch.action)  # (ensemble, batch)
    loss = jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))
    return loss, {"q_mean": jnp.mean(q), "target_q_mean": jnp.mean(target_q)}


def awr_weights(
    advantage: Float[Array, " batch"],
    temperature: Float[Array, ""] | float,
    max_weight: Float[Array, ""] | float,
) -> Float[Array, " batch"]:
    """min(exp(β·A), max_weight): exponentiated advantages, clipped for stability."""
    return jnp.minimum(jnp.exp(temperature * advantage), max_weight)


def actor_loss(
    actor: GaussianPolicy,
    obs: Obs,
    action: Float[Array, "batch action_dim"],
    weights: Float[Array, " batch"],
) -> tuple[Float[Array, ""], Metrics]:
    """Advantage-weighted regression: −E[w·log π(a|s)] with fixed weights w."""
    log_prob = jax.vmap(lambda o, a: actor(o).log_prob(a))(obs, action)
    loss = -jnp.mean(weights * log_prob)
    return loss, {"log_prob": jnp.mean(log_prob), "weight_mean": jnp.mean(weights),
                  "weight_max": jnp.max(weights)}


# ---------------------------------------------------------------------------- init / update / act
def init(key: PRNGKeyArray, spec: EnvSpec, config: Config) -> State:
    """Build actor, critics, target critics and value network for `spec`."""
    spec.require_unit_box_actions("IQL")
    k_actor, k_critic, k_value = jax.random.split(key, 3)
    actor = GaussianPolicy(
        spec.obs_dim, spec.action_dim, config.hidden_dims, tanh_squash=False,
        state_dependent_std=False, log_std_min=config.log_std_min, key=k_actor,
    )
    critic = Ensemble(
        lambda k: QFunction(spec.obs_dim, spec.action_dim, config.hidden_dims, key=k),
        config.num_critics,
        key=k_critic,
    )
    value = ValueFunction(spec.obs_dim, config.hidden_dims, key=k_value)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return State(
        actor=TrainState.create(actor, ADAM_COSINE, learning_rate=config.actor_lr,
                                decay_steps=float(config.total_updates)),
        critic=TrainState.create(critic, ADAM, learning_rate=config.critic_lr),
        target_critic=critic,
        value=TrainState.create(value, ADAM, learning_rate=config.value_lr),
        discount=f32(config.discount),
        tau=f32(config.tau),
        expectile=f32(config.expectile),
        temperature=f32(config.temperature),
        max_weight=f32(config.max_weight),
        spec=spec,
    )


def update(
    state: State, batch: Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, Metrics]:
    """One IQL step: value, then actor and critics on the new value, then the targets.

    The order is the original IQL code's; `key` is unused (IQL's losses are deterministic).
    """
    state.spec.check_batch(batch)
    value, value_info = state.value.apply_loss_fn(
        value_loss, state.target_critic, batch, state.expectile
    )
    q = jnp.min(ensemble_q(state.target_critic, batch.obs, batch.action), axis=0)
    advantage = q - jax.vmap(value.model)(batch.obs)
    weights = awr_weights(advantage, state.temperature, state.max_weight)
    actor, actor_info = state.actor.apply_loss_fn(actor_loss, batch.obs, batch.action, weights)

    next_v = jax.vmap(value.model)(batch.next_obs)
    target_q = td_target(batch.reward, batch.terminated, next_v, state.discount)
    critic, critic_info = state.critic.apply_loss_fn(critic_loss, batch, target_q)
    new_state = dataclasses.replace(
        state,
        actor=actor,
        critic=critic,
        target_critic=polyak(critic.model, state.target_critic, state.tau),
        value=value,
    )
    metrics = {f"critic/{k}": v for k, v in critic_info.items()}
    metrics |= {f"value/{k}": v for k, v in value_info.items()}
    metrics |= {f"actor/{k}": v for k, v in actor_info.items()}
    metrics["actor/advantage_mean"] = jnp.mean(advantage)
    return new_state, metrics


def act(
    state: State, obs: Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations; `deterministic` takes the mean.

    The Gaussian is not squashed, so its samples (and mean) are clipped to the action bounds.
    """
    (n,) = state.spec.obs_batch_shape(obs, "obs")
    if deterministic:
        action = jax.vmap(lambda o: state.actor.model(o).mode())(obs)
    else:
        keys = jax.random.split(key, n)
        action = jax.vmap(lambda o, k: state.actor.model(o).sample(seed=k))(obs, keys)
    return jnp.clip(action, -1.0, 1.0)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train IQL on the dataset, print a summary, and return it."""
    resume = config.resume is not None
    if resume:
        config = dataclasses.replace(load_config(Config, config.resume), resume=None)
    dataset, info = datasets.load_dataset(config.dataset)
    dataset = datasets.preprocess(dataset, config.preset)
    if config.env_id is None:
        config = dataclasses.replace(config, env_id=info.env_id)
    summary = train_offline(config, dataset, init=init, update=update, act=act, algo="iql",
                            resume=resume, reference=info.reference)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main(tyro.cli(Config))

"""TD3+BC (Fujimoto and Gu, 2021): TD3 with a behaviour-cloning term and normalised states.

Run:   python algorithms/td3_bc.py --dataset data/hopper-medium-v2.hdf5
Help:  python algorithms/td3_bc.py --help
Resume an interrupted run:  python algorithms/td3_bc.py --resume runs/<name>

TD3's twin critics regress to r + γ·(1 − terminated)·min_j Q̄_j(s', clip(μ̄(s') + ε, −1, 1)) with
target-policy smoothing noise ε = clip(N(0, σ²), −c, c). Every `--policy-delay` updates the
deterministic tanh actor minimises −λ·E[Q_1(s, μ(s))] + E[(μ(s) − a)²] with λ = α / E|Q_1(s, μ(s))|
(λ treated as a constant), and the target networks move. Observations are normalised with the
dataset's mean and std; the statistics live in the `State` (so checkpoints carry them) and are
applied in both `update` and `act`. Defaults are the paper's (α 2.5, σ 0.2, c 0.5, delay 2,
lr 3e-4, 256×256 networks, batch 256, 1M updates; rewards left as they are).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import tyro
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from eqxrl import (
    MLP,
    Ensemble,
    EnvSpec,
    Metrics,
    Normalizer,
    Obs,
    QFunction,
    TrainState,
    Transition,
    datasets,
    flatten_obs,
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
    """TD3+BC on a D4RL-style offline dataset with continuous actions."""

    dataset: str = ""
    """path to a D4RL-style HDF5 dataset (required unless --resume)"""
    env_id: str | None = None
    """gymnasium env for evaluation; None reads it from the dataset's metadata"""
    preset: Literal["locomotion", "antmaze", "none"] = "none"
    """data preprocessing: locomotion scales rewards by 1000/(max−min episode return), antmaze
    subtracts 1 from rewards; both clip actions to ±(1 − 1e-5)"""
    seed: int = 0
    """seed for network init, batch sampling and evaluation"""
    total_updates: int = 1_000_000
    """gradient updates to train for (critic updates; the actor updates every --policy-delay)"""
    batch_size: int = 256
    """transitions per gradient update"""
    updates_per_call: int = 1_000
    """updates per compiled call (a lax.scan that samples its batches inside)"""
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of actor and critics"""
    actor_lr: float = 3e-4
    """actor learning rate"""
    critic_lr: float = 3e-4
    """critic learning rate"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """polyak rate of the target actor and critics"""
    alpha: float = 2.5
    """α of λ = α / E|Q|: the weight of the Q term against the BC term"""
    policy_noise: float = 0.2
    """std σ of the target-policy smoothing noise"""
    noise_clip: float = 0.5
    """the smoothing noise is clipped to ±noise_clip"""
    policy_delay: int = 2
    """critic updates per actor (and target) update"""
    normalize_obs: bool = True
    """normalise observations with the dataset's mean and std"""
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
    """output folder; default runs/td3_bc__<env>__s<seed>__<time>"""
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
        positive = ("total_updates", "batch_size", "updates_per_call", "policy_delay",
                    "eval_interval", "eval_episodes", "log_interval", "checkpoint_interval",
                    "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}.")
        for name in ("actor_lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{_flag(name)} must be > 0, got {getattr(self, name)}.")
        for name in ("alpha", "policy_noise", "noise_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{_flag(name)} must be >= 0, got {getattr(self, name)}.")
        if not 0 < self.tau <= 1:
            raise ValueError(f"--tau must be in (0, 1], got {self.tau}.")
        if not 0 <= self.discount <= 1:
            raise ValueError(f"--discount must be in [0, 1], got {self.discount}.")
        if not self.hidden_dims or min(self.hidden_dims) < 1:
            raise ValueError(f"--hidden-dims must be positive sizes, got {self.hidden_dims}.")


# ---------------------------------------------------------------------------- state
class DeterministicActor(eqx.Module):
    """μ(s) = tanh(MLP(s)): a deterministic policy with actions in [-1, 1]."""

    net: MLP

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], *, key: PRNGKeyArray):
        self.net = MLP(obs_dim, action_dim, hidden, key=key)

    def __call__(self, obs: Obs) -> Float[Array, " action_dim"]:
        return jnp.tanh(self.net(flatten_obs(obs)))


class State(eqx.Module):
    """Everything TD3+BC's update changes. Swept hyperparameters are array leaves."""

    actor: TrainState  # model: DeterministicActor
    target_actor: DeterministicActor
    critic: TrainState  # model: Ensemble of QFunction
    target_critic: Ensemble
    obs_norm: Normalizer  # dataset statistics, applied in update and act
    step: Int[Array, ""]  # critic updates so far; the actor moves when step % delay == 0
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    alpha: Float[Array, ""]
    policy_noise: Float[Array, ""]
    noise_clip: Float[Array, ""]
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


def ensemble_q(critic: Ensemble, obs: Obs, action) -> Float[Array, "ensemble batch"]:
    """Q-values of every critic on a batch."""
    return jax.vmap(critic, out_axes=1)(obs, action)


def smoothed_target_action(
    target_actor: DeterministicActor,
    next_obs: Obs,
    key: PRNGKeyArray,
    policy_noise: Float[Array, ""] | float,
    noise_clip: Float[Array, ""] | float,
) -> Float[Array, "batch action_dim"]:
    """clip(μ̄(s') + clip(σ·N(0, 1), −c, c), −1, 1): TD3's target-policy smoothing."""
    action = jax.vmap(target_actor)(next_obs)
    noise = jnp.clip(policy_noise * jax.random.normal(key, action.shape), -noise_clip, noise_clip)
    return jnp.clip(action + noise, -1.0, 1.0)


def critic_loss(
    critic: Ensemble, obs: Obs, action, target_q: Float[Array, " batch"]
) -> tuple[Float[Array, ""], Metrics]:
    """Mean squared TD error of each critic, summed over the ensemble."""
    q = ensemble_q(critic, obs, action)  # (ensemble, batch)
    loss = jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))
    return loss, {"q_mean": jnp.mean(q), "target_q_mean": jnp.mean(target_q)}


def actor_loss(
    actor: DeterministicActor,
    critic: Ensemble,
    obs: Obs,
    action: Float[Array, "batch action_dim"],
    alpha: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], Metrics]:
    """−λ·E[Q_1(s, μ(s))] + E[(μ(s) − a)²], λ = α / E|Q_1(s, μ(s))| without gradient."""
    pi = jax.vmap(actor)(obs)
    q = ensemble_q(critic, obs, pi)[0]  # the first critic only, as in TD3
    lam = jax.lax.stop_gradient(alpha / jnp.mean(jnp.abs(q)))
    bc = jnp.mean((pi - action) ** 2)
    return -lam * jnp.mean(q) + bc, {"lambda": lam, "bc_mse": bc, "q_mean": jnp.mean(q)}


# ---------------------------------------------------------------------------- init / update / act
def init(key: PRNGKeyArray, spec: EnvSpec, config: Config) -> State:
    """Build actor, critics and their targets for `spec`; the normaliser starts as identity.

    `main` replaces `obs_norm` with the dataset's statistics.
    """
    spec.require_unit_box_actions("TD3+BC")
    k_actor, k_critic = jax.random.split(key)
    actor = DeterministicActor(spec.obs_dim, spec.action_dim, config.hidden_dims, key=k_actor)
    critic = Ensemble(
        lambda k: QFunction(spec.obs_dim, spec.action_dim, config.hidden_dims, key=k), 2,
        key=k_critic,
    )
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    return State(
        actor=TrainState.create(actor, ADAM, learning_rate=config.actor_lr),
        target_actor=actor,
        critic=TrainState.create(critic, ADAM, learning_rate=config.critic_lr),
        target_critic=critic,
        obs_norm=Normalizer.identity(spec.example_obs()),
        step=jnp.zeros((), jnp.int32),
        discount=f32(config.discount),
        tau=f32(config.tau),
        alpha=f32(config.alpha),
        policy_noise=f32(config.policy_noise),
        noise_clip=f32(config.noise_clip),
        spec=spec,
    )


def update(
    state: State, batch: Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, Metrics]:
    """One TD3+BC step: critics always; actor and targets every `policy_delay` steps.

    The actor step is computed every time and kept only on delayed steps (`jnp.where`), so
    the update is one program without branches and vmaps over seeds unchanged.
    """
    state.spec.check_batch(batch)
    obs, next_obs = state.obs_norm(batch.obs), state.obs_norm(batch.next_obs)
    next_action = smoothed_target_action(
        state.target_actor, next_obs, key, state.policy_noise, state.noise_clip
    )
    next_value = jnp.min(ensemble_q(state.target_critic, next_obs, next_action), axis=0)
    target_q = td_target(batch.reward, batch.terminated, next_value, state.discount)
    critic, critic_info = state.critic.apply_loss_fn(critic_loss, obs, batch.action, target_q)

    step = state.step + 1
    delayed = step % config.policy_delay == 0
    keep_if = lambda new, old: jax.tree.map(lambda n, o: jnp.where(delayed, n, o), new, old)
    actor, actor_info = state.actor.apply_loss_fn(
        actor_loss, critic.model, obs, batch.action, state.alpha
    )
    new_state = dataclasses.replace(
        state,
        actor=keep_if(actor, state.actor),
        target_actor=keep_if(polyak(actor.model, state.target_actor, state.tau),
                             state.target_actor),
        critic=critic,
        target_critic=keep_if(polyak(critic.model, state.target_critic, state.tau),
                              state.target_critic),
        step=step,
    )
    metrics = {f"critic/{k}": v for k, v in critic_info.items()}
    metrics |= {f"actor/{k}": v for k, v in actor_info.items()}
    return new_state, metrics


def act(
    state: State, obs: Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations, normalised as in training.

    The policy is deterministic: `key` and `deterministic` change nothing.
    """
    state.spec.obs_batch_shape(obs, "obs")
    return jax.vmap(state.actor.model)(state.obs_norm(obs))


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train TD3+BC on the dataset, print a summary, and return it."""
    resume = config.resume is not None
    if resume:
        config = dataclasses.replace(load_config(Config, config.resume), resume=None)
    dataset, info = datasets.load_dataset(config.dataset)
    dataset = datasets.preprocess(dataset, config.preset)
    if config.env_id is None:
        config = dataclasses.replace(config, env_id=info.env_id)
    obs_norm = datasets.obs_normalizer(dataset) if config.normalize_obs else None

    def init_with_stats(key: PRNGKeyArray, spec: EnvSpec, config: Config) -> State:
        state = init(key, spec, config)
        return state if obs_norm is None else dataclasses.replace(state, obs_norm=obs_norm)

    summary = train_offline(config, dataset, init=init_with_stats, update=update, act=act,
                            algo="td3_bc", resume=resume, reference=info.reference)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    main(tyro.cli(Config))

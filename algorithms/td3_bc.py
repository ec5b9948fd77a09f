"""TD3+BC (Fujimoto and Gu, 2021): TD3 with a behaviour-cloning term and normalised states.

Run:   python algorithms/td3_bc.py --dataset data/hopper-medium-v2.hdf5
Help:  python algorithms/td3_bc.py --help
Resume an interrupted run:  python algorithms/td3_bc.py --resume runs/<name>

TD3's twin critics regress to r + γ·(1 − terminated)·min_j Q̄_j(s', clip(μ̄(s') + ε, −1, 1)) with
target-policy smoothing noise ε = clip(N(0, σ²), −c, c). Every `--policy-delay` updates the
deterministic tanh actor minimises −λ·E[Q_1(s, μ(s))] + E[(μ(s) − a)²] with λ = α / E|Q_1(s, μ(s))|
(λ treated as a constant), and the target networks move. Observations are normalised with the
dataset's mean and std, computed in `init` (the loop hands it the dataset); the statistics live
in the `State` (so checkpoints carry them) and are applied in both `update` and `act`.
Defaults are the paper's (α 2.5, σ 0.2, c 0.5, delay 2, lr 3e-4, 256×256 networks, batch 256,
1M updates; rewards left as they are).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import tyro
from jaxtyping import Array, Float, Int, PRNGKeyArray

import eqxrl
from eqxrl.config import at_least, layer_sizes, non_negative, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """TD3+BC on a D4RL-style offline dataset with continuous actions."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun()
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
    """critic updates (--total-updates counts these) per actor and target update"""
    normalize_obs: bool = True
    """normalise observations with the dataset's mean and std"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "actor_lr", "critic_lr")
        at_least(self, 1, "policy_delay")
        non_negative(self, "alpha", "policy_noise", "noise_clip")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything TD3+BC's update changes. Swept hyperparameters are array leaves."""

    actor: eqxrl.TrainState  # model: DeterministicPolicy
    target_actor: eqxrl.DeterministicPolicy
    critic: eqxrl.TrainState  # model: Ensemble of two QFunctions
    target_critic: eqxrl.Ensemble
    obs_norm: eqxrl.Normalizer  # dataset statistics, applied in update and act
    actor_info: eqxrl.Metrics  # of the latest actor update, which runs every policy_delay
    step: Int[Array, ""]  # critic updates so far
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    alpha: Float[Array, ""]
    policy_noise: Float[Array, ""]
    noise_clip: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)


# ---------------------------------------------------------------------------- losses
def actor_loss(
    actor: eqxrl.DeterministicPolicy,
    critic: eqxrl.Ensemble,
    obs: eqxrl.Obs,
    action: Float[Array, "batch action_dim"],
    alpha: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """−λ·E[Q_1(s, μ(s))] + E[(μ(s) − a)²], λ = α / E|Q_1(s, μ(s))| without gradient."""
    pi = jax.vmap(actor)(obs)
    q = eqxrl.ensemble_q(critic, obs, pi)[0]  # the first critic only, as in TD3
    lam = jax.lax.stop_gradient(alpha / jnp.mean(jnp.abs(q)))
    bc = jnp.mean((pi - action) ** 2)
    return -lam * jnp.mean(q) + bc, {"lambda": lam, "bc_mse": bc, "q_mean": jnp.mean(q)}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, dataset: eqxrl.Dataset | None = None
) -> State:
    """Build actor, twin critics and their targets for `spec`.

    The observation normaliser holds `dataset`'s statistics (with --normalize-obs), else it is
    the identity.
    """
    spec.require_unit_box_actions("TD3+BC")
    k_actor, k_critic = jax.random.split(key)
    actor = eqxrl.DeterministicPolicy(spec.obs_dim, spec.action_dim, config.hidden_dims,
                                      key=k_actor)
    critic = eqxrl.q_ensemble(spec, config.hidden_dims, key=k_critic)
    if config.normalize_obs and dataset is not None:
        obs_norm = eqxrl.datasets.obs_normalizer(dataset)
    else:
        obs_norm = eqxrl.Normalizer.identity(spec.example_obs())
    return State(
        actor=eqxrl.TrainState.create(actor, eqxrl.ADAM, learning_rate=config.actor_lr),
        target_actor=actor,
        critic=eqxrl.TrainState.create(critic, eqxrl.ADAM, learning_rate=config.critic_lr),
        target_critic=critic,
        obs_norm=obs_norm,
        actor_info={k: jnp.float32(0) for k in ("loss", "grad_norm", "lambda", "bc_mse", "q_mean")},
        step=jnp.int32(0),
        discount=jnp.float32(config.discount),
        tau=jnp.float32(config.tau),
        alpha=jnp.float32(config.alpha),
        policy_noise=jnp.float32(config.policy_noise),
        noise_clip=jnp.float32(config.noise_clip),
        spec=spec,
    )


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One TD3+BC step: the critics; every `policy_delay` steps the actor and the targets."""
    state.spec.check_batch(batch)
    obs, next_obs = state.obs_norm(batch.obs), state.obs_norm(batch.next_obs)
    next_action = eqxrl.smoothed_target_action(
        state.target_actor, next_obs, key, state.policy_noise, state.noise_clip
    )
    next_q = eqxrl.ensemble_q(state.target_critic, next_obs, next_action)
    target_q = eqxrl.td_target(batch.reward, batch.terminated, jnp.min(next_q, axis=0),
                               state.discount)
    critic, critic_info = state.critic.apply_loss_fn(
        eqxrl.critic_td_loss, obs, batch.action, target_q
    )

    def delayed():  # the actor on the new critics, then both targets
        actor, info = state.actor.apply_loss_fn(
            actor_loss, critic.model, obs, batch.action, state.alpha
        )
        return (actor, eqxrl.polyak(actor.model, state.target_actor, state.tau),
                eqxrl.polyak(critic.model, state.target_critic, state.tau), info)

    step = state.step + 1
    keep = (state.actor, state.target_actor, state.target_critic, state.actor_info)
    actor, target_actor, target_critic, actor_info = eqxrl.every(
        config.policy_delay, step, delayed, keep
    )
    new_state = dataclasses.replace(state, actor=actor, target_actor=target_actor, critic=critic,
                                    target_critic=target_critic, actor_info=actor_info, step=step)
    return new_state, eqxrl.prefixed(critic=critic_info, actor=actor_info)


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations, normalised as in training.

    The policy is deterministic: `key` and `deterministic` change nothing.
    """
    state.spec.batch_size(obs, "obs")
    return jax.vmap(state.actor.model)(state.obs_norm(obs))


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train TD3+BC on the dataset and return the run's summary."""
    return eqxrl.train_offline(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

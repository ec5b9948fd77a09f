"""TD3: Twin Delayed DDPG (Fujimoto, van Hoof and Meger, 2018), online.

Run:   python algorithms/td3.py --env-id HalfCheetah-v5
Help:  python algorithms/td3.py --help
Resume an interrupted run:  python algorithms/td3.py --resume runs/<name>

Twin critics regress to r + γ·(1 − terminated)·min_j Q̄_j(s', clip(μ̄(s') + ε, −1, 1)), with
target-policy smoothing noise ε = clip(N(0, σ²), −c, c). Every `--policy-delay` critic updates
the deterministic tanh actor maximises Q_1(s, μ(s)) and the targets move. Exploration adds
N(0, 0.1²) to μ(s) in `act`. Defaults are the paper's (σ 0.2, c 0.5, delay 2) with the
authors' updated settings (lr 3e-4, 256×256, batch 256, 25k random steps). SimBa networks:
`--network simba`; resets every N updates: `--reset-interval N`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import tyro
from jaxtyping import Array, Float, Int, PRNGKeyArray

import eqxrl
from eqxrl.core import at_least, layer_sizes, non_negative, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """TD3 on a gymnasium env with continuous actions."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun(start_steps=25_000)
    net: Annotated[eqxrl.Networks, tyro.conf.arg(name="")] = eqxrl.Networks()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of actor and critics (--network mlp)"""
    actor_lr: eqxrl.Swept[float] = 3e-4
    """actor learning rate"""
    critic_lr: eqxrl.Swept[float] = 3e-4
    """critic learning rate"""
    discount: eqxrl.Swept[float] = 0.99
    """discount factor γ"""
    tau: eqxrl.Swept[float] = 0.005
    """polyak rate of the target actor and critics"""
    policy_noise: eqxrl.Swept[float] = 0.2
    """std σ of the target-policy smoothing noise"""
    noise_clip: eqxrl.Swept[float] = 0.5
    """the smoothing noise is clipped to ±noise_clip"""
    policy_delay: int = 2
    """critic updates per actor (and target) update"""
    exploration_noise: eqxrl.Swept[float] = 0.1
    """std of the Gaussian noise `act` adds to μ(s) while training"""
    critic_layer_norm: bool = False
    """LayerNorm in the critics' hidden layers (ReBRAC)"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "actor_lr", "critic_lr")
        at_least(self, 1, "policy_delay")
        non_negative(self, "policy_noise", "noise_clip", "exploration_noise")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)
        self.net.refuse_mlp_sizes(self, "hidden_dims")
        self.net.refuse_mlp_options(critic_layer_norm=self.critic_layer_norm)


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything TD3's update changes. Swept hyperparameters are array leaves."""

    actor: eqxrl.TrainState  # model: DeterministicPolicy
    target_actor: eqxrl.DeterministicPolicy
    critic: eqxrl.TrainState  # model: Ensemble of two QFunctions
    target_critic: eqxrl.Ensemble
    actor_info: eqxrl.Metrics  # of the latest actor update, which runs every policy_delay
    step: Int[Array, ""]  # critic updates so far
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    policy_noise: Float[Array, ""]
    noise_clip: Float[Array, ""]
    exploration_noise: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)
    obs_norm: eqxrl.RunningNormalizer | None = None  # with --network simba (or --obs-norm)


# ---------------------------------------------------------------------------- losses
def actor_loss(
    actor: eqxrl.DeterministicPolicy, critic: eqxrl.Ensemble, obs: eqxrl.Obs
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """−E[Q_1(s, μ(s))]: the deterministic policy gradient through the first critic."""
    q = eqxrl.ensemble_q(critic, obs, jax.vmap(actor)(obs))[0]
    return -jnp.mean(q), {"q_mean": jnp.mean(q)}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build actor, twin critics and their targets for `spec`."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("TD3")
    spec.require_vector_obs("TD3", "algorithms/drq.py or dqn.py")
    k_actor, k_critic = jax.random.split(key)
    net = config.net
    actor_hidden, actor_kwargs = net.actor(config.hidden_dims, trunk=False)
    actor = eqxrl.DeterministicPolicy(spec.obs_dim, spec.action_dim, actor_hidden, key=k_actor,
                                      **actor_kwargs)
    critic_hidden, critic_kwargs = net.critic(config.hidden_dims,
                                              layer_norm=config.critic_layer_norm)
    critic = eqxrl.q_ensemble(spec, critic_hidden, key=k_critic, **critic_kwargs)
    return State(
        actor=net.train_state(actor, hyper.actor_lr),
        target_actor=actor,
        critic=net.train_state(critic, hyper.critic_lr),
        target_critic=critic,
        actor_info={k: jnp.float32(0) for k in ("loss", "grad_norm", "q_mean")},
        step=jnp.int32(0),
        discount=hyper.discount,
        tau=hyper.tau,
        policy_noise=hyper.policy_noise,
        noise_clip=hyper.noise_clip,
        exploration_noise=hyper.exploration_noise,
        spec=spec,
        obs_norm=net.obs_normalizer(spec.example_obs()),
    )


def critic_target(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray
) -> Float[Array, " batch"]:
    """The TD target r + γ·(1 − terminated)·min_j Q̄_j(s', ã'), ã' the smoothed target action."""
    next_action = eqxrl.smoothed_target_action(
        state.target_actor, batch.next_obs, key, state.policy_noise, state.noise_clip
    )
    next_q = eqxrl.ensemble_q(state.target_critic, batch.next_obs, next_action)
    return eqxrl.td_target(batch.reward, batch.terminated, jnp.min(next_q, axis=0),
                           state.discount)


def critic_step(
    state: State, batch: eqxrl.Transition, target_q: Float[Array, " batch"]
) -> tuple[eqxrl.TrainState, eqxrl.Metrics]:
    """Both critics regressed to the target."""
    return state.critic.apply_loss_fn(eqxrl.critic_td_loss, batch.obs, batch.action, target_q)


def delayed_step(
    state: State, critic: eqxrl.TrainState, critic_info: eqxrl.Metrics, config: Config,
    actor_step: Callable[[], tuple[eqxrl.TrainState, eqxrl.Metrics]],
) -> tuple[State, eqxrl.Metrics]:
    """What follows the critics' step: every `policy_delay` steps, `actor_step()` (the actor on
    the new critics) and both targets; the step counter. Returns the new state and metrics
    (on skipped steps the latest actor metrics, so logs show the last actor update)."""

    def delayed():
        actor, info = actor_step()
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


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One TD3 step: the critics; every `policy_delay` steps the actor and the targets.

    An algorithm built on TD3 composes the same named steps with its own actor loss (TD3+BC):
    `critic_target`, `critic_step`, `delayed_step`; the State's `actor_info` holds its metrics.
    With `--network simba` the batch first moves the running observation statistics and is
    normalised by them; with `--reset-interval` the networks are re-initialised on schedule.
    """
    eqxrl.check_one_agent(state, "td3.update")
    state.spec.check_batch(batch)
    obs_norm, batch = eqxrl.observe_batch(state.obs_norm, batch)
    state = eqxrl.scheduled_reset(dataclasses.replace(state, obs_norm=obs_norm), state.step,
                                  key, config.net, lambda k: init(k, state.spec, config))
    critic, critic_info = critic_step(state, batch, critic_target(state, batch, key))
    return delayed_step(state, critic, critic_info, config, lambda: state.actor.apply_loss_fn(
        actor_loss, critic.model, batch.obs))


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """μ(s) for a batch of observations, plus exploration noise unless `deterministic`."""
    eqxrl.check_one_agent(state, "td3.act")
    state.spec.batch_size(obs, "obs")
    action = jax.vmap(state.actor.model)(eqxrl.normalised(state.obs_norm, obs))
    if deterministic:
        return action
    noise = state.exploration_noise * jax.random.normal(key, action.shape)
    return jnp.clip(action + noise, -1.0, 1.0)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train TD3 online and return the run's summary."""
    return eqxrl.train_online(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

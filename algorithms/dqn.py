r"""Deep Q-Networks (Mnih et al., 2015), with double Q-learning and n-step returns.

Run:   python algorithms/dqn.py --env-id CartPole-v1
       python algorithms/dqn.py --env-id gymnax:CartPole-v1     (compiled with the env)
Atari (pip install 'eqxrl[atari]'; 84×84×4 frames, each stored once in the replay):
       python algorithms/dqn.py --env-id ALE/Pong-v5 --clip-rewards --update-every 4 \
           --n-step 1 --loss huber --learning-rate 1e-4 --buffer-size 1000000 \
           --start-steps 50000 --batch-size 32 --target-update-interval 2000 \
           --epsilon-end 0.01 --epsilon-decay-steps 1000000 --total-steps 10000000
Help:  python algorithms/dqn.py --help

One Q-network with one output per action and a target network, copied every
`target_update_interval` updates (`--tau 1`, the default) or polyak-averaged towards it
(`--tau 0.005 --target-update-interval 1`). The target of a sampled n-step window is
Σ_k γ^k r_k + γ^m (1 − terminated) Q̄(s_m, a*), with a* = argmax_a Q(s_m, a) (double DQN) or
argmax_a Q̄(s_m, a); windows stop at episode ends, so time-limit truncation keeps
bootstrapping. Huber (the default) or squared TD error. Exploration is ε-greedy with ε decayed
linearly over *env steps* (the loop gives `act` the env step). Image observations (uint8,
channels last, alone or in a dict beside vectors) go through an image encoder, the Nature-DQN
torso by default.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import tyro
from jaxtyping import Array, Float, Int, PRNGKeyArray

import eqxrl
from eqxrl.core import at_least, layer_sizes, non_negative, only_with, ordered, positive, within
from eqxrl.data import FrameReplayBuffer
from eqxrl.vision import EncoderConfig, encoded

# Adam behind a global-norm clip, both injected hyperparameters (a grid may vary either).
OPTIMISER = optax.inject_hyperparams(
    lambda learning_rate, max_grad_norm: optax.chain(
        optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))
)(learning_rate=1e-4, max_grad_norm=10.0)


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """DQN on a gymnasium or JAX-native env with discrete actions."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun(
        env_id="CartPole-v1", total_steps=100_000, start_steps=1_000, batch_size=128,
        buffer_size=100_000, update_every=1, eval_interval=10_000)
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the Q-network (after the image encoder for pixels)"""
    vision: Annotated[EncoderConfig, tyro.conf.arg(name="")] = EncoderConfig("atari")
    """the image encoder (atari: the Nature-DQN torso with its 512 features)"""
    learning_rate: eqxrl.Swept[float] = 5e-4
    """Adam learning rate"""
    max_grad_norm: float = 10.0
    """global gradient-norm clip"""
    discount: eqxrl.Swept[float] = 0.99
    """discount factor γ"""
    n_step: int = 3
    """steps of reward in a target (1: one-step DQN); windows stop at episode ends"""
    double_q: bool = True
    """choose the bootstrap action with the online network (double DQN)"""
    loss: Literal["huber", "mse"] = "huber"
    """TD-error loss: Huber (quadratic within ±huber_delta) or squared error"""
    huber_delta: float = 1.0
    """where the Huber loss turns linear"""
    target_update_interval: int = 500
    """updates between target-network updates"""
    tau: eqxrl.Swept[float] = 1.0
    """fraction of the online weights mixed into the target at each target update (1: copy)"""
    epsilon_start: eqxrl.Swept[float] = 1.0
    """ε of ε-greedy exploration at env step 0"""
    epsilon_end: eqxrl.Swept[float] = 0.02
    """ε after the decay"""
    epsilon_decay_steps: eqxrl.Swept[int] = 20_000
    """env steps over which ε falls linearly from epsilon_start to epsilon_end"""
    clip_rewards: bool = False
    """learn from the sign of each reward (Atari's usual setting; logged returns stay raw)"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "learning_rate", "max_grad_norm", "huber_delta")
        non_negative(self, "epsilon_start", "epsilon_end")
        at_least(self, 1, "n_step", "target_update_interval", "epsilon_decay_steps")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)
        within(self, "epsilon_start", 0, 1)
        within(self, "epsilon_end", 0, 1)
        ordered(self, "epsilon_end", "epsilon_start")  # ε falls, from start to end
        only_with(self, self.loss == "huber", "--loss huber", "huber_delta")


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything DQN's update changes. Swept hyperparameters are array leaves."""

    q: eqxrl.TrainState  # model: DiscreteQFunction, behind an image torso for pixels
    target_q: eqx.Module
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    epsilon_start: Float[Array, ""]
    epsilon_end: Float[Array, ""]
    epsilon_decay_steps: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)


def q_network(spec: eqxrl.EnvSpec, config: Config, *, key: PRNGKeyArray) -> eqx.Module:
    """Q(s, ·): an MLP with one output per action, behind `config.vision` for image
    observations (uint8, channels last; in a dict beside vectors too)."""
    k_encoder, k_head = jax.random.split(key)
    config.vision.refuse_without_images(spec, Config.__dataclass_fields__["vision"].default)
    return encoded(
        spec, lambda dim: eqxrl.DiscreteQFunction(dim, spec.num_actions, config.hidden_dims,
                                                  key=k_head),
        key=k_encoder, **config.vision.options())


# ---------------------------------------------------------------------------- losses
def td_loss(
    q: eqx.Module, batch: eqxrl.NStepTransition, target: Float[Array, " batch"],
    loss: str = "huber", delta: float = 1.0,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Mean Huber (δ) or squared error between Q(s, a) and the target."""
    _, q_taken = eqxrl.discrete_q(q, batch.obs, batch.action)
    error = q_taken - target
    if loss == "huber":
        value = jnp.mean(optax.huber_loss(q_taken, target, delta=delta))
    else:
        value = jnp.mean(jnp.square(error))
    return value, {"q_mean": jnp.mean(q_taken), "td_abs": jnp.mean(jnp.abs(error))}


def q_target(
    state: State, batch: eqxrl.NStepTransition, double_q: bool
) -> Float[Array, " batch"]:
    """Σ_k γ^k r_k + γ^m (1 − terminated) Q̄(s_m, a*): the n-step double-DQN target."""
    returns, bootstrap = batch.returns(state.discount)
    next_target = jax.vmap(state.target_q)(batch.next_obs)
    chooser = jax.vmap(state.q.model)(batch.next_obs) if double_q else next_target
    best = jnp.argmax(chooser, axis=1)
    next_value = jnp.take_along_axis(next_target, best[:, None], axis=1)[:, 0]
    return jax.lax.stop_gradient(returns + bootstrap * next_value)


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build the Q-network and its target for `spec` (discrete actions only)."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    if not spec.discrete:
        raise ValueError(
            f"DQN needs a discrete action space, but the env has continuous actions of shape "
            f"{spec.action_shape}; use algorithms/sac.py or td3.py for continuous control.")
    q = q_network(spec, config, key=key)
    return State(
        q=eqxrl.TrainState.create(q, OPTIMISER, learning_rate=hyper.learning_rate,
                                  max_grad_norm=config.max_grad_norm),
        target_q=q,
        discount=hyper.discount,
        tau=hyper.tau,
        epsilon_start=hyper.epsilon_start,
        epsilon_end=hyper.epsilon_end,
        epsilon_decay_steps=jnp.float32(hyper.epsilon_decay_steps),
        spec=spec,
    )


def sample_batch(
    buffer: eqxrl.ReplayBuffer | FrameReplayBuffer, key: PRNGKeyArray, batch_size: int,
    config: Config,
) -> eqxrl.NStepTransition:
    """The loops draw DQN's batches as n-step windows (ordinary transitions for n = 1)."""
    return buffer.sample_n_step(key, batch_size, config.n_step)


def update(
    state: State, batch: eqxrl.NStepTransition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One DQN step on a batch of n-step windows; every `target_update_interval` updates, the
    target moves towards the online network by `tau`."""
    del key  # DQN's update is deterministic given the batch
    eqxrl.check_one_agent(state, "dqn.update")
    state.spec.check_batch(batch)
    if config.clip_rewards:
        batch = eqx.tree_at(lambda b: b.rewards, batch, jnp.sign(batch.rewards))
    target = q_target(state, batch, config.double_q)
    q, info = state.q.apply_loss_fn(td_loss, batch, target, config.loss, config.huber_delta)
    target_q = eqxrl.every(config.target_update_interval, q.step,
                           lambda: eqxrl.polyak(q.model, state.target_q, state.tau),
                           state.target_q)
    info["target_mean"] = jnp.mean(target)
    return dataclasses.replace(state, q=q, target_q=target_q), eqxrl.prefixed(q=info)


def epsilon(state: State, env_step: Int[Array, ""] | int) -> Float[Array, ""]:
    """ε at `env_step`: linear from epsilon_start to epsilon_end over epsilon_decay_steps."""
    done = jnp.clip(jnp.asarray(env_step, jnp.float32) / state.epsilon_decay_steps, 0.0, 1.0)
    return state.epsilon_start + done * (state.epsilon_end - state.epsilon_start)


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False,
    env_step: Int[Array, ""] | int | None = None,
) -> Int[Array, " batch"]:
    """Greedy actions when `deterministic`; else ε-greedy with ε at `env_step` (the loops
    give it; without it, ε is epsilon_end)."""
    eqxrl.check_one_agent(state, "dqn.act")
    size = state.spec.batch_size(obs, "obs")
    greedy = eqxrl.greedy_actions(state.q.model, obs)
    if deterministic:
        return greedy
    eps = state.epsilon_end if env_step is None else epsilon(state, env_step)
    k_explore, k_action = jax.random.split(key)
    explore = jax.random.uniform(k_explore, (size,)) < eps
    random = jax.random.randint(k_action, (size,), 0, state.spec.num_actions, jnp.int32)
    return jnp.where(explore, random, greedy)


# ---------------------------------------------------------------------------- main
def explore(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, env_step: Int[Array, ""]
) -> Int[Array, " batch"]:
    """The loops' action choice while training: ε-greedy with ε at `env_step`."""
    return act(state, obs, key, env_step=env_step)


def main(config: Config) -> dict:
    """Train DQN online and return the run's summary."""
    hooks = eqxrl.OffPolicyHooks(explore=explore, sample_batch=sample_batch)
    return eqxrl.train_online(config, sys.modules[__name__], hooks)


if __name__ == "__main__":
    eqxrl.cli(main, Config)

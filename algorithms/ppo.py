"""Proximal Policy Optimization (Schulman et al., 2017), discrete and continuous actions.

Run:   python algorithms/ppo.py --env-id CartPole-v1             (gymnasium vector envs)
       python algorithms/ppo.py --env-id gymnax:CartPole-v1      (compiled with the env)
Help:  python algorithms/ppo.py --help

Separate actor and critic MLPs (tanh), one Adam over both with global-norm clipping. Each
rollout of --num-envs × --num-steps transitions gives GAE(λ) advantages (a truncated episode
bootstraps from its final observation), then `update_epochs` passes over `num_minibatches`
shuffled minibatches of the clipped surrogate + value loss − entropy bonus. Value clipping,
advantage normalisation and learning-rate annealing are options. Continuous actions: a
Gaussian with a state-independent log-std, clipped to [-1, 1] by the loop (the rollout keeps
the sample); discrete actions: a categorical.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Any

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.core import (
    ConfigError,
    at_least,
    changed_flags,
    layer_sizes,
    non_negative,
    positive,
    within,
)

# Adam behind a global-norm clip, both as injected hyperparameters (array leaves of the
# optimiser state: the learning rate is annealed there, and a grid may vary either).
OPTIMISER = optax.inject_hyperparams(
    lambda learning_rate, max_grad_norm: optax.chain(
        optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate, eps=1e-5))
)(learning_rate=2.5e-4, max_grad_norm=0.5)


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """PPO on a gymnasium or JAX-native env, discrete or continuous actions."""

    run: Annotated[eqxrl.OnPolicyRun, tyro.conf.arg(name="")] = eqxrl.OnPolicyRun()
    hidden_dims: tuple[int, ...] = (64, 64)
    """hidden layer sizes of actor and critic"""
    learning_rate: eqxrl.Swept[float] = 2.5e-4
    """Adam learning rate (at the start, when annealed)"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the run's rollouts (a run extended with
    --resume --total-steps follows the schedule of its new budget from where it is)"""
    discount: eqxrl.Swept[float] = 0.99
    """discount factor γ"""
    gae_lambda: eqxrl.Swept[float] = 0.95
    """λ of generalised advantage estimation"""
    update_epochs: int = 4
    """passes over each rollout"""
    num_minibatches: int = 4
    """minibatches per pass (each num_envs × num_steps / num_minibatches transitions)"""
    clip_coef: eqxrl.Swept[float] = 0.2
    """ε of the clipped surrogate objective"""
    clip_vloss: bool = True
    """clip the value update around the rollout's values by ε (pessimistic max)"""
    norm_adv: bool = True
    """normalise advantages per minibatch"""
    ent_coef: eqxrl.Swept[float] = 0.01
    """entropy bonus coefficient"""
    vf_coef: eqxrl.Swept[float] = 0.5
    """value loss coefficient"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    init_log_std: float = 0.0
    """initial log-std of the Gaussian policy (continuous actions)"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "learning_rate", "clip_coef", "max_grad_norm")
        non_negative(self, "ent_coef", "vf_coef")
        within(self, "discount", 0, 1)
        within(self, "gae_lambda", 0, 1)
        at_least(self, 1, "update_epochs", "num_minibatches")
        size = self.run.num_envs * self.run.num_steps
        if self.run.resume is None and size % self.num_minibatches:
            raise ConfigError(
                f"--num-minibatches {self.num_minibatches} does not divide a rollout of "
                f"{size} transitions (--num-envs {self.run.num_envs} × --num-steps "
                f"{self.run.num_steps}): choose a divisor of {size}."
            )


# ---------------------------------------------------------------------------- networks
class Actor(eqx.Module):
    """π(·|s) for a batch of observations: a categorical over `num_actions`, or a Gaussian with
    a learned state-independent log-std."""

    net: eqxrl.MLP
    log_std: Float[Array, " action_dim"] | None

    def __init__(self, spec: eqxrl.EnvSpec, hidden: tuple[int, ...], init_log_std: Any, *,
                 key: PRNGKeyArray):
        out = spec.num_actions if spec.discrete else spec.action_dim
        self.net = eqxrl.MLP(spec.obs_dim, out, hidden, activation=jnp.tanh,
                             final_init_scale=0.01, key=key)
        self.log_std = None if spec.discrete else jnp.full(
            (spec.action_dim,), init_log_std, jnp.float32)

    def __call__(self, obs: eqxrl.Obs) -> distrax.Distribution:
        """The policy on a batch of observations (built outside any vmap: distrax
        distributions do not batch under one)."""
        out = jax.vmap(lambda o: self.net(eqxrl.flatten_obs(o)))(obs)
        if self.log_std is None:
            return distrax.Categorical(logits=out)
        return distrax.MultivariateNormalDiag(out, jnp.broadcast_to(jnp.exp(self.log_std),
                                                                    out.shape))


class ActorCritic(eqx.Module):
    """The two networks PPO trains with one optimiser."""

    actor: Actor
    critic: eqxrl.ValueFunction


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything PPO's update changes. Swept hyperparameters are array leaves."""

    agent: eqxrl.TrainState  # model: ActorCritic
    learning_rate: Float[Array, ""]
    discount: Float[Array, ""]
    gae_lambda: Float[Array, ""]
    clip_coef: Float[Array, ""]
    ent_coef: Float[Array, ""]
    vf_coef: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)


# ---------------------------------------------------------------------------- losses
def loss(
    model: ActorCritic, batch: eqxrl.Rollout, advantage: Float[Array, " batch"],
    target: Float[Array, " batch"], state: State, clip_vloss: bool,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Clipped surrogate + vf_coef · value loss − ent_coef · entropy on a flat minibatch."""
    dist = model.actor(batch.obs)
    log_prob, entropy = dist.log_prob(batch.action), jnp.mean(dist.entropy())
    policy_loss, info = eqxrl.clipped_policy_loss(log_prob, batch.aux["log_prob"], advantage,
                                                  state.clip_coef)
    value = jax.vmap(model.critic)(batch.obs)
    v_loss = eqxrl.value_loss(value, batch.aux["value"], target,
                              state.clip_coef if clip_vloss else None)
    total = policy_loss + state.vf_coef * v_loss - state.ent_coef * entropy
    return total, {"policy_loss": policy_loss, "value_loss": v_loss, "entropy": entropy, **info}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build actor, critic and their optimiser for `spec`."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    if not spec.discrete:
        spec.require_unit_box_actions("PPO")
    elif changed_flags(config, "init_log_std"):
        raise ValueError(
            f"--init-log-std {config.init_log_std} has no effect with discrete actions (a "
            "categorical policy has no std): drop it.")
    spec.require_vector_obs("PPO", "algorithms/dqn.py or drq.py")
    k_actor, k_critic = jax.random.split(key)
    model = ActorCritic(
        Actor(spec, config.hidden_dims, config.init_log_std, key=k_actor),
        eqxrl.ValueFunction(spec.obs_dim, config.hidden_dims, activation=jnp.tanh, key=k_critic),
    )
    agent = eqxrl.TrainState.create(model, OPTIMISER, learning_rate=hyper.learning_rate,
                                    max_grad_norm=config.max_grad_norm)
    return State(
        agent=agent, learning_rate=hyper.learning_rate,
        discount=hyper.discount, gae_lambda=hyper.gae_lambda,
        clip_coef=hyper.clip_coef, ent_coef=hyper.ent_coef,
        vf_coef=hyper.vf_coef, spec=spec,
    )


def explore(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray
) -> tuple[Array, dict[str, Float[Array, " batch"]]]:
    """Sampled actions for a batch of observations, with their log-probs and values."""
    eqxrl.check_one_agent(state, "ppo.explore")
    state.spec.batch_size(obs, "obs")
    model = state.agent.model
    dist = model.actor(obs)
    action = dist.sample(seed=key)
    return action, {"log_prob": dist.log_prob(action),
                    "value": jax.vmap(model.critic)(obs)}


def update(
    state: State, rollout: eqxrl.Rollout, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """GAE on the rollout, then `update_epochs` passes of `num_minibatches` minibatches."""
    eqxrl.check_one_agent(state, "ppo.update")
    state.spec.obs_batch_shape(rollout.obs, "rollout.obs")
    model = state.agent.model
    next_value = jax.vmap(jax.vmap(model.critic))(rollout.next_obs)
    advantage, target = eqxrl.gae(rollout.reward, rollout.aux["value"], next_value,
                                  rollout.terminated, rollout.truncated, state.discount,
                                  state.gae_lambda)
    size = rollout.reward.size
    flat = jax.tree.map(lambda x: x.reshape(size, *x.shape[2:]),
                        (rollout, advantage, target))
    agent = state.agent
    if config.anneal_lr:  # linear to 0 over the run's rollouts
        rollouts = config.run.budget // config.run.rollout_size
        per_rollout = config.update_epochs * config.num_minibatches
        done = agent.step // per_rollout
        rate = state.learning_rate * (1.0 - done / rollouts)
        agent = dataclasses.replace(agent, opt_state=optax.tree_utils.tree_set(
            agent.opt_state, learning_rate=rate))

    def minibatch(agent, indices):
        batch, adv, tgt = jax.tree.map(lambda x: x[indices], flat)
        if config.norm_adv:
            adv = (adv - jnp.mean(adv)) / (jnp.std(adv) + 1e-8)
        return agent.apply_loss_fn(loss, batch, adv, tgt, state, config.clip_vloss)

    def epoch(agent, k):
        order = jax.random.permutation(k, size).reshape(config.num_minibatches, -1)
        return jax.lax.scan(minibatch, agent, order)

    agent, metrics = jax.lax.scan(epoch, agent, jax.random.split(key, config.update_epochs))
    metrics = {k: jnp.mean(v) for k, v in metrics.items()}
    explained = 1.0 - jnp.var(target - rollout.aux["value"]) / (jnp.var(target) + 1e-8)
    metrics |= {"explained_variance": explained,
                "learning_rate": optax.tree_utils.tree_get(agent.opt_state, "learning_rate")}
    return dataclasses.replace(state, agent=agent), metrics


def act(state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False) -> Array:
    """Actions for a batch of observations: sampled, or the mode when `deterministic`;
    continuous actions clipped to [-1, 1]."""
    eqxrl.check_one_agent(state, "ppo.act")
    state.spec.batch_size(obs, "obs")
    dist = state.agent.model.actor(obs)
    action = dist.mode() if deterministic else dist.sample(seed=key)
    return action if state.spec.discrete else jnp.clip(action, -1.0, 1.0)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train PPO and return the run's summary."""
    return eqxrl.train_on_policy(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

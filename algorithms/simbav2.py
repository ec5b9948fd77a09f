"""SimbaV2 (Lee et al., ICML 2025: "Hyperspherical Normalization for Scalable Deep Reinforcement
Learning"), with the defaults of the authors' code (dojeon-ai/SimbaV2: configs/agent/simbaV2.yaml
and its MuJoCo settings).

Run:   python algorithms/simbav2.py --env-id HalfCheetah-v5
Help:  python algorithms/simbav2.py --help
Resume an interrupted run:  python algorithms/simbav2.py --resume runs/<name>

SAC on hyperspherical networks (`eqxrl.HyperTrunk`): every hidden feature and every weight row
is a unit vector, and the weights are projected back onto the sphere after each step. The
critic is categorical: logits over 101 return values in [−5, 5], trained by cross-entropy
against the projected target r + γ·(1 − terminated)·(z − α·log π(a'|s')). With clipped double Q
(the default, the authors' choice for episodic tasks such as MuJoCo) the target distribution
is, per example, that of whichever of the two target critics expects less. Rewards are divided
by the running scale of the discounted return (`eqxrl.ReturnScaler`) and observations are
normalised by running statistics; both move once per env step, random steps included, through
the loops' `observe` hook. The update order is the authors': actor, temperature, then the
critic against the new actor, then the target critic. Adam without weight decay, learning rate
1e-4 decaying linearly to 5e-5 over the run's updates; temperature from 0.01, target entropy
−|A|/2; actor 1 block × 128, critic 2 blocks × 512, batch 256, 5,000 random steps, UTD 2 (the
paper's MuJoCo results; the authors' code defaults to 1). γ 0.995 is what the authors' rule
(T/5 − 1)/(T/5), clipped to [0.95, 0.995], gives for T = 1000-step episodes: use --discount
0.975 for 200-step ones such as Pendulum.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.core import ConfigError, at_least, ordered, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """SimbaV2 on a gymnasium env with continuous actions."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun(
        utd=2, start_steps=5_000)
    actor_width: int = 128
    """width of the actor's hyperspherical blocks"""
    actor_blocks: int = 1
    """residual blocks of the actor"""
    critic_width: int = 512
    """width of each critic's hyperspherical blocks"""
    critic_blocks: int = 2
    """residual blocks of each critic"""
    c_shift: float = 3.0
    """constant appended to the (normalised) input before its projection onto the sphere"""
    num_bins: int = 101
    """return values of the categorical critic"""
    g_max: float = 5.0
    """the critic's support is [−g_max, g_max], and rewards are scaled so that no discounted
    return seen exceeds it"""
    clipped_double_q: bool = True
    """two critics, the target from the one expecting less (the authors' setting for episodic
    tasks); off: one critic (theirs for DeepMind Control)"""
    lr: eqxrl.Swept[float] = 1e-4
    """initial learning rate of actor, critics and temperature"""
    lr_end: float = 5e-5
    """learning rate reached, linearly, at the run's last update"""
    discount: eqxrl.Swept[float] = 0.995
    """discount factor γ (0.995 for 1000-step episodes; 0.975 for 200-step ones)"""
    tau: eqxrl.Swept[float] = 0.005
    """polyak rate of the target critics"""
    init_temperature: eqxrl.Swept[float] = 0.01
    """initial entropy temperature α"""
    target_entropy_per_dim: eqxrl.Swept[float] = -0.5
    """target entropy per action dimension (−0.5: −|A|/2)"""
    obs_norm: bool = True
    """normalise observations by running statistics of every observation acted on"""
    reward_scale: bool = True
    """divide rewards by the running scale of the discounted return (`eqxrl.ReturnScaler`)"""
    log_std_min: float = -10.0
    """lower end of the actor's log-std range"""
    log_std_max: float = 2.0
    """upper end of the actor's log-std range"""

    def __post_init__(self):
        at_least(self, 1, "actor_width", "actor_blocks", "critic_width", "critic_blocks")
        at_least(self, 2, "num_bins")
        positive(self, "c_shift", "g_max", "lr", "lr_end", "init_temperature")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)
        ordered(self, "log_std_min", "log_std_max")
        if self.lr_end > self.lr:
            raise ConfigError(
                f"--lr-end ({self.lr_end}) must be <= --lr ({self.lr}): the learning rate "
                "decays from --lr to --lr-end; give --lr-end equal to --lr for a constant one.")

    @property
    def decay_steps(self) -> int:
        """The run's updates, over which the learning rate decays."""
        run = self.run
        return max(1, (run.total_steps - run.start_steps) // run.update_every * run.utd)

    @property
    def support(self) -> Float[Array, " bins"]:
        """The critic's return values."""
        return eqxrl.categorical_support(self.num_bins, -self.g_max, self.g_max)


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything SimbaV2's update and its `observe` hook change."""

    actor: eqxrl.TrainState  # model: HyperGaussianPolicy
    critic: eqxrl.TrainState  # model: Ensemble of HyperCategoricalQ (2, or 1)
    target_critic: eqxrl.Ensemble
    temperature: eqxrl.TrainState  # model: LogScalar
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    target_entropy: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)
    obs_norm: eqxrl.RunningNormalizer | None = None  # with --obs-norm (the default)
    returns: eqxrl.ReturnScaler | None = None  # with --reward-scale (the default)


# ---------------------------------------------------------------------------- losses
def critic_loss(
    critic: eqxrl.Ensemble, batch: eqxrl.Transition, target: Float[Array, "batch bins"],
    support: Float[Array, " bins"],
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Σ_j cross-entropy of critic j's distribution at (s, a) against the target's."""
    logits = eqxrl.ensemble_logits(critic, batch.obs, batch.action)  # (critics, batch, bins)
    losses = jax.vmap(eqxrl.categorical_td_loss, in_axes=(0, None))(logits, target)
    return jnp.sum(losses), {"q_mean": jnp.mean(eqxrl.categorical_value(logits, support))}


def actor_loss(
    actor: eqxrl.HyperGaussianPolicy, critic: eqxrl.Ensemble, obs: eqxrl.Obs,
    alpha: Float[Array, ""], support: Float[Array, " bins"], key: PRNGKeyArray,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """E[α·log π(ã|s) − min_j Q_j(s, ã)], ã ~ π(·|s) reparameterised, Q_j the expected value of
    critic j's distribution."""
    action, log_prob = eqxrl.sample_actions(actor, obs, key)
    logits = eqxrl.ensemble_logits(critic, obs, action)
    q = jnp.min(eqxrl.categorical_value(logits, support), axis=0)
    return jnp.mean(alpha * log_prob - q), {"entropy": -jnp.mean(log_prob)}


def critic_target(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> Float[Array, "batch bins"]:
    """The target distribution: the target critic's at (s', a'), a' ~ π(·|s'), moved to
    r + γ·(1 − terminated)·(z − α·log π(a'|s')) and projected onto the support."""
    support = config.support
    next_action, next_log_prob = eqxrl.sample_actions(state.actor.model, batch.next_obs, key)
    logits = eqxrl.ensemble_logits(state.target_critic, batch.next_obs, next_action)
    lower = jnp.argmin(eqxrl.categorical_value(logits, support), axis=0)  # (batch,)
    probs = jax.nn.softmax(jnp.take_along_axis(logits, lower[None, :, None], axis=0)[0])
    values = support[None, :] - state.temperature.model() * next_log_prob[:, None]
    atoms = eqxrl.quantile_td_target(batch.reward, batch.terminated, values, state.discount)
    return eqxrl.categorical_projection(atoms, probs, support)


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build actor, categorical critics, their targets, temperature and statistics."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("SimbaV2")
    spec.require_vector_obs("SimbaV2", "algorithms/drq.py or dqn.py")
    k_actor, k_critic = jax.random.split(key)
    actor = eqxrl.HyperGaussianPolicy(
        spec.obs_dim, spec.action_dim, config.actor_width, config.actor_blocks,
        c_shift=config.c_shift, log_std_min=config.log_std_min, log_std_max=config.log_std_max,
        key=k_actor)
    critic = eqxrl.Ensemble(
        lambda k: eqxrl.HyperCategoricalQ(spec.obs_dim, spec.action_dim, config.num_bins,
                                          config.critic_width, config.critic_blocks,
                                          c_shift=config.c_shift, key=k),
        2 if config.clipped_double_q else 1, key=k_critic)

    def train_state(model):
        return eqxrl.TrainState.create(
            model, eqxrl.ADAM_LINEAR_DECAY, learning_rate=hyper.lr,
            end_fraction=config.lr_end / hyper.lr, decay_steps=float(config.decay_steps))

    return State(
        actor=train_state(actor),
        critic=train_state(critic),
        target_critic=critic,
        temperature=train_state(eqxrl.LogScalar.create(hyper.init_temperature)),
        discount=hyper.discount,
        tau=hyper.tau,
        target_entropy=jnp.float32(hyper.target_entropy_per_dim * spec.action_dim),
        spec=spec,
        obs_norm=eqxrl.RunningNormalizer.create(spec.example_obs()) if config.obs_norm else None,
        returns=eqxrl.ReturnScaler.create(hyper.discount, config.g_max)
        if config.reward_scale else None,
    )


def observe(state: State, transition: eqxrl.Transition) -> State:
    """The statistics after one env step (a batch of one row): the observation acted on joins
    the observation statistics, the reward the discounted return's."""
    eqxrl.check_one_agent(state, "simbav2.observe")
    obs_norm = None if state.obs_norm is None else state.obs_norm.observe(transition.obs)
    returns = state.returns
    if returns is not None:
        done = transition.terminated[0] | transition.truncated[0]
        returns = returns.observe(transition.reward[0], done)
    return dataclasses.replace(state, obs_norm=obs_norm, returns=returns)


def prepared(state: State, batch: eqxrl.Transition) -> eqxrl.Transition:
    """The batch as the networks see it: observations normalised, rewards scaled."""
    batch = eqxrl.normalised_batch(state.obs_norm, batch)
    if state.returns is None:
        return batch
    return dataclasses.replace(batch, reward=state.returns(batch.reward))


def projected(train_state: eqxrl.TrainState) -> eqxrl.TrainState:
    """The train state with its model's weight rows back on the unit sphere."""
    return dataclasses.replace(train_state, model=eqxrl.project_weights(train_state.model))


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One SimbaV2 step: the actor on the current critics, the temperature, the critics against
    the new actor's target, then the target critics; weights are projected after each step."""
    eqxrl.check_one_agent(state, "simbav2.update")
    state.spec.check_batch(batch)
    batch = prepared(state, batch)
    k_actor, k_next = jax.random.split(key)
    support = config.support
    actor, actor_info = state.actor.apply_loss_fn(
        actor_loss, state.critic.model, batch.obs, state.temperature.model(), support, k_actor)
    temperature, temperature_info = state.temperature.apply_loss_fn(
        eqxrl.temperature_loss, jax.lax.stop_gradient(actor_info["entropy"]),
        state.target_entropy)
    temperature_info.pop("grad_norm")
    state = dataclasses.replace(state, actor=projected(actor), temperature=temperature)
    target = critic_target(state, batch, k_next, config)
    critic, critic_info = state.critic.apply_loss_fn(critic_loss, batch, target, support)
    critic = projected(critic)
    new_state = dataclasses.replace(
        state, critic=critic,
        target_critic=eqxrl.polyak(critic.model, state.target_critic, state.tau))
    metrics = eqxrl.prefixed(critic=critic_info, actor=actor_info, temperature=temperature_info)
    if state.returns is not None:
        metrics["reward_scale"] = state.returns.scale()
    return new_state, metrics


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations; `deterministic` takes the mode."""
    eqxrl.check_one_agent(state, "simbav2.act")
    state.spec.batch_size(obs, "obs")
    obs = eqxrl.normalised(state.obs_norm, obs)
    return eqxrl.policy_actions(state.actor.model, obs, key, deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train SimbaV2 online and return the run's summary."""
    return eqxrl.train_online(config, sys.modules[__name__],
                              eqxrl.OffPolicyHooks(observe=observe))


if __name__ == "__main__":
    eqxrl.cli(main, Config)

"""CrossQ (Bhatt et al., ICLR 2024: "CrossQ: Batch Normalization in Deep Reinforcement Learning
for Greater Sample Efficiency and Simplicity"), with sbx's defaults.

Run:   python algorithms/crossq.py --env-id HalfCheetah-v5
Help:  python algorithms/crossq.py --help
Resume an interrupted run:  python algorithms/crossq.py --resume runs/<name>

SAC without target networks. The critics are wide (2 × 2048) and normalised by Batch
Renormalization, and they see (s, a) and (s', a') as ONE batch, so the batch statistics of a
training pass mix both and the bootstrap values come from the same normalisation as the
predictions. The target is r + γ·(1 − terminated)·(min_j sg(Q_j(s', a')) − α·log π(a'|s')), with
a' ~ π(·|s') from the actor in evaluation mode. The actor (BatchRenorm too) and the temperature
update every `--policy-delay` critic steps, against the critics in evaluation mode. Adam with
β1 = 0.5 for actor and critics, learning rate 1e-3, as in the paper and sbx. SimBa networks with
Batch Renormalization in place of LayerNorm (sbx's SimBa-CrossQ): `--network simba`; resets
every N updates: `--reset-interval N`.
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
from eqxrl.core import ConfigError, at_least, layer_sizes, ordered, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """CrossQ on a gymnasium env with continuous actions."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun(start_steps=5_000)
    net: Annotated[eqxrl.Networks, tyro.conf.arg(name="")] = eqxrl.Networks()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the actor (--network mlp)"""
    critic_hidden_dims: tuple[int, ...] = (2048, 2048)
    """hidden layer sizes of each critic (CrossQ's critics are wide; --network mlp)"""
    actor_lr: eqxrl.Swept[float] = 1e-3
    """actor learning rate"""
    critic_lr: eqxrl.Swept[float] = 1e-3
    """critic learning rate"""
    temperature_lr: eqxrl.Swept[float] = 1e-3
    """temperature learning rate (its Adam keeps β1 = 0.9)"""
    adam_b1: eqxrl.Swept[float] = 0.5
    """Adam's β1 for actor and critics (the paper's 0.5; 0.9 is Adam's usual)"""
    discount: eqxrl.Swept[float] = 0.99
    """discount factor γ"""
    num_critics: int = 2
    """critics in the ensemble"""
    vectorise_critics: bool = True
    """stack the critics and apply them as one batched product (`Ensemble(vectorise=True)`);
    on a 2-core CPU it was the faster layout here (benchmarks/frontier.py --mode update)"""
    policy_delay: int = 3
    """critic updates per actor and temperature update"""
    bn_momentum: float = 0.99
    """weight of the old running statistics per training batch in Batch Renormalization"""
    renorm_warmup_steps: int = 100_000
    """training batches of plain BatchNorm before renormalisation (r, d) turns on"""
    init_temperature: eqxrl.Swept[float] = 1.0
    """initial entropy temperature α"""
    temperature_loss: eqxrl.TemperatureLoss = "log_alpha"
    """how α is tuned: 'log_alpha' is log α·(H − H̄), as the CrossQ authors' code and sbx;
    'alpha' is α·(H − H̄), jaxrl_m's (see eqxrl.temperature_loss)"""
    target_entropy_per_dim: eqxrl.Swept[float] = -1.0
    """target entropy per action dimension: −1 gives the usual −action_dim"""
    log_std_min: float = -20.0
    """lower clip of the actor's log-std (SB3's and sbx's −20)"""
    log_std_max: float = 2.0
    """upper clip of the actor's log-std"""

    def __post_init__(self):
        layer_sizes(self)
        layer_sizes(self, "critic_hidden_dims")
        self.net.refuse_mlp_sizes(self, "hidden_dims", "critic_hidden_dims")
        positive(self, "actor_lr", "critic_lr", "temperature_lr", "init_temperature")
        within(self, "adam_b1", 0, 1, open_high=True)
        within(self, "discount", 0, 1)
        within(self, "bn_momentum", 0, 1, open_high=True)
        at_least(self, 1, "num_critics", "policy_delay")
        at_least(self, 0, "renorm_warmup_steps")
        ordered(self, "log_std_min", "log_std_max")
        if self.run.batch_size < 2:
            raise ConfigError(
                f"--batch-size must be >= 2 for CrossQ, got {self.run.batch_size}: Batch "
                "Renormalization takes its statistics over the batch."
            )


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything CrossQ's update changes; the critics' running statistics are in their model."""

    actor: eqxrl.TrainState  # model: GaussianPolicy on a BatchRenormMLP trunk
    critic: eqxrl.TrainState  # model: Ensemble of QFunction on BatchRenormMLP; no target copy
    temperature: eqxrl.TrainState  # model: LogScalar
    actor_info: eqxrl.Metrics  # of the latest actor and temperature update (every policy_delay)
    step: Int[Array, ""]  # critic updates so far
    discount: Float[Array, ""]
    target_entropy: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)
    obs_norm: eqxrl.RunningNormalizer | None = None  # with --network simba (or --obs-norm)


# ---------------------------------------------------------------------------- losses
def critic_loss(
    critic: eqxrl.Ensemble, batch: eqxrl.Transition, next_action: Float[Array, "batch action_dim"],
    next_log_prob: Float[Array, " batch"], alpha: Float[Array, ""], discount: Float[Array, ""],
) -> tuple[Float[Array, ""], tuple[eqxrl.Metrics, eqxrl.Ensemble]]:
    """Σ_j mean_batch (Q_j(s, a) − y)², with Q(s, a) and Q(s', a') from ONE training-mode pass
    over the joint batch and y = sg(r + γ·(1 − terminated)·(min_j Q_j(s', a') − α·log π)).
    Returns the critics with the joint batch's running statistics as aux."""
    n = batch.action.shape[0]
    joint_obs = jax.tree.map(lambda o, o2: jnp.concatenate([o, o2]), batch.obs, batch.next_obs)
    joint_action = jnp.concatenate([batch.action, next_action])
    q, critic_after = critic.train_batch(joint_obs, joint_action)  # (critics, 2·batch)
    q_now, q_next = q[:, :n], jax.lax.stop_gradient(q[:, n:])
    next_value = jnp.min(q_next, axis=0) - alpha * next_log_prob
    target = jax.lax.stop_gradient(
        eqxrl.td_target(batch.reward, batch.terminated, next_value, discount)
    )
    loss = jnp.sum(jnp.mean((q_now - target[None]) ** 2, axis=1))
    return loss, ({"q_mean": jnp.mean(q_now), "target_q_mean": jnp.mean(target)}, critic_after)


def actor_loss(
    actor: eqxrl.GaussianPolicy, critic: eqxrl.Ensemble, obs: eqxrl.Obs, alpha: Float[Array, ""],
    key: PRNGKeyArray,
) -> tuple[Float[Array, ""], tuple[eqxrl.Metrics, eqxrl.GaussianPolicy]]:
    """E[α·log π(ã|s) − min_j Q_j(s, ã)], the actor in training mode and the critics in
    evaluation mode (their running statistics). Returns the actor's new statistics as aux."""
    dist, actor_after = actor.train_batch(obs)
    action, log_prob = dist.sample_and_log_prob(seed=key)
    q = jnp.min(eqxrl.ensemble_q(critic, obs, action), axis=0)
    return jnp.mean(alpha * log_prob - q), ({"entropy": -jnp.mean(log_prob)}, actor_after)


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build the BatchRenorm actor and critics and the temperature for `spec`."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("CrossQ")
    spec.require_vector_obs("CrossQ", "algorithms/drq.py or dqn.py")
    k_actor, k_critic = jax.random.split(key)
    renorm = {"momentum": config.bn_momentum, "warmup_steps": config.renorm_warmup_steps}
    net, simba = config.net, {"norm": "batch_renorm", **renorm}
    actor_hidden, actor_kwargs = net.actor(config.hidden_dims, trunk=True,
                                           mlp=eqxrl.BatchRenormMLP, simba_kwargs=simba, **renorm)
    actor = eqxrl.GaussianPolicy(
        spec.obs_dim, spec.action_dim, actor_hidden, log_std_min=config.log_std_min,
        log_std_max=config.log_std_max, key=k_actor, **actor_kwargs,
    )
    critic_hidden, critic_kwargs = net.critic(config.critic_hidden_dims,
                                              mlp=eqxrl.BatchRenormMLP, simba_kwargs=simba,
                                              **renorm)
    critic = eqxrl.q_ensemble(spec, critic_hidden, config.num_critics, key=k_critic,
                              vectorise=config.vectorise_critics, **critic_kwargs)
    return State(
        actor=net.train_state(actor, hyper.actor_lr, b1=hyper.adam_b1),
        critic=net.train_state(critic, hyper.critic_lr, b1=hyper.adam_b1),
        temperature=eqxrl.TrainState.create(
            eqxrl.LogScalar.create(hyper.init_temperature), eqxrl.ADAM,
            learning_rate=hyper.temperature_lr,
        ),
        actor_info={k: jnp.float32(0) for k in ACTOR_METRICS},
        step=jnp.int32(0),
        discount=hyper.discount,
        target_entropy=jnp.float32(hyper.target_entropy_per_dim * spec.action_dim),
        spec=spec,
        obs_norm=net.obs_normalizer(spec.example_obs()),
    )


ACTOR_METRICS = ("actor/loss", "actor/grad_norm", "actor/entropy", "temperature/loss",
                 "temperature/value")


def critic_step(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray
) -> tuple[eqxrl.TrainState, eqxrl.Metrics]:
    """The critics on the joint (s, a), (s', a') batch, a' from the actor in evaluation mode."""
    next_action, next_log_prob = eqxrl.sample_actions(state.actor.model, batch.next_obs, key)
    return state.critic.apply_loss_fn_with_stats(
        critic_loss, batch, next_action, next_log_prob, state.temperature.model(), state.discount
    )


def policy_step(
    state: State, critic: eqxrl.TrainState, obs: eqxrl.Obs, key: PRNGKeyArray, config: Config
) -> tuple[eqxrl.TrainState, eqxrl.TrainState, eqxrl.Metrics]:
    """The actor on the new critics, then the temperature on the actor's entropy."""
    actor, actor_info = state.actor.apply_loss_fn_with_stats(
        actor_loss, critic.model, obs, state.temperature.model(), key
    )
    temperature, temperature_info = state.temperature.apply_loss_fn(
        eqxrl.temperature_loss, jax.lax.stop_gradient(actor_info["entropy"]),
        state.target_entropy, form=config.temperature_loss,
    )
    temperature_info.pop("grad_norm")
    info = eqxrl.prefixed(actor=actor_info, temperature=temperature_info)
    return actor, temperature, info


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One CrossQ step: the critics; every `policy_delay`-th step (as sbx: the 3rd, 6th, ...)
    the actor and the temperature. No target networks to move. With `--network simba` the
    batch first moves the running observation statistics and is normalised by them; with
    `--reset-interval` the networks are re-initialised on schedule."""
    eqxrl.check_one_agent(state, "crossq.update")
    state.spec.check_batch(batch)
    obs_norm, batch = eqxrl.observe_batch(state.obs_norm, batch)
    state = eqxrl.scheduled_reset(dataclasses.replace(state, obs_norm=obs_norm), state.step,
                                  key, config.net, lambda k: init(k, state.spec, config))
    k_critic, k_actor = jax.random.split(key)
    critic, critic_info = critic_step(state, batch, k_critic)
    step = state.step + 1
    keep = (state.actor, state.temperature, state.actor_info)
    actor, temperature, actor_info = eqxrl.every(
        config.policy_delay, step, lambda: policy_step(state, critic, batch.obs, k_actor, config),
        keep,
    )
    new_state = dataclasses.replace(state, actor=actor, critic=critic, temperature=temperature,
                                    actor_info=actor_info, step=step)
    return new_state, {**eqxrl.prefixed(critic=critic_info), **actor_info}


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations (the actor in evaluation mode)."""
    eqxrl.check_one_agent(state, "crossq.act")
    state.spec.batch_size(obs, "obs")
    obs = eqxrl.normalised(state.obs_norm, obs)
    return eqxrl.policy_actions(state.actor.model, obs, key, deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train CrossQ online and return the run's summary."""
    return eqxrl.train_online(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

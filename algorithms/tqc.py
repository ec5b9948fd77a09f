"""TQC: Truncated Quantile Critics (Kuznetsov et al., ICML 2020: "Controlling Overestimation Bias
with Truncated Mixture of Continuous Distributional Quantile Critics"), the paper's defaults.

Run:   python algorithms/tqc.py --env-id HalfCheetah-v5
Help:  python algorithms/tqc.py --help
Resume an interrupted run:  python algorithms/tqc.py --resume runs/<name>

N critics each predict M quantiles θ_j,i(s, a) of the return at τ_i = (2i + 1)/(2M). The target
pools the target critics' quantiles at (s', a'), a' ~ π(·|s'), sorts them, drops the largest
`--drop-per-critic`·N (the overestimation control) and keeps y_k = r + γ·(1 − terminated)·
(z_k − α·log π(a'|s')). Each critic minimises the quantile Huber loss against all y_k. The actor
maximises the mean of every quantile of every critic plus entropy; the temperature is SAC's.
Paper defaults: 5 critics × 25 quantiles, 2 dropped per critic, critics 3 × 512, actor 2 × 256.
sbx's defaults (for a side-by-side run): `--num-critics 2 --critic-hidden-dims 256 256`.
SimBa networks: `--network simba`; resets every N updates: `--reset-interval N`.
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
from eqxrl.core import ConfigError, at_least, layer_sizes, ordered, positive, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """TQC on a gymnasium env with continuous actions."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun()
    net: Annotated[eqxrl.Networks, tyro.conf.arg(name="")] = eqxrl.Networks()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the actor (--network mlp)"""
    critic_hidden_dims: tuple[int, ...] = (512, 512, 512)
    """hidden layer sizes of each quantile critic (--network mlp)"""
    actor_lr: eqxrl.Swept[float] = 3e-4
    """actor learning rate"""
    critic_lr: eqxrl.Swept[float] = 3e-4
    """critic learning rate"""
    temperature_lr: eqxrl.Swept[float] = 3e-4
    """temperature learning rate"""
    discount: eqxrl.Swept[float] = 0.99
    """discount factor γ"""
    tau: eqxrl.Swept[float] = 0.005
    """polyak rate of the target critics"""
    num_critics: int = 5
    """quantile critics in the ensemble (N)"""
    vectorise_critics: bool = True
    """stack the critics and apply them as one batched product (`Ensemble(vectorise=True)`);
    on a 2-core CPU it was the faster layout here (benchmarks/frontier.py --mode update)"""
    num_quantiles: int = 25
    """quantiles per critic (M)"""
    drop_per_critic: int = 2
    """largest target quantiles dropped per critic (d; the paper uses 0 on HalfCheetah, 5 on
    Hopper, 2 elsewhere)"""
    init_temperature: eqxrl.Swept[float] = 1.0
    """initial entropy temperature α"""
    temperature_loss: eqxrl.TemperatureLoss = "log_alpha"
    """how α is tuned: 'log_alpha' is log α·(H − H̄), as the TQC authors' code and sbx;
    'alpha' is α·(H − H̄), jaxrl_m's (see eqxrl.temperature_loss)"""
    target_entropy_per_dim: eqxrl.Swept[float] = -1.0
    """target entropy per action dimension: −1 gives the usual −action_dim"""
    log_std_min: float = -20.0
    """lower clip of the actor's log-std (the paper's code and sbx use −20)"""
    log_std_max: float = 2.0
    """upper clip of the actor's log-std"""

    def __post_init__(self):
        layer_sizes(self)
        layer_sizes(self, "critic_hidden_dims")
        self.net.refuse_mlp_sizes(self, "hidden_dims", "critic_hidden_dims")
        positive(self, "actor_lr", "critic_lr", "temperature_lr", "init_temperature")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)
        at_least(self, 1, "num_critics", "num_quantiles")
        at_least(self, 0, "drop_per_critic")
        ordered(self, "log_std_min", "log_std_max")
        if self.drop_per_critic >= self.num_quantiles:
            raise ConfigError(
                f"--drop-per-critic ({self.drop_per_critic}) must be < --num-quantiles "
                f"({self.num_quantiles}): dropping all {self.num_critics * self.num_quantiles} "
                "pooled quantiles leaves no target. The paper drops 2 of 25 per critic."
            )


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything TQC's update changes. Swept hyperparameters are array leaves."""

    actor: eqxrl.TrainState  # model: GaussianPolicy (tanh-squashed)
    critic: eqxrl.TrainState  # model: Ensemble of QuantileQFunction
    target_critic: eqxrl.Ensemble
    temperature: eqxrl.TrainState  # model: LogScalar
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    target_entropy: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)
    obs_norm: eqxrl.RunningNormalizer | None = None  # with --network simba (or --obs-norm)


# ---------------------------------------------------------------------------- losses
def critic_loss(
    critic: eqxrl.Ensemble, batch: eqxrl.Transition, target: Float[Array, "batch atoms"]
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Σ_j quantile Huber loss of critic j's quantiles at (s, a) against the pooled atoms."""
    z = eqxrl.ensemble_quantiles(critic, batch.obs, batch.action)  # (critics, batch, quantiles)
    losses = jax.vmap(eqxrl.quantile_huber_loss, in_axes=(0, None))(z, target)
    return jnp.sum(losses), {"q_mean": jnp.mean(z), "target_q_mean": jnp.mean(target)}


def actor_loss(
    actor: eqxrl.GaussianPolicy, critic: eqxrl.Ensemble, obs: eqxrl.Obs,
    alpha: Float[Array, ""], key: PRNGKeyArray,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """E[α·log π(ã|s) − mean_{j,i} θ_j,i(s, ã)], ã ~ π(·|s) reparameterised."""
    action, log_prob = eqxrl.sample_actions(actor, obs, key)
    q = jnp.mean(eqxrl.ensemble_quantiles(critic, obs, action), axis=(0, 2))  # (batch,)
    return jnp.mean(alpha * log_prob - q), {"entropy": -jnp.mean(log_prob)}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build actor, quantile critics, their targets and the temperature for `spec`."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("TQC")
    spec.require_vector_obs("TQC", "algorithms/drq.py or dqn.py")
    k_actor, k_critic = jax.random.split(key)
    net = config.net
    actor_hidden, actor_kwargs = net.actor(config.hidden_dims, trunk=True)
    actor = eqxrl.GaussianPolicy(
        spec.obs_dim, spec.action_dim, actor_hidden, log_std_min=config.log_std_min,
        log_std_max=config.log_std_max, key=k_actor, **actor_kwargs,
    )
    critic_hidden, critic_kwargs = net.critic(config.critic_hidden_dims)
    critic = eqxrl.Ensemble(
        lambda k: eqxrl.QuantileQFunction(spec.obs_dim, spec.action_dim, config.num_quantiles,
                                          critic_hidden, key=k, **critic_kwargs),
        config.num_critics, key=k_critic, vectorise=config.vectorise_critics,
    )
    return State(
        actor=net.train_state(actor, hyper.actor_lr),
        critic=net.train_state(critic, hyper.critic_lr),
        target_critic=critic,
        temperature=eqxrl.TrainState.create(
            eqxrl.LogScalar.create(hyper.init_temperature), eqxrl.ADAM,
            learning_rate=hyper.temperature_lr,
        ),
        discount=hyper.discount,
        tau=hyper.tau,
        target_entropy=jnp.float32(hyper.target_entropy_per_dim * spec.action_dim),
        spec=spec,
        obs_norm=net.obs_normalizer(spec.example_obs()),
    )


def critic_target(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> Float[Array, "batch atoms"]:
    """The truncated pooled atoms r + γ·(1 − terminated)·(z_k − α·log π(a'|s'))."""
    next_action, next_log_prob = eqxrl.sample_actions(state.actor.model, batch.next_obs, key)
    next_z = eqxrl.ensemble_quantiles(state.target_critic, batch.next_obs, next_action)
    atoms = eqxrl.truncated_quantiles(next_z, config.drop_per_critic)
    atoms = atoms - state.temperature.model() * next_log_prob[:, None]
    return eqxrl.quantile_td_target(batch.reward, batch.terminated, atoms, state.discount)


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One TQC step: the quantile critics, the actor on the new critics, the temperature, the
    target critics. With `--network simba` the batch first moves the running observation
    statistics and is normalised by them; with `--reset-interval` the networks are
    re-initialised on schedule."""
    eqxrl.check_one_agent(state, "tqc.update")
    state.spec.check_batch(batch)
    obs_norm, batch = eqxrl.observe_batch(state.obs_norm, batch)
    state = eqxrl.scheduled_reset(dataclasses.replace(state, obs_norm=obs_norm),
                                  state.critic.step, key, config.net,
                                  lambda k: init(k, state.spec, config))
    k_next, k_actor = jax.random.split(key)
    target = critic_target(state, batch, k_next, config)
    critic, critic_info = state.critic.apply_loss_fn(critic_loss, batch, target)
    alpha = state.temperature.model()
    actor, actor_info = state.actor.apply_loss_fn(actor_loss, critic.model, batch.obs, alpha,
                                                  k_actor)
    temperature, temperature_info = state.temperature.apply_loss_fn(
        eqxrl.temperature_loss, jax.lax.stop_gradient(actor_info["entropy"]),
        state.target_entropy, form=config.temperature_loss,
    )
    temperature_info.pop("grad_norm")
    new_state = dataclasses.replace(
        state, actor=actor, critic=critic, temperature=temperature,
        target_critic=eqxrl.polyak(critic.model, state.target_critic, state.tau),
    )
    return new_state, eqxrl.prefixed(
        critic=critic_info, actor=actor_info, temperature=temperature_info
    )


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """Actions in [-1, 1] for a batch of observations; `deterministic` takes the mode."""
    eqxrl.check_one_agent(state, "tqc.act")
    state.spec.batch_size(obs, "obs")
    obs = eqxrl.normalised(state.obs_norm, obs)
    return eqxrl.policy_actions(state.actor.model, obs, key, deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train TQC online and return the run's summary."""
    return eqxrl.train_online(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

"""ReBRAC (Tarasov, Kurenkov, Nikulin and Kolesnikov, 2023): "Revisiting the Minimalist Approach
to Offline Reinforcement Learning", TD3+BC with separate actor and critic penalties.

Run:   python algorithms/rebrac.py --dataset data/hopper-medium-v2.hdf5
Fine-tune online afterwards:  add --finetune-steps 100000
Help:  python algorithms/rebrac.py --help
Resume an interrupted run:  python algorithms/rebrac.py --resume runs/<name>

ReBRAC is TD3 (`algorithms/td3.py`: twin critics, target-policy smoothing, delayed actor and
target updates) trained on a dataset with two behaviour-cloning penalties:
- the actor minimises E[β₁·‖μ(s) − a‖² − λ·min_j Q_j(s, μ(s))], with
  λ = 1 / E|min_j Q_j(s, μ(s))| held constant (`--normalize-q`);
- the critics regress to r + γ·(1 − terminated)·(min_j Q̄_j(s', ã') − β₂·‖ã' − a'‖²), where
  ã' is TD3's smoothed target action and a' the action the data took next (rows without one,
  the ends of episodes, get no penalty: `eqxrl.datasets.with_next_actions`).
‖·‖² sums over action dimensions. The rest is the paper's "minimalist" recipe: LayerNorm in the
critics, three hidden layers of 256, learning rates 1e-3, batch 1024, no observation
normalisation, 1M updates. The penalties are tuned per dataset in the paper (its Table 9);
the defaults β₁ 0.001 and β₂ 0.01 are its halfcheetah-medium values.

Offline → online: `--finetune-steps N` continues the trained agents online for N env steps
(one update each, in `<run-dir>/finetune`), half of every batch from the dataset
(`--finetune-fraction`), as CORL's fine-tuning ReBRAC (Tarasov et al., 2023;
`algorithms/finetune/rebrac.py` of CORL) does it: the critic's penalty is off online, the
actor's β₁ decays linearly over the N steps to `--finetune-bc-floor` (0.5) of itself, and
the policy acts without exploration noise unless `--exploration-noise` says otherwise.
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
from eqxrl.algorithms import td3
from eqxrl.core import non_negative, only_with, within


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config(td3.Config):
    """ReBRAC on a D4RL-style offline dataset: TD3's hyperparameters, plus the two penalties;
    then, with --finetune-steps, online."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun(batch_size=1024)
    finetune: Annotated[eqxrl.Finetune, tyro.conf.arg(name="")] = eqxrl.Finetune()
    net: tyro.conf.Suppress[eqxrl.Networks] = eqxrl.Networks()  # SAC's/TD3's network
    # options do not apply here (require_default refuses them)
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    """hidden layer sizes of actor and critics"""
    actor_lr: eqxrl.Swept[float] = 1e-3
    """actor learning rate"""
    critic_lr: eqxrl.Swept[float] = 1e-3
    """critic learning rate"""
    critic_layer_norm: bool = True
    """LayerNorm in the critics' hidden layers"""
    actor_bc: eqxrl.Swept[float] = 0.001
    """β₁: weight of the actor's penalty ‖μ(s) − a‖² against its normalised Q term"""
    critic_bc: eqxrl.Swept[float] = 0.01
    """β₂: weight of the target's penalty ‖ã' − a'‖² (a' the data's next action)"""
    normalize_q: bool = True
    """divide the actor's Q term by E|Q| (λ = 1/E|Q|); off: λ = 1"""
    normalize_obs: bool = False
    """normalise observations with the dataset's mean and std (off in the paper)"""
    exploration_noise: eqxrl.Swept[float] = 0.0
    """std of the Gaussian noise on μ(s) while fine-tuning online (--finetune-steps; CORL's
    fine-tuning ReBRAC: 0); offline, evaluation acts deterministically"""
    finetune_bc_floor: float = 0.5
    """with --finetune-steps: β₁ decays linearly over the fine-tuning steps to this fraction of
    itself (CORL: 0.5); β₂ is 0 online"""

    def __post_init__(self):
        td3.Config.__post_init__(self)
        self.net.require_default("ReBRAC")
        non_negative(self, "actor_bc", "critic_bc")
        within(self, "finetune_bc_floor", 0, 1)
        online = self.finetune.finetune_steps > 0 or isinstance(self.run, eqxrl.OnlineRun)
        only_with(self, online, "--finetune-steps N", "exploration_noise", "finetune_bc_floor")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(Config):
    """ReBRAC's online fine-tuning phase (--finetune-steps): the offline run's hyperparameters
    with online run settings (`eqxrl.run.finetuning.online_settings` derives them)."""

    run: eqxrl.OnlineRun = eqxrl.OnlineRun()


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """TD3's state, and what ReBRAC adds to it. Swept hyperparameters are array leaves."""

    td3: td3.State  # actor, twin LayerNorm critics, targets, TD3's counter and hyperparameters
    obs_norm: eqxrl.Normalizer  # dataset statistics (--normalize-obs), else the identity
    actor_bc: Float[Array, ""]
    critic_bc: Float[Array, ""]
    online_updates: Int[Array, ""]  # updates of the fine-tuning phase so far (β₁'s decay)


# ---------------------------------------------------------------------------- losses
def actor_loss(
    actor: eqxrl.DeterministicPolicy,
    critic: eqxrl.Ensemble,
    obs: eqxrl.Obs,
    action: Float[Array, "batch action_dim"],
    actor_bc: Float[Array, ""] | float,
    normalize_q: bool = True,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """E[β₁·‖μ(s) − a‖² − λ·min_j Q_j(s, μ(s))], λ = 1 / E|min_j Q_j| without gradient."""
    pi = jax.vmap(actor)(obs)
    q = jnp.min(eqxrl.ensemble_q(critic, obs, pi), axis=0)
    lam = jax.lax.stop_gradient(1.0 / jnp.mean(jnp.abs(q))) if normalize_q else jnp.float32(1)
    bc = jnp.sum((pi - action) ** 2, axis=-1)
    loss = jnp.mean(actor_bc * bc - lam * q)
    return loss, {"lambda": lam, "bc_penalty": jnp.mean(bc), "q_mean": jnp.mean(q)}


def finetune_actor_bc(state: State, config: Config) -> Float[Array, ""]:
    """β₁ of the fine-tuning phase's next update: β₁·max(floor, 1 − k/N) after k of its N
    updates (CORL's linear decay, `--finetune-bc-floor` the floor)."""
    done = state.online_updates / max(config.finetune.finetune_steps, 1)
    return state.actor_bc * jnp.maximum(config.finetune_bc_floor, 1.0 - done)


def critic_target(
    state: State, batch: eqxrl.SarsaTransition, key: PRNGKeyArray
) -> tuple[Float[Array, " batch"], Float[Array, ""]]:
    """R + γ·(1 − terminated)·(min_j Q̄_j(s', ã') − β₂·‖ã' − a'‖²), and the mean penalty.

    ã' is TD3's smoothed target action; rows without a next action in the data get none.
    """
    base = state.td3
    next_action = eqxrl.smoothed_target_action(
        base.target_actor, batch.next_obs, key, base.policy_noise, base.noise_clip
    )
    next_q = jnp.min(eqxrl.ensemble_q(base.target_critic, batch.next_obs, next_action), axis=0)
    penalty = jnp.sum((next_action - batch.next_action) ** 2, axis=-1)
    penalty = jnp.where(batch.has_next_action, penalty, 0.0)
    target = eqxrl.td_target(batch.reward, batch.terminated,
                             next_q - state.critic_bc * penalty, base.discount)
    return target, jnp.mean(penalty)


# ---------------------------------------------------------------------------- init / update / act
def prepare(dataset: eqxrl.Dataset, config: Config) -> eqxrl.Dataset:
    """The dataset with each row's next action (`eqxrl.datasets.with_next_actions`)."""
    return eqxrl.datasets.with_next_actions(dataset)


def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None,
    dataset: eqxrl.Dataset | None = None,
) -> State:
    """TD3's networks for `spec` (LayerNorm critics), and the observation normaliser.

    The normaliser holds `dataset`'s statistics with --normalize-obs, else it is the identity.
    """
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("ReBRAC")
    spec.require_vector_obs("ReBRAC", "algorithms/bc.py (--encoder)")
    base = td3.init(key, spec, config, hyper)
    metrics = ("loss", "grad_norm", "lambda", "bc_penalty", "q_mean")  # of this actor loss
    base = dataclasses.replace(base, actor_info={k: jnp.float32(0) for k in metrics})
    if config.normalize_obs and dataset is not None:
        obs_norm = eqxrl.datasets.obs_normalizer(dataset)
    else:
        obs_norm = eqxrl.Normalizer.identity(spec.example_obs())
    return State(td3=base, obs_norm=obs_norm, actor_bc=hyper.actor_bc, critic_bc=hyper.critic_bc,
                 online_updates=jnp.int32(0))


def update(
    state: State, batch: eqxrl.SarsaTransition | eqxrl.Transition, key: PRNGKeyArray,
    config: Config,
) -> tuple[State, eqxrl.Metrics]:
    """TD3's step with the penalised critic target and the penalised actor loss.

    With a `FinetuneConfig` (the online phase), the batch may be plain `Transition`s: the
    critic's target is TD3's, unpenalised, and the actor's β₁ decays (`finetune_actor_bc`).

    Raises:
        TypeError: if an offline `batch` has no next actions (a plain `Transition`).
    """
    eqxrl.check_one_agent(state, "rebrac.update")
    online = isinstance(config, FinetuneConfig)
    if not online and not isinstance(batch, eqxrl.SarsaTransition):
        raise TypeError(
            f"rebrac.update: batch is a {type(batch).__name__}, but ReBRAC's critic penalty needs "
            "the data's next actions: sample from eqxrl.datasets.with_next_actions(dataset), "
            "whose rows are eqxrl.SarsaTransition.")
    state.td3.spec.check_batch(batch)
    batch = dataclasses.replace(
        batch, obs=state.obs_norm(batch.obs), next_obs=state.obs_norm(batch.next_obs)
    )
    base = state.td3  # TD3's named steps, with ReBRAC's target and actor loss
    if online:
        target, penalty = td3.critic_target(base, batch, key), jnp.float32(0)
        actor_bc = finetune_actor_bc(state, config)
    else:
        target, penalty = critic_target(state, batch, key)
        actor_bc = state.actor_bc
    critic, critic_info = td3.critic_step(base, batch, target)
    critic_info = {**critic_info, "next_bc_penalty": penalty}

    def actor_step():
        return base.actor.apply_loss_fn(actor_loss, critic.model, batch.obs, batch.action,
                                        actor_bc, config.normalize_q)

    new, metrics = td3.delayed_step(base, critic, critic_info, config, actor_step)
    new_state = dataclasses.replace(state, td3=new,
                                    online_updates=state.online_updates + int(online))
    return new_state, metrics | {"actor/bc_weight": actor_bc}


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """μ(s) in [-1, 1] for a batch of observations, normalised as in training, plus
    `--exploration-noise` (0 by default) unless `deterministic`."""
    eqxrl.check_one_agent(state, "rebrac.act")
    state.td3.spec.batch_size(obs, "obs")
    return td3.act(state.td3, state.obs_norm(obs), key, deterministic=deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train ReBRAC on the dataset (then online, with --finetune-steps); return the summary."""
    hooks = eqxrl.OfflineHooks(init=init, prepare=prepare)  # a' from the data; statistics
    return eqxrl.train_offline_online(config, sys.modules[__name__], hooks)


if __name__ == "__main__":
    eqxrl.cli(main, Config)

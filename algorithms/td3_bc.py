"""TD3+BC (Fujimoto and Gu, 2021): TD3 with a behaviour-cloning term and normalised states.

Run:   python algorithms/td3_bc.py --dataset data/hopper-medium-v2.hdf5
Help:  python algorithms/td3_bc.py --help
Resume an interrupted run:  python algorithms/td3_bc.py --resume runs/<name>

TD3+BC is TD3 (`algorithms/td3.py`: twin critics, target-policy smoothing, delayed actor and
target updates) trained on a dataset, with two changes that make it TD3+BC: every
`--policy-delay` updates the deterministic actor minimises −λ·E[Q_1(s, μ(s))] + E[(μ(s) − a)²]
with λ = α / E|Q_1(s, μ(s))| (λ treated as a constant), and observations are normalised with
the dataset's mean and std, computed in `init` (the loop hands it the dataset). The statistics
live in the `State` (so checkpoints carry them) and are applied in both `update` and `act`.
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
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.algorithms import td3
from eqxrl.core import non_negative


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config(td3.Config):
    """TD3+BC on a D4RL-style offline dataset: TD3's hyperparameters, plus α and normalisation.

    (TD3's --exploration-noise does not apply offline: evaluation acts deterministically.)
    """

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun()
    net: tyro.conf.Suppress[eqxrl.Networks] = eqxrl.Networks()  # SAC's/TD3's network
    # options do not apply here (require_default refuses them)
    alpha: eqxrl.Swept[float] = 2.5
    """α of λ = α / E|Q|: the weight of the Q term against the BC term"""
    normalize_obs: bool = True
    """normalise observations with the dataset's mean and std"""

    def __post_init__(self):
        td3.Config.__post_init__(self)
        self.net.require_default("TD3+BC")
        non_negative(self, "alpha")


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """TD3's state, and what TD3+BC adds to it. Swept hyperparameters are array leaves."""

    td3: td3.State  # actor, twin critics, targets, TD3's counter and hyperparameters
    obs_norm: eqxrl.Normalizer  # dataset statistics, applied in update and act
    alpha: Float[Array, ""]


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
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None,
    dataset: eqxrl.Dataset | None = None,
) -> State:
    """TD3's networks for `spec`, and the observation normaliser.

    The normaliser holds `dataset`'s statistics (with --normalize-obs), else it is the identity.
    """
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("TD3+BC")
    spec.require_vector_obs("TD3+BC", "algorithms/bc.py (--encoder)")
    base = td3.init(key, spec, config, hyper)
    metrics = ("loss", "grad_norm", "lambda", "bc_mse", "q_mean")  # of this actor loss
    base = dataclasses.replace(base, actor_info={k: jnp.float32(0) for k in metrics})
    if config.normalize_obs and dataset is not None:
        obs_norm = eqxrl.datasets.obs_normalizer(dataset)
    else:
        obs_norm = eqxrl.Normalizer.identity(spec.example_obs())
    return State(td3=base, obs_norm=obs_norm, alpha=hyper.alpha)


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """TD3's step on normalised observations, with the BC-regularised actor loss."""
    eqxrl.check_one_agent(state, "td3_bc.update")
    state.td3.spec.check_batch(batch)
    batch = dataclasses.replace(
        batch, obs=state.obs_norm(batch.obs), next_obs=state.obs_norm(batch.next_obs)
    )
    base = state.td3  # TD3's named steps, with the BC-regularised actor loss
    critic, critic_info = td3.critic_step(base, batch, td3.critic_target(base, batch, key))

    def actor_step():
        return base.actor.apply_loss_fn(actor_loss, critic.model, batch.obs, batch.action,
                                        state.alpha)

    new, metrics = td3.delayed_step(base, critic, critic_info, config, actor_step)
    return dataclasses.replace(state, td3=new), metrics


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """μ(s) in [-1, 1] for a batch of observations, normalised as in training.

    The policy is deterministic offline: `key` and `deterministic` change nothing.
    """
    eqxrl.check_one_agent(state, "td3_bc.act")
    state.td3.spec.batch_size(obs, "obs")
    return td3.act(state.td3, state.obs_norm(obs), key, deterministic=True)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train TD3+BC on the dataset and return the run's summary."""
    hooks = eqxrl.OfflineHooks(init=init)  # init computes the observation statistics
    return eqxrl.train_offline(config, sys.modules[__name__], hooks)


if __name__ == "__main__":
    eqxrl.cli(main, Config)

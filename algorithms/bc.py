"""Behaviour cloning for continuous or discrete actions, from vectors or pixels, with optional
top-k% filtering ("%BC").

Run:   python algorithms/bc.py --dataset data/hopper-expert-v2.hdf5
Filtered BC on the best 10% of episodes:  ... --top-fraction 0.1
Help:  python algorithms/bc.py --help
Resume an interrupted run:  python algorithms/bc.py --resume runs/<name>

A Gaussian (or tanh-squashed Gaussian) policy is fitted to the dataset's actions by maximum
likelihood −E[log π(a|s)], or by the squared error of its mode (`--loss mse`). Discrete
actions: a categorical policy fitted by cross-entropy (accuracy and entropy are logged); it
acts by sampling, or by its most likely action when deterministic. Image observations (uint8,
channels last, alone or in a dict beside vectors) go through `--encoder` (IMPALA by default;
pretrained weights with `--encoder-weights`, kept fixed with `--freeze-encoder`), trained with
the policy, as in jaxrl_m's vision BC. With `--top-fraction k`, only the transitions of the
best k·100% of episodes by undiscounted return are kept (episodes end at terminated or
truncated rows; see `eqxrl.datasets`). The defaults make the policy the same network as IQL's
actor (no tanh, learned state-independent std, log-std ≥ −5), so BC is IQL's actor loss with
every weight 1: the baseline offline RL must beat.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro
from jaxtyping import Array, Float, Int, PRNGKeyArray, Shaped

import eqxrl
from eqxrl.core import layer_sizes, ordered, positive, within
from eqxrl.vision import EncoderConfig, encoded


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """Behaviour cloning on a D4RL-style offline dataset (continuous or discrete actions)."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the policy (after the image encoder for pixels)"""
    vision: Annotated[EncoderConfig, tyro.conf.arg(name="")] = EncoderConfig()
    lr: eqxrl.Swept[float] = 3e-4
    """policy learning rate"""
    policy: Literal["gaussian", "tanh_gaussian"] = "gaussian"
    """policy distribution for continuous actions: a Gaussian (clipped to [-1, 1] when acting)
    or a tanh-squashed one (discrete actions always get a categorical)"""
    state_dependent_std: bool = False
    """predict the std from the state (a second head) instead of learning one free std"""
    loss: Literal["log_likelihood", "mse"] = "log_likelihood"
    """−log π(a|s), or the squared error of the policy's mode (the std is then not trained)"""
    top_fraction: float = 1.0
    """keep only the best fraction of episodes by return (filtered BC); 1.0 keeps all data"""
    log_std_min: float = -5.0
    """lower clip of the policy's log-std"""
    log_std_max: float = 2.0
    """upper clip of the policy's log-std"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "lr")
        within(self, "top_fraction", 0, 1, open_low=True)
        ordered(self, "log_std_min", "log_std_max")


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything BC's update changes: the policy and its optimiser."""

    actor: eqxrl.TrainState  # model: GaussianPolicy or CategoricalPolicy (behind an encoder)
    spec: eqxrl.EnvSpec = eqx.field(static=True)


TANH_EPS = 1e-5  # dataset actions are kept this far inside ±1, where atanh is finite


# ---------------------------------------------------------------------------- data and losses
def filter_top_episodes(dataset: eqxrl.Dataset, fraction: float) -> eqxrl.Dataset:
    """The rows of the best `fraction` of episodes by undiscounted return (at least one).

    Episodes end at terminated or truncated rows (and the last row). Ties keep the earlier
    episode. Rows keep their order.
    """
    ends = np.asarray(eqxrl.datasets.episode_ends(dataset))
    returns = np.asarray(eqxrl.datasets.episode_returns(dataset))
    episode = np.concatenate([[0], np.cumsum(ends)[:-1]])  # episode index of every row
    k = max(1, int(np.ceil(fraction * returns.size - 1e-9)))
    best = np.argsort(-returns, kind="stable")[:k]
    return eqxrl.Dataset(dataset[np.flatnonzero(np.isin(episode, best))])


def log_likelihood_loss(
    actor: eqx.Module, obs: eqxrl.Obs, action: Float[Array, "batch action_dim"]
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """−E[log π(a|s)] over dataset pairs; also reports the squared error of the mode.
    `actor` is a GaussianPolicy, or one behind an image encoder (`WithEncoder`)."""
    def one(o, a):
        dist = actor(o)
        return dist.log_prob(a), dist.mode()

    log_prob, mode = jax.vmap(one)(obs, action)
    return -jnp.mean(log_prob), {"log_prob": jnp.mean(log_prob),
                                 "mse": jnp.mean((mode - action) ** 2)}


def mse_loss(
    actor: eqx.Module, obs: eqxrl.Obs, action: Float[Array, "batch action_dim"]
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """E[‖mode π(·|s) − a‖²] averaged over batch and action dimensions."""
    mode = jax.vmap(lambda o: actor(o).mode())(obs)
    loss = jnp.mean((mode - action) ** 2)
    return loss, {"mse": loss}


# ---------------------------------------------------------------------------- init / update / act
def cross_entropy_loss(
    actor: eqx.Module, obs: eqxrl.Obs, action: Int[Array, " batch"]
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """−E[log π(a|s)] of a categorical policy; also its accuracy (argmax = a) and entropy."""
    def one(o, a):
        dist = actor(o)
        return dist.log_prob(a), dist.mode(), dist.entropy()

    log_prob, mode, entropy = jax.vmap(one)(obs, action)
    return -jnp.mean(log_prob), {"accuracy": jnp.mean((mode == action).astype(jnp.float32)),
                                 "entropy": jnp.mean(entropy)}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build the policy for `spec`: categorical for discrete actions, else Gaussian."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    k_encoder, k_head = jax.random.split(key)
    if spec.discrete:
        continuous_only = {"policy": (config.policy, "gaussian"),
                           "loss": (config.loss, "log_likelihood"),
                           "state_dependent_std": (config.state_dependent_std, False)}
        for name, (value, default) in continuous_only.items():
            if value != default:
                raise ValueError(
                    f"--{name.replace('_', '-')} {value} shapes a policy for continuous actions, "
                    f"but the env has Discrete({spec.num_actions}) actions, which BC fits with a "
                    "categorical by cross-entropy; leave it at its default.")

        def head(dim):
            return eqxrl.CategoricalPolicy(dim, spec.num_actions, config.hidden_dims, key=k_head)
    else:
        spec.require_unit_box_actions("BC")

        def head(dim):
            return eqxrl.GaussianPolicy(
                dim, spec.action_dim, config.hidden_dims,
                tanh_squash=config.policy == "tanh_gaussian",
                state_dependent_std=config.state_dependent_std, log_std_min=config.log_std_min,
                log_std_max=config.log_std_max, key=k_head,
            )
    config.vision.refuse_without_images(spec, Config.__dataclass_fields__["vision"].default)
    actor = encoded(spec, head, key=k_encoder, **config.vision.options())
    actor = eqxrl.TrainState.create(actor, eqxrl.ADAM, learning_rate=hyper.lr)
    return State(actor=actor, spec=spec)


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One BC step on the (obs, action) pairs of `batch`; `key` is unused."""
    eqxrl.check_one_agent(state, "bc.update")
    state.spec.check_batch(batch)
    action = batch.action
    if state.spec.discrete:
        loss_fn = cross_entropy_loss
    else:
        if config.policy == "tanh_gaussian":  # log π is infinite at ±1 under tanh
            action = jnp.clip(action, -1.0 + TANH_EPS, 1.0 - TANH_EPS)
        loss_fn = log_likelihood_loss if config.loss == "log_likelihood" else mse_loss
    actor, info = state.actor.apply_loss_fn(loss_fn, batch.obs, action)
    return dataclasses.replace(state, actor=actor), {f"actor/{k}": v for k, v in info.items()}


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Shaped[Array, " batch *action"]:
    """Actions for a batch of observations: in [-1, 1] (samples of the unsquashed Gaussian are
    clipped), or discrete indices; `deterministic` takes the mode."""
    eqxrl.check_one_agent(state, "bc.act")
    state.spec.batch_size(obs, "obs")
    action = eqxrl.policy_actions(state.actor.model, obs, key, deterministic)
    if state.spec.discrete:
        return action.astype(jnp.int32)
    return jnp.clip(action, -1.0, 1.0)


def prepare(dataset: eqxrl.Dataset, config: Config) -> eqxrl.Dataset:
    """The dataset BC trains on: its best `--top-fraction` of episodes (all of them at 1)."""
    return dataset if config.top_fraction >= 1 else filter_top_episodes(dataset,
                                                                        config.top_fraction)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train BC on the (optionally filtered) dataset and return the run's summary."""
    hooks = eqxrl.OfflineHooks(prepare=prepare)
    return eqxrl.train_offline(config, sys.modules[__name__], hooks)


if __name__ == "__main__":
    eqxrl.cli(main, Config)

"""Conservative Q-Learning for discrete actions (Kumar et al., 2020), as in jaxrl_m's vision CQL.

Run:   python algorithms/cql_discrete.py --dataset data/cartpole-mixed.hdf5
Help:  python algorithms/cql_discrete.py --help
Resume an interrupted run:  python algorithms/cql_discrete.py --resume runs/<name>

One Q-network with one output per action (behind an image encoder for pixel observations) and a
polyak-averaged target. Loss: the squared TD error to r + γ·(1 − terminated)·max_a Q̄(s', a)
plus α·(logsumexp_a Q(s, a) − Q(s, a_data)), which pushes down every action's value and up the
dataset's. jaxrl_m's defaults: α 0.5, lr 6e-5, γ 0.95, τ 0.002. The policy is greedy in Q.
Datasets with integer actions come from `python -m eqxrl.tools.collect` on a discrete-action env.
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
from eqxrl.core import layer_sizes, non_negative, positive, within
from eqxrl.vision import EncoderConfig, encoded


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config:
    """Discrete-action CQL on an offline dataset with integer actions."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun()
    hidden_dims: tuple[int, ...] = (256, 256)
    """hidden layer sizes of the Q-network (after the image encoder for pixels)"""
    vision: Annotated[EncoderConfig, tyro.conf.arg(name="")] = EncoderConfig()
    lr: eqxrl.Swept[float] = 6e-5
    """Q-network learning rate"""
    discount: eqxrl.Swept[float] = 0.95
    """discount factor γ"""
    tau: eqxrl.Swept[float] = 0.002
    """polyak rate of the target network"""
    cql_alpha: eqxrl.Swept[float] = 0.5
    """weight α of the conservative term logsumexp Q(s, ·) − Q(s, a)"""

    def __post_init__(self):
        layer_sizes(self)
        positive(self, "lr")
        non_negative(self, "cql_alpha")
        within(self, "tau", 0, 1, open_low=True)
        within(self, "discount", 0, 1)


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """Everything discrete CQL's update changes. Swept hyperparameters are array leaves."""

    q: eqxrl.TrainState  # model: DiscreteQFunction, behind an ObsEncoder for pixels
    target_q: eqx.Module
    discount: Float[Array, ""]
    tau: Float[Array, ""]
    cql_alpha: Float[Array, ""]
    spec: eqxrl.EnvSpec = eqx.field(static=True)


# ---------------------------------------------------------------------------- loss
def cql_loss(
    q: eqx.Module, batch: eqxrl.Transition, target: Float[Array, " batch"],
    alpha: Float[Array, ""],
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """The CQL loss: mean (Q(s, a) − target)² + α·mean(logsumexp_a' Q(s, a') − Q(s, a))."""
    q_all, q_taken = eqxrl.discrete_q(q, batch.obs, batch.action)
    td = jnp.mean(jnp.square(q_taken - target))
    logsumexp = jax.nn.logsumexp(q_all, axis=1)
    gap = jnp.mean(logsumexp - q_taken)
    accuracy = jnp.mean((jnp.argmax(q_all, axis=1) == batch.action).astype(jnp.float32))
    return td + alpha * gap, {"td_loss": td, "cql_gap": gap, "q_mean": jnp.mean(q_taken),
                              "logsumexp": jnp.mean(logsumexp), "accuracy": accuracy}


def q_target(state: State, batch: eqxrl.Transition) -> Float[Array, " batch"]:
    """The TD target r + γ·(1 − terminated)·max_a Q̄(s', a)."""
    next_value = jnp.max(jax.vmap(state.target_q)(batch.next_obs), axis=1)
    return jax.lax.stop_gradient(
        eqxrl.td_target(batch.reward, batch.terminated, next_value, state.discount))


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """Build the Q-network and its target for `spec` (discrete actions only)."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    if not spec.discrete:
        raise ValueError(
            f"Discrete CQL needs a discrete action space, but the env has continuous actions of "
            f"shape {spec.action_shape}; use algorithms/cql.py for continuous actions.")
    k_encoder, k_head = jax.random.split(key)
    config.vision.refuse_without_images(spec, Config.__dataclass_fields__["vision"].default)
    q = encoded(spec, lambda dim: eqxrl.DiscreteQFunction(dim, spec.num_actions,
                                                          config.hidden_dims, key=k_head),
                key=k_encoder, **config.vision.options())
    return State(
        q=eqxrl.TrainState.create(q, eqxrl.ADAM, learning_rate=hyper.lr),
        target_q=q,
        discount=hyper.discount,
        tau=hyper.tau,
        cql_alpha=hyper.cql_alpha,
        spec=spec,
    )


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """One step on the TD + conservative loss, then the target moves by τ; `key` is unused."""
    del key
    eqxrl.check_one_agent(state, "cql_discrete.update")
    state.spec.check_batch(batch)
    target = q_target(state, batch)
    q, info = state.q.apply_loss_fn(cql_loss, batch, target, state.cql_alpha)
    target_q = eqxrl.polyak(q.model, state.target_q, state.tau)
    return dataclasses.replace(state, q=q, target_q=target_q), eqxrl.prefixed(q=info)


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Int[Array, " batch"]:
    """argmax_a Q(s, a) for a batch of observations (greedy either way; `key` is unused)."""
    del key, deterministic
    eqxrl.check_one_agent(state, "cql_discrete.act")
    state.spec.batch_size(obs, "obs")
    return eqxrl.greedy_actions(state.q.model, obs)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train discrete CQL on `config.run.dataset` and return the run's summary."""
    return eqxrl.train_offline(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

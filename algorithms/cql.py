"""Conservative Q-Learning (Kumar et al., 2020), continuous actions, on top of SAC.

Run:   python algorithms/cql.py --dataset data/hopper-medium-v2.hdf5
Lagrange-tuned α (as the paper does for AntMaze):  ... --cql-lagrange --cql-target-gap 5.0
Help:  python algorithms/cql.py --help
Resume an interrupted run:  python algorithms/cql.py --resume runs/<name>

SAC (`algorithms/sac.py`: twin critics, tanh-Gaussian actor, learned entropy temperature) with
what makes it CQL, the CQL(H) regulariser on each critic:
α·(E_s[T·log Σ_k exp((Q(s, a_k) − log μ(a_k))/T)] − E_(s,a)~D[Q(s, a)]),
with a_k drawn `--num-sampled-actions` times each from Uniform[-1, 1] (log μ = log 0.5^action_dim),
from π(·|s) and from π(·|s') (log μ = log π, importance-sampled; all evaluated at s). With
`--cql-lagrange`, α is multiplied by α' ≥ 0, learned so the gap stays near `--cql-target-gap`.
Defaults follow the CQL authors' code for MuJoCo (actor lr 1e-4, critic lr 3e-4, α 5, 10 samples,
temperature 1, no entropy term in the backup), with the (256, 256) networks of eqxrl's SAC; the
paper's critics had three hidden layers (`--hidden-dims 256 256 256`).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

import eqxrl
from eqxrl.algorithms import sac
from eqxrl.core import at_least, non_negative, only_with, positive


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    """Conservative Q-Learning on a D4RL-style offline dataset: SAC's hyperparameters (with
    CQL's defaults) plus the regulariser's."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun()
    net: tyro.conf.Suppress[eqxrl.Networks] = eqxrl.Networks()  # SAC's/TD3's network
    # options do not apply here (require_default refuses them)
    actor_lr: eqxrl.Swept[float] = 1e-4
    """actor learning rate"""
    backup_entropy: bool = False
    """subtract the entropy term in the critic target (CQL's code uses a deterministic backup)"""
    cql_alpha: eqxrl.Swept[float] = 5.0
    """weight α of the CQL regulariser (multiplied by the learned α' with --cql-lagrange)"""
    num_sampled_actions: int = 10
    """actions drawn from each of uniform, π(·|s) and π(·|s') per state for the logsumexp"""
    cql_temperature: eqxrl.Swept[float] = 1.0
    """temperature T of the logsumexp over sampled actions"""
    cql_lagrange: bool = False
    """learn α' by dual gradient descent so the CQL gap tracks --cql-target-gap"""
    cql_target_gap: eqxrl.Swept[float] = 5.0
    """target value of the CQL gap (logsumexp Q − data Q) with --cql-lagrange"""
    cql_lagrange_lr: eqxrl.Swept[float] = 3e-4
    """learning rate of log α' with --cql-lagrange"""

    def __post_init__(self):
        sac.Config.__post_init__(self)
        self.net.require_default("CQL")
        positive(self, "cql_temperature", "cql_lagrange_lr")
        only_with(self, self.cql_lagrange, "--cql-lagrange", "cql_target_gap", "cql_lagrange_lr")
        non_negative(self, "cql_alpha")
        at_least(self, 1, "num_sampled_actions")
        if self.critic_dropout > 0:
            raise ValueError(
                f"--critic-dropout must be 0 for CQL, got {self.critic_dropout}: the "
                "regulariser scores sampled actions without dropout."
            )


# ---------------------------------------------------------------------------- state
class State(eqx.Module):
    """SAC's state, and what CQL adds to it. Swept hyperparameters are array leaves."""

    sac: sac.State  # actor, critics, targets, temperature, SAC's hyperparameters
    cql_multiplier: eqxrl.TrainState  # model: LogScalar, α' (stays 1 unless --cql-lagrange)
    cql_alpha: Float[Array, ""]
    cql_temperature: Float[Array, ""]
    cql_target_gap: Float[Array, ""]


MAX_MULTIPLIER = 1e6  # α' is clipped to [0, 1e6], as in the CQL authors' code


# ---------------------------------------------------------------------------- losses
def cql_gap(
    critic: eqxrl.Ensemble,
    obs: eqxrl.Obs,
    q_data: Float[Array, "ensemble batch"],
    sampled_actions: Float[Array, "batch samples action_dim"],
    log_density: Float[Array, "batch samples"],
    temperature: Float[Array, ""] | float,
) -> Float[Array, " ensemble"]:
    """E_s[T·logsumexp_k((Q(s, a_k) − log μ(a_k))/T)] − E[Q(s, a_data)] for each critic."""
    # One row per (state, sampled action), under one vmap: nested vmaps sharing the critic's
    # weights made XLA:CPU's products slower (benchmarks/dense_layout.py, nested vmap row).
    n, samples = sampled_actions.shape[:2]
    rows = jax.tree.map(lambda x: jnp.repeat(x, samples, axis=0), obs)
    q = eqxrl.ensemble_q(critic, rows, sampled_actions.reshape(n * samples, -1))
    q = q.reshape(q.shape[0], n, samples)  # (ensemble, batch, samples)
    soft_max = temperature * jax.nn.logsumexp((q - log_density[None]) / temperature, axis=-1)
    return jnp.mean(soft_max, axis=1) - jnp.mean(q_data, axis=1)


def critic_loss(
    critic: eqxrl.Ensemble,
    batch: eqxrl.Transition,
    target_q: Float[Array, " batch"],
    sampled_actions: Float[Array, "batch samples action_dim"],
    log_density: Float[Array, "batch samples"],
    cql_weight: Float[Array, ""],
    target_gap: Float[Array, ""] | float,
    cql_temperature: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """Σ_j [mean TD error² + w·(gap_j − target_gap)]: SAC's critic loss plus CQL's penalty."""
    q = eqxrl.ensemble_q(critic, batch.obs, batch.action)  # (ensemble, batch)
    td_loss = jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))
    gap = cql_gap(critic, batch.obs, q, sampled_actions, log_density, cql_temperature)
    loss = td_loss + cql_weight * jnp.sum(gap - target_gap)
    return loss, {"td_loss": td_loss, "cql_gap": jnp.mean(gap), "q_mean": jnp.mean(q),
                  "target_q_mean": jnp.mean(target_q)}


def multiplier_loss(
    multiplier: eqxrl.LogScalar,
    gap: Float[Array, ""],
    cql_alpha: Float[Array, ""] | float,
    target_gap: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], eqxrl.Metrics]:
    """−α'·α·(gap − target): α' grows while the gap exceeds its target, shrinks below it."""
    value = jnp.clip(multiplier(), 0.0, MAX_MULTIPLIER)
    return -value * cql_alpha * (gap - target_gap), {"value": value}


# ---------------------------------------------------------------------------- init / update / act
def init(
    key: PRNGKeyArray, spec: eqxrl.EnvSpec, config: Config, hyper: eqxrl.Hyper | None = None
) -> State:
    """SAC's networks and temperature for `spec`, and CQL's multiplier α'."""
    hyper = eqxrl.hyper_of(config) if hyper is None else hyper
    spec.require_unit_box_actions("CQL")
    spec.require_vector_obs("CQL", "algorithms/bc.py (--encoder)")
    multiplier = eqxrl.LogScalar.create(1.0)
    return State(
        sac=sac.init(key, spec, config, hyper),
        cql_multiplier=eqxrl.TrainState.create(
            multiplier, eqxrl.ADAM, learning_rate=hyper.cql_lagrange_lr
        ),
        cql_alpha=hyper.cql_alpha,
        cql_temperature=hyper.cql_temperature,
        cql_target_gap=jnp.float32(hyper.cql_target_gap if config.cql_lagrange else 0.0),
    )


def penalty_actions(
    actor: eqxrl.GaussianPolicy, batch: eqxrl.Transition, key: PRNGKeyArray, num: int
) -> tuple[Float[Array, "batch samples action_dim"], Float[Array, "batch samples"]]:
    """The logsumexp's actions, all scored at s, with the log-density each was drawn from:
    `num` each from Uniform[-1, 1], π(·|s) and π(·|s')."""
    k_random, k_curr, k_later = jax.random.split(key, 3)
    n, dim = batch.action.shape
    random_actions = jax.random.uniform(k_random, (n, num, dim), minval=-1.0, maxval=1.0)
    curr_actions, curr_log_prob = eqxrl.sample_actions(actor, batch.obs, k_curr, num)
    later_actions, later_log_prob = eqxrl.sample_actions(actor, batch.next_obs, k_later, num)
    actions = jnp.concatenate([random_actions, curr_actions, later_actions], axis=1)
    log_uniform = jnp.full((n, num), dim * np.log(0.5), jnp.float32)
    log_density = jnp.concatenate([log_uniform, curr_log_prob, later_log_prob], axis=1)
    return jax.lax.stop_gradient(actions), jax.lax.stop_gradient(log_density)


def update(
    state: State, batch: eqxrl.Transition, key: PRNGKeyArray, config: Config
) -> tuple[State, eqxrl.Metrics]:
    """SAC's named steps with CQL's critic loss, then α' if Lagrange-tuned."""
    eqxrl.check_one_agent(state, "cql.update")
    state.sac.spec.check_batch(batch)
    k_sac, k_penalty = jax.random.split(key)
    sampled, log_density = penalty_actions(
        state.sac.actor.model, batch, k_penalty, config.num_sampled_actions
    )
    multiplier = jnp.clip(state.cql_multiplier.model(), 0.0, MAX_MULTIPLIER)
    # SAC's step (`sac.update`) with CQL's critic loss in place of SAC's: the same keys.
    k_next, k_subset, k_target, _, k_actor = jax.random.split(k_sac, 5)
    target_q = sac.critic_target(state.sac, batch, (k_next, k_subset, k_target), config)
    critic, critic_info = state.sac.critic.apply_loss_fn(
        critic_loss, batch, target_q, sampled, log_density,
        state.cql_alpha * multiplier, state.cql_target_gap, state.cql_temperature,
    )
    new_sac, metrics = sac.policy_step(state.sac, critic, critic_info, batch.obs, k_actor, config)
    new_state = dataclasses.replace(state, sac=new_sac)
    if config.cql_lagrange:
        cql_multiplier, multiplier_info = state.cql_multiplier.apply_loss_fn(
            multiplier_loss, jax.lax.stop_gradient(metrics["critic/cql_gap"]), state.cql_alpha,
            state.cql_target_gap,
        )
        new_state = dataclasses.replace(new_state, cql_multiplier=cql_multiplier)
        multiplier_info.pop("grad_norm")
        metrics |= eqxrl.prefixed(cql_multiplier=multiplier_info)
    return new_state, metrics


def act(
    state: State, obs: eqxrl.Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Float[Array, "batch action_dim"]:
    """SAC's actions in [-1, 1] for a batch of observations; `deterministic` takes the mode."""
    eqxrl.check_one_agent(state, "cql.act")
    return sac.act(state.sac, obs, key, deterministic)


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train CQL on the dataset and return the run's summary."""
    return eqxrl.train_offline(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

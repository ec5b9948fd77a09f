"""Building blocks that several algorithms share: critic ensembles, TD targets and the
critics' TD loss, policy actions and sampled actions with log-probabilities, TD3's
target-policy smoothing, a learned log-space scalar and the entropy-temperature loss, the
shared optimiser, "do this every k updates", and metric names.

They are concepts, not plumbing: each is the same mathematics wherever it is used. What makes
an algorithm *that* algorithm (its losses, its update order) stays in its file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Shaped

from .envs import EnvSpec
from .networks import Ensemble, QFunction
from .types import Metrics, Obs

T = TypeVar("T")

# One optimiser object shared by every algorithm, so every `TrainState` built with it has the
# same static field (one compiled program for all seeds and grid points); each TrainState sets
# its own learning rate, which lives in the optimiser state as an array.
ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)


def q_ensemble(
    spec: EnvSpec, hidden_dims: tuple[int, ...], num: int = 2, *, key: PRNGKeyArray,
    vectorise: bool = False, **kwargs: Any,
) -> Ensemble:
    """`num` Q-functions Q(s, a) for `spec` as one `Ensemble`; `kwargs` go to each `MLP`.

    `vectorise=True` stacks the critics and applies them with one vmap (see `Ensemble`).
    """
    return Ensemble(
        lambda k: QFunction(spec.obs_dim, spec.action_dim, hidden_dims, key=k, **kwargs), num,
        key=key, vectorise=vectorise,
    )


def td_target(
    reward: Float[Array, " batch"],
    terminated: Bool[Array, " batch"],
    next_value: Float[Array, " batch"],
    discount: Float[Array, ""] | float,
) -> Float[Array, " batch"]:
    """r + γ·(1 − terminated)·V(s'): truncated episodes keep bootstrapping."""
    return reward + discount * jnp.where(terminated, 0.0, next_value)


CriticFn = Callable[..., Float[Array, " ensemble"]]  # (obs, action) -> one Q per member


def ensemble_q(
    critic: CriticFn, obs: Obs, action: Float[Array, "batch action_dim"],
    key: PRNGKeyArray | None = None,
) -> Float[Array, "ensemble batch"]:
    """Q-values of every member of a critic ensemble (an `Ensemble`, or any module that gives
    one Q per member for one (obs, action), such as one behind an encoder) on a batch; `key`
    enables dropout."""
    if key is None:
        return jax.vmap(critic, out_axes=1)(obs, action)
    keys = jax.random.split(key, action.shape[0])
    return jax.vmap(lambda o, a, k: critic(o, a, key=k), out_axes=1)(obs, action, keys)


def discrete_q(
    q: Callable[[Obs], Float[Array, " actions"]], obs: Obs, action: Int[Array, " batch"]
) -> tuple[Float[Array, "batch actions"], Float[Array, " batch"]]:
    """Q(s, ·) of a discrete-action Q-network on a batch, and Q(s, a) of the taken actions."""
    q_all = jax.vmap(q)(obs)
    return q_all, jnp.take_along_axis(q_all, action[:, None], axis=1)[:, 0]


def greedy_actions(
    q: Callable[[Obs], Float[Array, " actions"]], obs: Obs
) -> Int[Array, " batch"]:
    """argmax_a Q(s, a) for a batch of observations, as int32 actions."""
    return jnp.argmax(jax.vmap(q)(obs), axis=1).astype(jnp.int32)


def critic_td_loss(
    critic: CriticFn, obs: Obs, action: Float[Array, "batch action_dim"],
    target_q: Float[Array, " batch"], key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, ""], Metrics]:
    """Σ_j mean_batch (Q_j(s, a) − y)²: each critic regressed to the target, summed."""
    q = ensemble_q(critic, obs, action, key)  # (ensemble, batch)
    loss = jnp.sum(jnp.mean((q - target_q[None]) ** 2, axis=1))
    return loss, {"q_mean": jnp.mean(q), "target_q_mean": jnp.mean(target_q)}


def policy_actions(
    policy: Callable[[Obs], Any], obs: Obs, key: PRNGKeyArray, deterministic: bool = False
) -> Shaped[Array, " batch *action"]:
    """Actions of a distribution-valued policy for a batch: samples, or modes if `deterministic`
    (continuous actions, or the indices of a categorical's).

    A policy with a `batch(obs)` method (eqxrl's `GaussianPolicy`, `CategoricalPolicy`) is
    sampled once for the whole batch with `key`; any other `policy(obs)` is sampled per
    observation with keys split from `key`.
    """
    if hasattr(policy, "batch"):
        dist = policy.batch(obs)
        return dist.mode() if deterministic else dist.sample(seed=key)
    if deterministic:
        return jax.vmap(lambda o: policy(o).mode())(obs)
    n = jax.tree.leaves(obs)[0].shape[0]
    return jax.vmap(lambda o, k: policy(o).sample(seed=k))(obs, jax.random.split(key, n))


def sample_actions(
    policy: Callable[[Obs], Any], obs: Obs, key: PRNGKeyArray, num: int | None = None
) -> tuple[Float[Array, " batch *num action_dim"], Float[Array, " batch *num"]]:
    """An action and its log-probability per observation of a batch, or `num` of them (axis 1).

    `policy(obs)` returns a distrax distribution for one observation. A policy with a
    `batch(obs)` method is sampled once for the whole batch (one key, no per-example split).
    """
    if hasattr(policy, "batch"):
        if num is None:
            return policy.batch(obs).sample_and_log_prob(seed=key)
        action, log_prob = policy.batch(obs).sample_and_log_prob(seed=key, sample_shape=(num,))
        return jnp.moveaxis(action, 0, 1), jnp.moveaxis(log_prob, 0, 1)
    n = jax.tree.leaves(obs)[0].shape[0]
    shape = () if num is None else (num,)
    sample = lambda o, k: policy(o).sample_and_log_prob(seed=k, sample_shape=shape)
    return jax.vmap(sample)(obs, jax.random.split(key, n))


def smoothed_target_action(
    target_actor: Callable[[Obs], Array], next_obs: Obs, key: PRNGKeyArray,
    noise: Float[Array, ""] | float, noise_clip: Float[Array, ""] | float,
) -> Float[Array, "batch action_dim"]:
    """clip(μ̄(s') + clip(σ·N(0, 1), −c, c), −1, 1): TD3's target-policy smoothing on a batch."""
    action = jax.vmap(target_actor)(next_obs)
    eps = jnp.clip(noise * jax.random.normal(key, action.shape), -noise_clip, noise_clip)
    return jnp.clip(action + eps, -1.0, 1.0)


class LogScalar(eqx.Module):
    """A positive scalar learned in log space (SAC's temperature α, CQL's multiplier α')."""

    log_value: Float[Array, ""]

    @classmethod
    def create(cls, value: float) -> LogScalar:
        """A `LogScalar` starting at `value` (> 0)."""
        return cls(jnp.log(jnp.asarray(value, jnp.float32)))

    def __call__(self) -> Float[Array, ""]:
        return jnp.exp(self.log_value)


def temperature_loss(
    temperature: LogScalar, entropy: Float[Array, ""], target_entropy: Float[Array, ""]
) -> tuple[Float[Array, ""], Metrics]:
    """α·(H − H_target): automatic entropy tuning raises α when the entropy falls below target."""
    alpha = temperature()
    return alpha * (entropy - target_entropy), {"value": alpha}


def prefixed(**groups: Metrics) -> Metrics:
    """One flat metrics dict from named groups: `prefixed(critic={"loss": l})` -> `critic/loss`."""
    return {f"{name}/{k}": v for name, metrics in groups.items() for k, v in metrics.items()}


AGENTS = "agents"  # the axis name of the loops' vmap over agents (`eqxrl.agents`)


def every(period: int | Int[Array, ""], step: Int[Array, ""], fn: Callable[..., T], keep: T,
          *args: Any) -> T:
    """`fn(*args)` when `step % period == 0`, else `keep` (a tree laid out like fn's result).

    Only the branch taken runs (`lax.cond`), so skipped updates cost nothing. Under a plain
    `vmap` with a batched `step`, JAX turns the cond into a select and evaluates both branches;
    under the loops' vmap over agents (axis name `AGENTS`), whose agents all take the same
    number of updates, the condition is taken over the agents so the cond stays a cond.
    """
    due = step % period == 0
    with contextlib.suppress(NameError):  # NameError: not inside the loops' vmap over agents
        due = jax.lax.pmax(due.astype(jnp.int32), AGENTS) > 0  # the same for every agent
    return jax.lax.cond(due, lambda: fn(*args), lambda: keep)


def gae(
    reward: Float[Array, " steps *envs"],
    value: Float[Array, " steps *envs"],
    next_value: Float[Array, " steps *envs"],
    terminated: Bool[Array, " steps *envs"],
    truncated: Bool[Array, " steps *envs"],
    discount: Float[Array, ""] | float,
    gae_lambda: Float[Array, ""] | float,
) -> tuple[Float[Array, " steps *envs"], Float[Array, " steps *envs"]]:
    """Generalised advantage estimation over a rollout; returns `(advantages, returns)`.

    `next_value[t]` is V of the observation step t reached (the final observation at an
    episode's end), so δ_t = r_t + γ·(1 − terminated_t)·V(s'_t) − V(s_t): a truncated step
    bootstraps from its final observation, a terminated one does not. The recursion
    A_t = δ_t + γλ·(1 − done_t)·A_{t+1} stops at every episode end (done = terminated or
    truncated). Returns are A + V, the value target.
    """
    delta = reward + discount * jnp.where(terminated, 0.0, next_value) - value
    carry_on = discount * gae_lambda * (1.0 - (terminated | truncated).astype(reward.dtype))

    def back(advantage, xs):
        delta_t, carry_t = xs
        advantage = delta_t + carry_t * advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(back, jnp.zeros_like(delta[0]), (delta, carry_on),
                                 reverse=True)
    return advantages, advantages + value


def clipped_policy_loss(
    log_prob: Float[Array, " batch"], old_log_prob: Float[Array, " batch"],
    advantage: Float[Array, " batch"], clip: Float[Array, ""] | float,
) -> tuple[Float[Array, ""], Metrics]:
    """PPO's clipped surrogate: E[max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε))], ρ = π/π_old.

    Also returns the approximate KL (E[(ρ − 1) − log ρ]) and the fraction of clipped ratios.
    """
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    loss = jnp.mean(jnp.maximum(-advantage * ratio,
                                -advantage * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)))
    return loss, {"approx_kl": jnp.mean(ratio - 1.0 - log_ratio),
                  "clip_fraction": jnp.mean((jnp.abs(ratio - 1.0) > clip).astype(jnp.float32))}


def value_loss(
    value: Float[Array, " batch"], old_value: Float[Array, " batch"],
    target: Float[Array, " batch"], clip: Float[Array, ""] | float | None = None,
) -> Float[Array, ""]:
    """½·E[(V − target)²]; with `clip`, PPO's pessimistic clipped version: the larger of the
    squared errors of V and of old_V + clip(V − old_V, −ε, ε)."""
    error = (value - target) ** 2
    if clip is not None:
        clipped = old_value + jnp.clip(value - old_value, -clip, clip)
        error = jnp.maximum(error, (clipped - target) ** 2)
    return 0.5 * jnp.mean(error)

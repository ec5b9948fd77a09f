"""Array aliases shared across eqxrl, and the `Transition` batch type."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree, Scalar, Shaped

Obs = PyTree[Shaped[Array, "..."]]
"""An observation: an array, or a nested PyTree of arrays (for example `{"pixels", "state"}`)."""

Key = PRNGKeyArray
"""A JAX PRNG key (`jax.random.key(seed)`); every `init`, `update` and `act` takes one."""

FloatScalar = Float[Array, ""]
"""A float32 array of shape `()`."""

Metrics = dict[str, Scalar]
"""What `update` returns beside the state: a flat dict of scalar arrays, named
`group/name` (`critic/loss`); `eqxrl.prefixed` builds one."""

HyperValue = Float[ArrayLike, ""]
"""A hyperparameter that may be a Python float or a (vmapped) array."""


class Transition(eqx.Module):
    """One transition, or a batch of them with shared leading (batch) axes.

    `terminated` marks true terminal states (the bootstrap stops); `truncated` marks episodes
    cut by a time limit (the bootstrap continues). They are kept apart on purpose.
    """

    obs: Obs
    action: Shaped[Array, "..."]
    reward: Float[Array, "*batch"]
    next_obs: Obs
    terminated: Bool[Array, "*batch"]
    truncated: Bool[Array, "*batch"]

    def __check_init__(self):
        batch = jnp.shape(self.reward)
        for name in ("terminated", "truncated"):
            shape = jnp.shape(getattr(self, name))
            if shape != batch:
                raise ValueError(
                    f"Transition.{name} has shape {shape} but Transition.reward has shape "
                    f"{batch}; reward, terminated and truncated must share the batch shape."
                )
        for name in ("obs", "action", "next_obs"):
            for path, leaf in jax.tree_util.tree_leaves_with_path(getattr(self, name)):
                shape = jnp.shape(leaf)
                if shape[: len(batch)] != batch:
                    raise ValueError(
                        f"Transition.reward has shape {batch}, but Transition.{name}"
                        f"{jax.tree_util.keystr(path)} has shape {shape}: reward, terminated and "
                        f"truncated must have exactly the leading (batch) axes of {name}. A "
                        "trailing axis of size 1 on the reward is the usual cause; squeeze it."
                    )

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The shared leading shape (empty for a single transition)."""
        return jnp.shape(self.reward)


class SarsaTransition(Transition):
    """A `Transition` with the action the data took next: (s, a, r, s′, a′), as SARSA uses it.

    Offline methods that regularise toward the data's next action (ReBRAC's critic penalty)
    read it. `has_next_action` is False on rows where the data has none (the last row of an
    episode); `next_action` there repeats the row's own action and a loss must mask it.
    `eqxrl.datasets.with_next_actions` builds these from a dataset's episodes.
    """

    next_action: Shaped[Array, "..."]
    has_next_action: Bool[Array, "*batch"]

    def __check_init__(self):
        batch = jnp.shape(self.reward)
        if jnp.shape(self.has_next_action) != batch:
            raise ValueError(
                f"SarsaTransition.has_next_action has shape {jnp.shape(self.has_next_action)} "
                f"but reward has shape {batch}; they must share the batch shape.")
        if jnp.shape(self.next_action) != jnp.shape(self.action):
            raise ValueError(
                f"SarsaTransition.next_action has shape {jnp.shape(self.next_action)} but action "
                f"has shape {jnp.shape(self.action)}; a′ is laid out like a.")


class Rollout(eqx.Module):
    """`num_steps` steps of `num_envs` envs, collected by an on-policy loop: every field has
    the leading axes `(num_steps, num_envs)`.

    `next_obs` is the observation each step reached: at the end of an episode, its final
    observation (the env then restarts, so the next step's `obs` is a new episode's first).
    A truncated step bootstraps from it. `aux` holds what the algorithm's `explore` returned
    beside the action (PPO: the action's log-probability and the value estimate).
    """

    obs: Obs
    action: Shaped[Array, "..."]
    reward: Float[Array, "*batch"]  # (steps, envs); one step's row of it inside a loop: (envs,)
    next_obs: Obs
    terminated: Bool[Array, "*batch"]
    truncated: Bool[Array, "*batch"]
    aux: dict[str, Shaped[Array, "..."]]


class NStepTransition(eqx.Module):
    """A batch of n-step windows sampled from a replay buffer (`ReplayBuffer.sample_n_step`).

    A window starts at `obs` with `action` and runs for `steps` (1 to n) env steps: it stops
    early at the end of an episode (terminated or truncated) and at the newest stored
    transition. `rewards` has one column per step of the window, zero past `steps`; `next_obs`
    is where the window's last step went and `terminated` whether that step ended the episode
    for good (a truncated window keeps bootstrapping). `returns(discount)` gives the n-step
    return and the factor of the bootstrap value.
    """

    obs: Obs
    action: Shaped[Array, "..."]
    rewards: Float[Array, "*batch n"]
    next_obs: Obs
    terminated: Bool[Array, "*batch"]
    steps: Int[Array, "*batch"]

    def returns(self, discount: Float[ArrayLike, ""]) -> tuple[
        Float[Array, "*batch"], Float[Array, "*batch"]
    ]:
        """`(Σ_k γ^k r_k, γ^steps · (1 − terminated))`: the target is the first plus the second
        times the bootstrap value of `next_obs`."""
        n = jnp.shape(self.rewards)[-1]
        powers = jnp.asarray(discount, jnp.float32) ** jnp.arange(n, dtype=jnp.float32)
        lead = (1,) * (jnp.ndim(self.rewards) - 1)
        ret = jnp.sum(self.rewards * powers.reshape(lead + (n,)), axis=-1)
        bootstrap = jnp.asarray(discount, jnp.float32) ** self.steps.astype(jnp.float32)
        return ret, jnp.where(self.terminated, 0.0, bootstrap)

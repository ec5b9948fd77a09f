"""`EnvSpec`: the shapes, dtypes and bounds of an environment that `init` builds networks for."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eqxrl.core.types import NStepTransition, Obs, Transition


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Shapes, dtypes and bounds that `init` needs to build networks for an environment.

    Hashable, so algorithms keep it as a static field of their `State` and can validate their
    inputs at trace time.
    """

    # A ShapeDtypeStruct for array observations, or sorted (name, ShapeDtypeStruct) pairs
    # for dict observations (a tuple, so the spec stays hashable).
    observation: jax.ShapeDtypeStruct | tuple[tuple[str, jax.ShapeDtypeStruct], ...]
    action_shape: tuple[int, ...]
    discrete: bool = False
    num_actions: int | None = None
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    # Observations that stack the env's last k frames along their last axis, oldest first (the
    # replay then stores each frame once: `eqxrl.frames.FrameReplayBuffer`).
    frame_stack: int = 1

    def __post_init__(self):
        if self.discrete and (self.num_actions is None or self.num_actions < 1):
            raise ValueError(f"A discrete EnvSpec needs num_actions >= 1, got {self.num_actions}.")
        if self.frame_stack < 1:
            raise ValueError(f"EnvSpec frame_stack must be >= 1, got {self.frame_stack}.")
        for leaf in jax.tree.leaves(self.obs_structure):
            if self.frame_stack > 1 and (not leaf.shape or leaf.shape[-1] % self.frame_stack):
                raise ValueError(
                    f"EnvSpec frame_stack={self.frame_stack}: an observation of shape "
                    f"{leaf.shape} cannot hold that many frames along its last axis.")

    @property
    def obs_structure(self) -> Any:
        """The observation spec as a PyTree of ShapeDtypeStructs (dicts rebuilt)."""
        if isinstance(self.observation, tuple):
            return dict(self.observation)
        return self.observation

    @property
    def action_dim(self) -> int:
        """Size of a flat continuous action (or 1 for a discrete action)."""
        return int(np.prod(self.action_shape)) if self.action_shape else 1

    @property
    def obs_dim(self) -> int:
        """Size of the observation when all leaves are flattened and concatenated."""
        return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(self.obs_structure))

    def example_obs(self) -> Obs:
        """A single all-zero observation."""
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self.obs_structure)

    def example_transition(self) -> Transition:
        """A single all-zero transition, used to lay out a replay buffer."""
        dtype = jnp.int32 if self.discrete else jnp.float32
        return Transition(
            obs=self.example_obs(),
            action=jnp.zeros(self.action_shape, dtype),
            reward=jnp.zeros((), jnp.float32),
            next_obs=self.example_obs(),
            terminated=jnp.zeros((), bool),
            truncated=jnp.zeros((), bool),
        )

    def obs_batch_shape(self, obs: Obs, name: str = "obs") -> tuple[int, ...]:
        """Check a batch of observations against the spec and return its batch shape.

        Raises a ValueError naming `name`, the expected and the actual shape or dtype, also
        when `obs` is one observation without a batch axis.
        """
        expected = self.obs_structure
        if jax.tree.structure(obs) != jax.tree.structure(expected):
            raise ValueError(
                f"{name} has structure {jax.tree.structure(obs)}, expected "
                f"{jax.tree.structure(expected)} from the environment spec."
            )
        batch = None
        for (path, leaf), want in zip(
            jax.tree_util.tree_leaves_with_path(obs), jax.tree.leaves(expected), strict=True
        ):
            where = f"{name}{jax.tree_util.keystr(path)}"
            shape, n = tuple(jnp.shape(leaf)), len(want.shape)
            if shape[len(shape) - n :] != tuple(want.shape) or len(shape) < n:
                raise ValueError(
                    f"{where} has shape {shape}, expected (..., {', '.join(map(str, want.shape))})"
                    f" (batch axes followed by the observation shape {tuple(want.shape)})."
                )
            if jnp.result_type(leaf) != want.dtype:
                raise ValueError(
                    f"{where} has dtype {jnp.result_type(leaf)}, expected {want.dtype}; convert it"
                    f" (for example with .astype(jnp.{want.dtype})) before passing it."
                )
            lead = shape[: len(shape) - n]
            if batch is not None and lead != batch:
                raise ValueError(f"{where} has batch shape {lead}, but other leaves have {batch}.")
            batch = lead
        if batch == ():
            path, leaf = jax.tree_util.tree_leaves_with_path(obs)[0]
            shape = tuple(jnp.shape(leaf))
            if isinstance(self.observation, tuple):
                raise ValueError(
                    f"{name} is one observation ({name}{jax.tree_util.keystr(path)} has shape "
                    f"{shape}); a batch is expected: add a leading axis to every leaf "
                    f"(jax.tree.map(lambda x: x[None], {name}))."
                )
            raise ValueError(
                f"{name} has shape {shape}, which is one observation; a batch is expected: add "
                f"a leading axis ({name}[None])."
            )
        return batch if batch is not None else ()

    def batch_size(self, obs: Obs, name: str = "obs") -> int:
        """Check a batch of observations against the spec and return its size.

        Like `obs_batch_shape`, but exactly one batch axis is allowed (`act` takes
        `(batch, *observation_shape)`).
        """
        lead = self.obs_batch_shape(obs, name)
        if len(lead) != 1:
            if isinstance(self.observation, tuple):
                want = "(batch, *observation_shape) in every leaf"
            else:
                want = f"(batch{''.join(f', {d}' for d in self.observation.shape)})"
            raise ValueError(
                f"{name} has batch shape {lead}, expected exactly one batch axis: {want}. Merge "
                f"the leading axes (reshape them to one axis of {math.prod(lead)}) or jax.vmap "
                "over the extra ones."
            )
        return lead[0]

    def require_vector_obs(self, algo: str, instead: str) -> None:
        """Raise when an observation holds images (leaves of 3 or more axes) and `algo` feeds
        observations to an MLP, with no image encoder; `instead` names what takes pixels."""
        images = [leaf.shape for leaf in jax.tree.leaves(self.obs_structure) if leaf.ndim >= 3]
        if images:
            raise ValueError(
                f"{algo} feeds observations to an MLP and has no image encoder, but this env's "
                f"observations hold images of shape {images[0]}: flattening them would train "
                f"on {math.prod(images[0])} raw pixel inputs. For pixels use {instead}."
            )

    def require_unit_box_actions(self, algo: str) -> None:
        """Raise unless actions are continuous and bounded by [-1, 1] (tanh-style policies)."""
        if self.discrete:
            raise ValueError(
                f"{algo} needs a continuous (Box) action space, but the env has "
                f"Discrete({self.num_actions})."
            )
        bounds = (self.action_low, self.action_high)
        if bounds != ((-1.0,) * self.action_dim, (1.0,) * self.action_dim):
            raise ValueError(
                f"{algo} acts in [-1, 1], but the action bounds are {bounds}; make the env with "
                "eqxrl.make_env (which rescales) or gymnasium.wrappers.RescaleAction."
            )

    def check_batch(self, batch: Transition | NStepTransition, name: str = "batch"
                    ) -> tuple[int, ...]:
        """Check a batch of transitions (or n-step windows) against the spec; return its batch
        shape.

        Catches the classic `(batch, 1)` reward against a `(batch,)` value at trace time.
        """
        lead = self.obs_batch_shape(batch.obs, f"{name}.obs")
        next_lead = self.obs_batch_shape(batch.next_obs, f"{name}.next_obs")
        if next_lead != lead:
            raise ValueError(f"{name}.next_obs has batch shape {next_lead}, {name}.obs has {lead}.")
        if isinstance(batch, NStepTransition):
            fields = ("terminated", "steps")
            shape = tuple(jnp.shape(batch.rewards))
            if shape[:-1] != lead or len(shape) != len(lead) + 1:
                raise ValueError(
                    f"{name}.rewards has shape {shape}, expected {lead} + (n,): one column per "
                    "step of the window.")
        else:
            fields = ("reward", "terminated", "truncated")
        for field in fields:
            shape = tuple(jnp.shape(getattr(batch, field)))
            if shape != lead:
                raise ValueError(
                    f"{name}.{field} has shape {shape}, expected {lead} (the batch shape of "
                    f"{name}.obs). A trailing axis of size 1 would broadcast silently against "
                    f"values of shape {lead}; squeeze it."
                )
        if jnp.issubdtype(jnp.result_type(batch.action), jnp.integer) != self.discrete:
            kind = (f"Discrete({self.num_actions}) actions (int32 indices)" if self.discrete
                    else f"continuous actions of shape {self.action_shape} (float32)")
            raise ValueError(
                f"{name}.action has dtype {jnp.result_type(batch.action)}, but the env takes "
                f"{kind}: the data and the env do not match (a discrete dataset needs a "
                "discrete-action env and algorithm, and the other way round).")
        want = lead + self.action_shape
        shape = tuple(jnp.shape(batch.action))
        if shape != want:
            raise ValueError(f"{name}.action has shape {shape}, expected {want}.")
        want_dtype = np.dtype(np.int32 if self.discrete else np.float32)
        if jnp.result_type(batch.action) != want_dtype:
            raise ValueError(
                f"{name}.action has dtype {jnp.result_type(batch.action)}, expected {want_dtype}."
            )
        return lead

"""Environment specs and gymnasium environments with eqxrl's standard wrappers."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from .types import NStepTransition, Obs, Transition


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


def _box_spec(space: gym.spaces.Box) -> jax.ShapeDtypeStruct:
    dtype = np.uint8 if space.dtype == np.uint8 else np.float32
    return jax.ShapeDtypeStruct(tuple(space.shape), np.dtype(dtype))


FRAME_STACK_ATTRIBUTE = "eqxrl_frame_stack"


def mark_frame_stack(env: gym.Env, k: int) -> gym.Env:
    """Tell `spec_from_env` that `env`'s observations stack its last `k` frames along their
    last axis, oldest first, and repeat the first frame at an episode's start."""
    env = gym.Wrapper(env)
    setattr(env, FRAME_STACK_ATTRIBUTE, k)
    return env


def spec_from_env(env: gym.Env) -> EnvSpec:
    """Build an EnvSpec from a gymnasium env's observation and action spaces."""
    obs_space = env.observation_space
    if isinstance(obs_space, gym.spaces.Box):
        observation = _box_spec(obs_space)
    elif isinstance(obs_space, gym.spaces.Dict):
        observation = tuple(
            (k, _box_spec(s))
            for k, s in sorted(obs_space.spaces.items())  # type: ignore[arg-type]
        )
    else:
        raise TypeError(
            f"Observation space {obs_space} is not supported; use a Box or a Dict of Boxes."
        )
    try:  # set by eqxrl's frame-stacking env makers (make_pixel_env, Atari)
        frame_stack = int(env.get_wrapper_attr(FRAME_STACK_ATTRIBUTE))
    except AttributeError:
        frame_stack = 1
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return EnvSpec(observation, (), discrete=True, num_actions=int(space.n),
                       frame_stack=frame_stack)
    if isinstance(space, gym.spaces.Box):
        return EnvSpec(
            observation,
            tuple(space.shape),
            action_low=tuple(float(x) for x in np.ravel(space.low)),
            action_high=tuple(float(x) for x in np.ravel(space.high)),
            frame_stack=frame_stack,
        )
    raise TypeError(f"Action space {space} is not supported; use Box or Discrete.")


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """Make a gymnasium env with eqxrl's standard wrappers.

    Bounded Box actions are rescaled to [-1, 1] (so tanh policies fit every env), float
    observations become float32, and episode return, length and time are recorded in
    `info["episode"]`. Terminated and truncated stay separate, as gymnasium returns them.
    `ALE/<Game>-v5` ids get the standard Atari preprocessing (`eqxrl.vision.make_atari_env`:
    84×84 grayscale, 4 frames stacked channels last), with ale-py installed; `pixels:<id>`
    observes the env's rendered frames (`eqxrl.vision.make_pixel_env`: 84×84 RGB, 3 frames
    stacked channels last), and `pixels:<id>,action_repeat=4,frame_stack=3` sets those two
    options in the id itself, so that datasets, evaluations and resumed runs remake the same env.
    """
    if env_id.split(":", 1)[0] in ("gymnax", "brax"):
        raise ValueError(
            f"env_id={env_id!r} is a JAX-native env, not a gymnasium one: eqxrl.make_jax_env "
            "makes it, and the compiled loops train on it (train_online sends it there)."
        )
    if env_id.startswith("ALE/"):  # Atari, with the standard DQN preprocessing
        from .vision.wrappers import make_atari_env

        return gym.wrappers.RecordEpisodeStatistics(make_atari_env(env_id, **kwargs))
    if env_id.startswith("pixels:"):  # rendered frames, 84x84, the last 3 stacked (DrQ's)
        from .vision.wrappers import make_pixel_env

        name, options = pixel_env_options(env_id)
        env = make_pixel_env(name, **({"size": (84, 84), "frame_stack": 3} | options | kwargs))
        if isinstance(env.action_space, gym.spaces.Box):
            env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
        return gym.wrappers.RecordEpisodeStatistics(env)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise ValueError(
            f"env_id={env_id!r} could not be made by gymnasium: {err}. Registered ids include "
            f"Pendulum-v1, HalfCheetah-v5, Hopper-v5; see gymnasium.pprint_registry()."
        ) from err
    space = env.action_space
    if (
        isinstance(space, gym.spaces.Box)
        and np.all(np.isfinite(space.low))
        and np.all(np.isfinite(space.high))
        and not (np.all(space.low == -1.0) and np.all(space.high == 1.0))
    ):
        env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    obs_space = env.observation_space
    if isinstance(obs_space, gym.spaces.Box) and obs_space.dtype == np.float64:
        with warnings.catch_warnings():  # the float32 Box it builds warns about the cast
            warnings.simplefilter("ignore", UserWarning)
            env = gym.wrappers.DtypeObservation(env, np.float32)
    return gym.wrappers.RecordEpisodeStatistics(env)


PIXEL_ID_OPTIONS = ("action_repeat", "frame_stack")


def pixel_env_options(env_id: str) -> tuple[str, dict[str, int]]:
    """Split `pixels:<id>,key=value,...` into the gymnasium id and `make_pixel_env` options."""
    name, *parts = env_id.removeprefix("pixels:").split(",")
    options = {}
    for part in parts:
        key, _, value = part.partition("=")
        if key not in PIXEL_ID_OPTIONS or not value.isdigit() or int(value) < 1:
            raise ValueError(
                f"env_id={env_id!r}: {part!r} is not a pixel-env option; write key=value with "
                f"key one of {', '.join(PIXEL_ID_OPTIONS)} and a positive integer value, for "
                "example pixels:CartPole-v1,action_repeat=4.")
        if key in options:
            raise ValueError(f"env_id={env_id!r} sets {key} twice; keep one.")
        options[key] = int(value)
    return name, options


def derived_seed(*parts: int) -> int:
    """A 31-bit seed derived deterministically from integers (episode and evaluation seeds)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)

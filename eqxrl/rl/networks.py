"""The network family of an off-policy algorithm with continuous actions, its optimiser, and
parameter resets: one `Networks` config (flat flags `--network simba`, `--weight-decay`,
`--reset-interval`, ...) that SAC, TD3, CrossQ and TQC each hold as `net`, and what it builds.

- `--network simba`: SimBa networks (`SimbaMLP`) for actor and critics, with running
  observation normalisation (`RunningNormalizer`, the paper's RSNorm) in the state and AdamW
  with weight decay 1e-2 (Lee et al., ICLR 2025; their SAC: critic 2 blocks of 512, actor 1
  block of 128).
- `--reset-interval N`: every N updates the chosen networks are re-initialised (and their
  optimiser moments, with `--reset-optimizer`), as in the replay-ratio scaling of D'Oro et al.
  (ICLR 2023) and BBF (Schwarzer et al., ICML 2023), which keeps high-UTD training plastic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import equinox as eqx
import jax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree

from eqxrl.core.checks import (
    ConfigError,
    at_least,
    changed_flags,
    flag,
    non_negative,
    only_with,
)
from eqxrl.core.types import Obs, Transition
from eqxrl.data.running_norm import RunningNormalizer
from eqxrl.nn.mlp import MLP
from eqxrl.nn.optim import ADAM, ADAMW
from eqxrl.nn.simba import SimbaMLP
from eqxrl.nn.train_state import TrainState
from eqxrl.rl.schedules import every

S = TypeVar("S")

SIMBA_WEIGHT_DECAY = 1e-2  # the SimBa paper's AdamW weight decay


@dataclasses.dataclass(frozen=True)
class Networks:
    """Network family, weight decay and parameter resets (SAC, TD3, CrossQ, TQC)."""

    network: Literal["mlp", "simba"] = "mlp"
    """mlp: the algorithm's own layers (its hidden-dims flags); simba: SimBa residual networks
    (Lee et al. 2025) sized by the --simba-* flags, with running observation normalisation and
    AdamW"""
    simba_critic_width: int = 512
    """width of each critic's residual blocks (--network simba)"""
    simba_critic_blocks: int = 2
    """residual blocks per critic (--network simba)"""
    simba_actor_width: int = 128
    """width of the actor's residual blocks (--network simba)"""
    simba_actor_blocks: int = 1
    """residual blocks of the actor (--network simba)"""
    obs_norm: bool | None = None
    """normalise observations with running statistics kept in the state, updated on every
    training batch (SimBa's RSNorm); None: on with --network simba, off with mlp"""
    weight_decay: float | None = None
    """decoupled weight decay of actor and critics (AdamW); None: 1e-2 with --network simba
    (the paper's), 0 (plain Adam) with mlp"""
    reset_interval: int | None = None
    """re-initialise the networks named by --reset-networks every this many updates (None:
    never)"""
    reset_networks: tuple[Literal["actor", "critic"], ...] = ("actor", "critic")
    """what a reset re-initialises (target networks follow their online network)"""
    reset_optimizer: bool = True
    """a reset also clears the reset networks' optimiser moments (learning rates are kept)"""

    def __post_init__(self):
        at_least(self, 1, "simba_critic_width", "simba_critic_blocks", "simba_actor_width",
                 "simba_actor_blocks")
        if self.weight_decay is not None:
            non_negative(self, "weight_decay")
        if self.reset_interval is not None and self.reset_interval < 1:
            raise ConfigError(
                f"--reset-interval must be >= 1 update, got {self.reset_interval}; leave it out "
                "(None) for no resets.")
        sized = changed_flags(self, *(f.name for f in dataclasses.fields(self)
                                      if f.name.startswith("simba_")))
        if sized and not self.simba:
            raise ConfigError(
                f"{', '.join(sized)} size(s) SimBa networks, but --network is {self.network!r}: "
                "add --network simba, or size the MLP with the algorithm's hidden-dims flags.")
        if not self.reset_networks:
            raise ConfigError("--reset-networks needs at least one of actor, critic; to never "
                              "reset, leave out --reset-interval.")
        only_with(self, self.reset_interval is not None, "--reset-interval N",
                  "reset_networks", "reset_optimizer")

    def require_default(self, algorithm: str) -> None:
        """Refuse any network option for an algorithm that does not build on them (one that
        inherits a Config holding `net`, but composes its own steps)."""
        changed = changed_flags(self)
        if changed:
            raise ConfigError(
                f"{algorithm} does not take {', '.join(changed)}: its update does not normalise "
                "observations or reset networks. These options belong to SAC, TD3, CrossQ and "
                "TQC.")

    @property
    def simba(self) -> bool:
        """Whether the networks are SimBa's (`--network simba`)."""
        return self.network == "simba"

    @property
    def decay(self) -> float:
        """The weight decay in effect."""
        if self.weight_decay is not None:
            return self.weight_decay
        return SIMBA_WEIGHT_DECAY if self.simba else 0.0

    def refuse_mlp_options(self, **given: Any) -> None:
        """Refuse options of the plain MLP (`critic_layer_norm=True`, ...) with --network simba."""
        bad = [name for name, value in given.items() if value]
        if self.simba and bad:
            names = " and ".join(flag(b) for b in bad)
            what = "is an option" if len(bad) == 1 else "are options"
            raise ConfigError(
                f"{names} {what} of the plain MLP and cannot be honoured with --network simba, "
                "whose blocks have their own LayerNorms; drop it or use --network mlp.")

    def refuse_mlp_sizes(self, config: Any, *names: str) -> None:
        """Refuse the algorithm's own MLP sizes (`hidden_dims`, ...) changed from their defaults
        with --network simba, whose blocks are sized by the --simba-* flags instead."""
        if not self.simba:
            return
        changed = changed_flags(config, *names)
        if changed:
            raise ConfigError(
                f"{', '.join(changed)} size(s) the plain MLP, which --network simba replaces: size "
                "SimBa with --simba-critic-width/--simba-critic-blocks and --simba-actor-width/"
                "--simba-actor-blocks, or use --network mlp.")

    def critic(self, hidden_dims: tuple[int, ...], mlp: type = MLP, *,
               simba_kwargs: dict[str, Any] | None = None,
               **kwargs: Any) -> tuple[tuple[int, ...], dict[str, Any]]:
        """`(hidden, keywords)` for a critic head: the algorithm's own `mlp`, `hidden_dims` and
        `kwargs`, or SimBa blocks with `simba_kwargs`."""
        simba_kwargs = simba_kwargs or {}
        if self.simba:
            return (self.simba_critic_width,) * self.simba_critic_blocks, {
                "mlp": SimbaMLP, **simba_kwargs}
        return hidden_dims, {"mlp": mlp, **kwargs}

    def actor(self, hidden_dims: tuple[int, ...], *, trunk: bool, mlp: type = MLP,
              simba_kwargs: dict[str, Any] | None = None,
              **kwargs: Any) -> tuple[tuple[int, ...], dict[str, Any]]:
        """`(hidden, keywords)` for an actor, as `critic` does. `trunk=True` for policies that
        put heads on a trunk (`GaussianPolicy`: its last hidden size is the trunk's width)."""
        simba_kwargs = simba_kwargs or {}
        if self.simba:
            blocks = self.simba_actor_blocks + (1 if trunk else 0)
            return (self.simba_actor_width,) * blocks, {"mlp": SimbaMLP, **simba_kwargs}
        return hidden_dims, {"mlp": mlp, **kwargs}

    def train_state(self, model: PyTree, learning_rate: Any, **hyperparams: Any) -> TrainState:
        """A `TrainState` on Adam, or AdamW when weight decay is on."""
        if self.decay > 0:
            return TrainState.create(model, ADAMW, learning_rate=learning_rate,
                                     weight_decay=self.decay, **hyperparams)
        return TrainState.create(model, ADAM, learning_rate=learning_rate, **hyperparams)

    def obs_normalizer(self, example_obs: Obs) -> RunningNormalizer | None:
        """The running normaliser for the state, or None when observations are used raw."""
        on = self.simba if self.obs_norm is None else self.obs_norm
        return RunningNormalizer.create(example_obs) if on else None


NETWORK_FLAGS = tuple(flag(f.name) for f in dataclasses.fields(Networks))


def observe_batch(
    norm: RunningNormalizer | None, batch: Transition
) -> tuple[RunningNormalizer | None, Transition]:
    """Update the running normaliser with the batch's observations, then normalise `obs` and
    `next_obs` with it; with no normaliser, the batch unchanged."""
    if norm is None:
        return None, batch
    norm = norm.observe(batch.obs)
    return norm, normalised_batch(norm, batch)


def normalised_batch(norm: RunningNormalizer | None, batch: Transition) -> Transition:
    """`batch` with `obs` and `next_obs` through the running normaliser, if there is one (its
    statistics unchanged)."""
    if norm is None:
        return batch
    return dataclasses.replace(batch, obs=norm(batch.obs), next_obs=norm(batch.next_obs))


def normalised(norm: RunningNormalizer | None, obs: Obs) -> Obs:
    """`obs` through the running normaliser, if there is one."""
    return obs if norm is None else norm(obs)


RESET_SALT = 0x7E5E7  # folds the update's key into the reset's, so runs without resets keep theirs


def reset_networks(state: S, fresh: S, names: tuple[str, ...], reset_optimizer: bool) -> S:
    """`state` with the `TrainState`s named by `names` (and their `target_<name>` copies, where
    the state has them) taken from `fresh`, a newly initialised state of the same algorithm.
    Update counts and learning rates are kept; with `reset_optimizer` the optimiser's moments
    are `fresh`'s."""
    for name in names:
        old, new = getattr(state, name), getattr(fresh, name)
        opt_state = old.opt_state
        if reset_optimizer:  # keep the injected hyperparameters (a grid's learning rates)
            opt_state = eqx.tree_at(lambda s: s.inner_state, opt_state, new.opt_state.inner_state)
        replace = {name: TrainState(model=new.model, opt_state=opt_state, step=old.step,
                                    tx=old.tx)}
        if hasattr(state, f"target_{name}"):
            replace[f"target_{name}"] = getattr(fresh, f"target_{name}")
        state = dataclasses.replace(state, **replace)
    return state


def scheduled_reset(
    state: S, updates: Int[Array, ""], key: PRNGKeyArray, config: Networks,
    make: Callable[[PRNGKeyArray], S],
) -> S:
    """Reset the networks when `updates` (done so far) is a positive multiple of
    `--reset-interval`; `make(key)` initialises a fresh state (the algorithm's `init`).
    Without a reset interval, `state` unchanged and nothing compiled."""
    if config.reset_interval is None:
        return state
    key = jax.random.fold_in(key, RESET_SALT)
    fresh = lambda: reset_networks(state, make(key), config.reset_networks,
                                   config.reset_optimizer)
    return every(config.reset_interval, updates, fresh, state, skip_first=True)

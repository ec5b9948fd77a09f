"""The contract between an algorithm module and the loops, as types: what a module must define
(`typing.Protocol`s, checked once when a run starts) and the optional hooks a `main` passes.

Every algorithm module defines `Config`, `State`, `init`, `update` and `act`; an on-policy one
also `explore`. The loops call `init(key, spec, config, hyper)`, with `hyper` the agent's swept
hyperparameters (`eqxrl.core.hyper`); `init` reads those from `hyper`, never from `config`. A
loop never looks for anything else in the module: what changes how a loop runs (DQN's ε
schedule on env steps, its n-step batches, TD3+BC's dataset statistics, BC's filtered dataset)
is passed explicitly, as a hooks record, by the algorithm's `main`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from eqxrl.core.types import Metrics


class Algorithm(Protocol):
    """What every loop calls: an algorithm module (see README, "Writing an algorithm")."""

    Config: type
    State: type

    def init(self, key: Any, spec: Any, config: Any, hyper: Any = None) -> Any:
        """The agent's first `State`, with the swept hyperparameters `hyper` as array leaves."""
        ...

    def update(self, state: Any, batch: Any, key: Any, config: Any) -> tuple[Any, Metrics]:
        """One learning step on `batch`: the new `State` and a dict of scalar metrics."""
        ...

    def act(self, state: Any, obs: Any, key: Any, deterministic: bool = False) -> Any:
        """The action for one observation; `deterministic=True` takes the policy's mode."""
        ...


class OffPolicyAlgorithm(Algorithm, Protocol):
    """An algorithm trained from a replay buffer (`train_online`, `train_compiled`)."""


class OfflineAlgorithm(Algorithm, Protocol):
    """An algorithm trained on a fixed dataset (`train_offline`)."""


class OnPolicyAlgorithm(Algorithm, Protocol):
    """An algorithm trained on rollouts (`train_on_policy`): `explore(state, obs, key) ->
    (action, aux)` samples the actions and returns what `update` needs of them (`aux`)."""

    def explore(self, state: Any, obs: Any, key: Any) -> tuple[Any, dict[str, Any]]:
        """A sampled action for one observation and what `update` needs of it (`aux`)."""
        ...


def _members(protocol: type) -> list[str]:
    names: dict[str, None] = {}
    for cls in reversed(protocol.__mro__):
        if cls is object or cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        for name in [*getattr(cls, "__annotations__", {}), *vars(cls)]:
            if not name.startswith("_"):
                names[name] = None
    return list(names)


def check_algorithm(algorithm: ModuleType, protocol: type = Algorithm) -> None:
    """Refuse a module that lacks a name of `protocol`, with one error that lists them all."""
    members = _members(protocol)
    missing = [name for name in members if not hasattr(algorithm, name)]
    uncallable = [name for name in members if name not in ("Config", "State")
                  and hasattr(algorithm, name) and not callable(getattr(algorithm, name))]
    problems = ([f"it lacks {missing}"] if missing else []) + (
        [f"{uncallable} are not functions"] if uncallable else [])
    if problems:
        raise TypeError(
            f"{getattr(algorithm, '__name__', algorithm)!r} is not an {protocol.__name__}: "
            f"{'; '.join(problems)}. It must define {members} (README: Writing an algorithm).")


@dataclasses.dataclass(frozen=True)
class OffPolicyHooks:
    """What an off-policy algorithm may change in `train_online` / `train_compiled`."""

    explore: Callable[[Any, Any, Any, Any], Any] | None = None
    """`explore(state, obs, key, env_step) -> action`: the loops' action choice while training,
    given the env steps taken so far (an int32 array; DQN's ε follows env steps, not updates).
    None: `act(state, obs, key)`"""
    sample_batch: Callable[[Any, Any, int, Any], Any] | None = None
    """`sample_batch(buffer, key, batch_size, config) -> batch` instead of `buffer.sample`
    (DQN draws n-step windows with `ReplayBuffer.sample_n_step`)"""
    observe: Callable[[Any, Any], Any] | None = None
    """`observe(state, transition) -> state` after every env step (random ones too), given that
    step's `Transition` as a batch of one row, before it is stored: statistics that follow the
    env's stream rather than the training batches (SimbaV2's observation statistics and return
    scale). None: the state changes only in `update`"""
    start_from: str | None = None
    """a run folder of the same algorithm and agents whose newest checkpoint's state the agents
    start from, instead of `init` (fine-tuning an offline run); the replay buffer starts empty"""
    offline_preset: str = "none"
    """the preprocessing preset of `--offline-data` (`eqxrl.datasets.preprocess`); its reward
    transform is applied to the online rows too, so both halves of a batch agree"""


@dataclasses.dataclass(frozen=True)
class OfflineHooks:
    """What an offline algorithm may change in `train_offline`."""

    init: Callable[[Any, Any, Any, Any, Any], Any] | None = None
    """`init(key, spec, config, hyper, dataset) -> State`, given the training data (TD3+BC
    computes its observation statistics there); the whole dataset is read, so not with
    --lazy-images"""
    prepare: Callable[[Any, Any], Any] | None = None
    """`prepare(dataset, config) -> dataset`, applied once after loading and preprocessing
    (BC keeps its best episodes); a resumed run prepares its dataset again the same way"""

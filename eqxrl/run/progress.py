"""A run's bookkeeping outside the arrays (`Progress`): the step reached, the wall time, and per
agent the evaluation results and where each env is in its episode. It is saved as every
checkpoint's JSON metadata and read back on `--resume`, so a resumed run continues its episodes,
its curves and its summary where they stopped.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import numpy as np


@dataclasses.dataclass
class AgentProgress:
    """One agent's bookkeeping. The per-env lists are empty in the compiled loops, whose envs
    live in the carry."""

    last_eval: float | None = None
    """the mean return of the newest evaluation"""
    best_eval: float | None = None
    """the best mean return of any evaluation so far"""
    last_score: float | None = None
    """the newest evaluation's normalised score, for envs with reference returns"""
    episodes_done: int = 0
    """training episodes finished"""
    episode: list[int] = dataclasses.field(default_factory=list)
    """per env, the index of its current episode (it seeds the env's reset)"""
    episode_actions: list[list[Any]] = dataclasses.field(default_factory=list)
    """per env, the actions since its last reset (replayed on --resume to reach the same obs)"""
    episode_returns: list[float] = dataclasses.field(default_factory=list)
    """returns of the episodes finished since the last log row"""

    @classmethod
    def fresh(cls, envs: int) -> AgentProgress:
        """The bookkeeping of an agent that has not started, with `envs` envs on the host."""
        return cls(episode=[0] * envs, episode_actions=[[] for _ in range(envs)])

    def record_eval(self, stats: dict[str, float]) -> None:
        """Note an evaluation's results (`eqxrl.envs.evaluation.evaluate`'s statistics)."""
        self.last_eval = stats["return_mean"]
        self.last_score = stats.get("normalized_score_mean")
        self.best_eval = max(-np.inf if self.best_eval is None else self.best_eval,
                             stats["return_mean"])

    def end_episode(self, env: int, episode_return: float) -> None:
        """Env `env` finished an episode with `episode_return`; its next episode starts."""
        self.episode_returns.append(float(episode_return))
        self.episodes_done += 1
        self.episode[env] += 1
        self.episode_actions[env] = []

    def take_returns(self) -> dict[str, float]:
        """The log row's `episode_return` (mean over the episodes since the last row, none if
        none finished); starts the next row's collection."""
        returns, self.episode_returns = self.episode_returns, []
        return {"episode_return": float(np.mean(returns))} if returns else {}

    def to_json(self) -> dict[str, Any]:
        """The bookkeeping as a dict of JSON values, read back by `from_json`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> AgentProgress:
        """Read `to_json`'s dict; also the layout of checkpoints before 0.2, whose host loop
        kept one env's `episode` as an int and its actions as one list."""
        saved = dict(saved)
        if isinstance(saved.get("episode"), int):
            saved["episode"] = [saved["episode"]]
            saved["episode_actions"] = [saved.get("episode_actions", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise ValueError(f"checkpoint metadata: unknown per-agent entries {unknown}; "
                             f"expected some of {sorted(known)}.")
        return cls(**saved)


@dataclasses.dataclass
class Progress:
    """A run's bookkeeping, saved as each checkpoint's metadata (`to_meta`)."""

    agents: list[AgentProgress]
    step: int = 0
    """env steps (online loops) or updates (offline loop) done"""
    wall_time: float = 0.0
    """seconds of training over every session of the run, at the last checkpoint"""
    wandb_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    """the Weights & Biases run this run logs to (kept across --resume)"""
    buffer_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    """the saved replay buffer's sizes (`eqxrl.data.saved.buffer_saved`), to read it back"""

    @classmethod
    def fresh(cls, num_agents: int, envs: int) -> Progress:
        """A new run's bookkeeping: `num_agents` agents with `envs` host envs each."""
        return cls([AgentProgress.fresh(envs) for _ in range(num_agents)])

    def to_meta(self) -> dict[str, Any]:
        """The JSON-able checkpoint metadata (the buffer sizes at the top level, where
        `eqxrl.data.saved.buffer_saved_like` reads them)."""
        return {"step": self.step, "wall_time": self.wall_time, "wandb_id": self.wandb_id,
                "agents": [a.to_json() for a in self.agents]} | self.buffer_sizes

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Progress:
        """Read `to_meta`'s dict back."""
        missing = [k for k in ("step", "wall_time", "wandb_id", "agents") if k not in meta]
        if missing:
            raise ValueError(f"checkpoint metadata has no {missing}: it was not written by a "
                             "training run of eqxrl.")
        sizes = {k: int(v) for k, v in meta.items() if k.startswith("buffer_")}
        return cls([AgentProgress.from_json(a) for a in meta["agents"]], int(meta["step"]),
                   float(meta["wall_time"]), str(meta["wandb_id"]), sizes)

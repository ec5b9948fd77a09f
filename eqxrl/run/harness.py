"""The run folder every loop writes through (`Run`): config file, logger, progress, evaluation
and checkpoint schedules, and the summary. `eqxrl.run.drive` runs the loops on it; loops own
only their step logic.

A run folder holds `config.json` (`{"algorithm", "module", "config"}`), `train.csv`,
`eval.csv`, TensorBoard events, `checkpoints/step_*.ckpt` and, when the run ends,
`summary.json`. Checkpoints carry the run's bookkeeping (`eqxrl.run.progress.Progress`) as
metadata.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from eqxrl.core.jit import jit
from eqxrl.core.seeds import derived_seed
from eqxrl.envs.evaluation import evaluate, make_eval_envs
from eqxrl.run import checkpoints, sharded
from eqxrl.run.agents import Agents
from eqxrl.run.config_io import field_defaults, identity, to_dict
from eqxrl.run.logging import Logger
from eqxrl.run.progress import AgentProgress, Progress
from eqxrl.run.record import algorithm_name, module_name, read_record
from eqxrl.run.summary import default_run_dir, eval_line, summarise


class Run:
    """One run folder and what is written into it, for a loop whose step unit is `unit`.

    `progress` is the bookkeeping saved as checkpoint metadata; `progress.step` counts env
    steps (online) or updates (offline), and each agent has `envs` envs stepped on the host
    (none in the compiled loops) whose episodes it tracks. The folder is made by `start`, not
    before, so a run that fails while it is set up leaves nothing behind.
    `evaluator(state, seed) -> stats` evaluates one agent (the compiled loops evaluate on their
    JAX env); by default its policy runs on gymnasium envs of `env_id`.
    """

    def __init__(self, config: Any, algorithm: ModuleType, unit: str, agents: Agents,
                 envs: int = 0,
                 evaluator: Callable[[Any, int], dict[str, float]] | None = None):
        self.name = algorithm_name(algorithm)
        self.module = module_name(algorithm)
        self.agents = agents
        self.resume = config.run.resume is not None
        run_dir = config.run.run_dir or default_run_dir(self.name, config.run)
        run_dir = agents.gather_json(run_dir)[0]  # process 0's (its clock names it)
        run = dataclasses.replace(config.run, run_dir=run_dir)
        self.config = dataclasses.replace(config, run=run)
        self.dir, self.unit, self.total = run_dir, unit, config.run.budget
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        if self.resume and not os.path.isdir(self.ckpt_dir):
            raise FileNotFoundError(f"--resume {run_dir!r}: no checkpoints/ folder in it.")
        if not self.resume and os.path.exists(run_dir) and agents.main:
            raise FileExistsError(
                f"--run-dir {run_dir!r} exists already. Continue that run with --resume "
                f"{run_dir}, or choose a new --run-dir."
            )
        self.progress = Progress.fresh(agents.n, envs)
        self.reference: tuple[float, float] | None = None
        self.logger: Logger | None = None
        self.bar: Any = None
        self.eval_envs: Any = None
        self.evaluator, self.created = evaluator, False
        self.extra: dict[str, Any] = {}  # loop-specific summary entries (episodes, ...)
        # orbax checkpoints (`eqxrl.run.sharded`) for a multi-process run, and for a run that
        # continues one in a single process; `eqxrl.run.checkpoints` otherwise
        self.sharded = agents.multi or sharded.is_sharded_dir(self.ckpt_dir)

    def restore(self, like: Callable[[Progress], Any]) -> Any:
        """Load the newest checkpoint into the template `like(progress)`, where `progress` is
        the checkpoint's bookkeeping; it becomes this run's `progress`."""
        def template(meta):
            return like(Progress.from_meta(meta))

        if self.sharded:  # written by a multi-process run
            def placed(meta):
                return jax.tree.map(self.agents.saved_sharding, template(meta))

            tree, meta = sharded.restore(self.ckpt_dir, None, placed,
                                         config=identity(self.config),
                                         defaults=field_defaults(self.config))
        else:
            found = checkpoints.list_checkpoints(self.ckpt_dir)
            if not found:
                raise FileNotFoundError(
                    f"--resume {self.dir!r}: no checkpoint in {self.ckpt_dir!r}.")
            try:
                tree, meta = checkpoints.restore(found[-1][1], template,
                                                 config=identity(self.config),
                                                 defaults=field_defaults(self.config))
            except checkpoints.DamagedCheckpoint as err:
                if len(found) > 1:  # never fall back silently: the user moves it aside
                    newest, step = found[-1][1], found[-2][0]
                    fix = (f"Move it aside (mv {newest} {newest}.broken) and resume again to "
                           f"continue from step {step}, the checkpoint before it.")
                else:
                    fix = "It is the run's only checkpoint: start the run again."
                raise checkpoints.DamagedCheckpoint(f"--resume {self.dir}: {err} {fix}") from None
        self.progress = Progress.from_meta(meta)
        if self.total < self.progress.step:
            raise ValueError(
                f"--resume {self.dir}: the budget {self.total} is below the checkpoint's step "
                f"{self.progress.step}; a run can be extended, not shortened."
            )
        return tree

    def start(self, act: Callable) -> None:
        """Make the folder (new runs), write config.json, open logger, evaluation and progress."""
        config, run = self.config, self.config.run
        if self.evaluator is None:
            self.eval_envs = make_eval_envs(run.env_id, run.eval_episodes)
        self.policy = jit(lambda state, obs: act(state, obs, jax.random.key(0), deterministic=True))
        self.session_start = time.perf_counter()
        self.start_step, self.wall_before = self.progress.step, self.progress.wall_time
        self.rate_mark = (self.session_start, self.start_step)  # (time, step) of the last log
        main = self.agents.main  # in a multi-process run, process 0 writes the folder
        self.bar = tqdm(total=self.total, initial=self.progress.step, unit=self.unit,
                        dynamic_ncols=True, mininterval=1.0, disable=not (run.progress and main),
                        desc=f"{self.name} {run.env_id}")
        if not main:
            return
        if not self.resume:
            os.makedirs(self.ckpt_dir)
            self.created = True
        saved = dataclasses.replace(config, run=dataclasses.replace(run, resume=None))
        record = {"algorithm": self.name, "module": self.module, "config": to_dict(saved)}
        if type(saved).__name__ != "Config":  # a fine-tuning phase's (`config_class`)
            record["config_class"] = type(saved).__name__
        # what relative paths in the config are relative to: where the run first started
        record["cwd"] = read_record(self.dir).get("cwd") if self.resume else os.getcwd()
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(record, f, indent=2)
        self.logger = Logger(
            self.dir,
            tensorboard=run.tensorboard,
            wandb=run.wandb,
            wandb_project=run.wandb_project,
            wandb_entity=run.wandb_entity,
            wandb_group=run.wandb_group,
            wandb_id=self.progress.wandb_id,
            config=record,
            resume_step=self.progress.step if self.resume else None,
        )

    def abandon(self) -> None:
        """Remove the folder of a new run that failed before its first step."""
        self.close_sinks()
        if self.created and not os.listdir(self.ckpt_dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    def due(self, step: int, interval: int, since: int | None = None) -> bool:
        """Whether the steps after `since` (by default `step − 1`) up to `step` reach a
        multiple of `interval` (the final step always is due)."""
        since = step - 1 if since is None else since
        return step // interval > since // interval or step == self.total

    def next_stop(self, step: int, *intervals: int) -> int:
        """The first step after `step` at which the host has work: a multiple of one of
        `intervals` (log, eval, checkpoint), or the run's end."""
        return min([self.total] + [(step // i + 1) * i for i in intervals])

    def finished_episodes(self, returns: Any) -> list[dict[str, float]]:
        """Count the episodes a compiled chunk ended (`returns`: this process's agents first,
        NaN where no episode ended) and give each agent's log extra: their mean return."""
        extra = []
        for i, r in zip(self.agents.mine, np.asarray(returns), strict=True):
            ended = r[~np.isnan(r)]
            self.progress.agents[i].episodes_done += int(ended.size)
            extra.append({"episode_return": float(ended.mean())} if ended.size else {})
        self.count_episodes()
        return extra

    def count_episodes(self) -> None:
        """Put the episodes this process's agents finished into the summary."""
        self.extra["episodes"] = sum(self.progress.agents[i].episodes_done
                                     for i in self.agents.mine)

    def rate(self) -> float:
        """Steps (or updates) per second over this whole session (compilation included)."""
        elapsed = max(time.perf_counter() - self.session_start, 1e-9)
        return (self.progress.step - self.start_step) / elapsed

    def recent_rate(self) -> float:
        """Steps (or updates) per second since the previous log row (this session's first
        row counts from its start, so it includes compilation); moves the mark to now."""
        now, (then, step) = time.perf_counter(), self.rate_mark
        self.rate_mark = (now, self.progress.step)
        return (self.progress.step - step) / max(now - then, 1e-9)

    def check_finite(self, finite: jax.Array, metrics: dict[str, Any]) -> None:
        """With nan_check on, stop with an error that names the metric, step and agent."""
        if self.config.run.nan_check and not bool(np.all(self.agents.gather(finite))):
            values = self.agents.gather(metrics)
            bad = [k for k, v in values.items() if not np.all(np.isfinite(np.asarray(v)))]
            agents = sorted({i for v in values.values()
                             for i in np.flatnonzero(~np.isfinite(np.asarray(v)))})
            who = "" if not self.agents.stacked else f" of agent(s) {agents}"
            raise FloatingPointError(
                f"Non-finite {bad}{who} at {self.unit} {self.progress.step} (nan_check is on). "
                f"The last checkpoint in {self.ckpt_dir!r} holds the state before it."
            )

    def _labels(self, i: int) -> dict[str, Any] | None:
        return self.agents.labels(i) if self.agents.stacked else None

    def log(self, metrics: dict[str, Any], extra: list[dict[str, float]] | None = None) -> None:
        """Log training metrics (arrays with an agent axis, read here), a row per agent."""
        values = self.agents.gather(metrics)
        extras = {}  # agent -> extra values, from the process that ran it
        for part in self.agents.gather_json(dict(zip(self.agents.mine, extra or [], strict=False))):
            extras |= {int(i): e for i, e in part.items()}
        if self.logger is None:
            return
        rate = {f"{self.unit}s_per_second": self.recent_rate()}
        for i in range(self.agents.n):
            row = {k: float(np.asarray(v)[i]) for k, v in values.items()}
            row |= extras.get(i, {}) | rate
            self.logger.log(row, self.progress.step, labels=self._labels(i))

    def evaluate(self, state: Any) -> list[dict[str, float]]:
        """Evaluate each agent's deterministic policy (`state` has the agent axis), log, show."""
        step, run = self.progress.step, self.config.run
        mine = {}  # this process's agents (all of them in one process)
        for i in self.agents.mine:
            one, seed = self.agents.pick(state, i), derived_seed(self.agents.seeds[i], 1, step)
            if self.evaluator is not None:
                mine[i] = self.evaluator(one, seed)
                continue
            mine[i] = evaluate(lambda o, one=one: self.policy(one, o), self.eval_envs,
                               seed=seed, reference=self.reference)
        found = {}
        for part in self.agents.gather_json(mine):
            found |= {int(i): stats for i, stats in part.items()}
        results = [found[i] for i in range(self.agents.n)]
        for i, (agent, stats) in enumerate(zip(self.progress.agents, results, strict=True)):
            if self.logger is not None:
                self.logger.log(stats, step, group="eval", labels=self._labels(i))
            agent.record_eval(stats)
        means = np.array([r["return_mean"] for r in results])
        self.bar.set_postfix(eval_return=f"{means.mean():.1f}")
        if run.progress and self.agents.main:
            tqdm.write(f"{self.unit} {step}: {eval_line(results, run.eval_episodes)}")
        return results

    def save(self, tree: Any, buffer_sizes: dict[str, int] | None = None) -> None:
        """Checkpoint `tree` with `progress` as metadata, atomically; keep the newest few.
        `buffer_sizes` (`eqxrl.data.saved.buffer_saved`'s) say how to read a saved buffer."""
        progress = self.progress
        progress.wall_time = self.wall_before + time.perf_counter() - self.session_start
        progress.buffer_sizes = dict(buffer_sizes or {})
        config, keep = identity(self.config), self.config.run.keep_checkpoints
        if self.sharded:
            # Each process holds the bookkeeping of its own agents: collect them, then save.
            for part in self.agents.gather_json(
                    {i: progress.agents[i].to_json() for i in self.agents.mine}):
                for i, saved in part.items():
                    if int(i) not in self.agents.mine:  # this process's own are up to date
                        progress.agents[int(i)] = AgentProgress.from_json(saved)
            sharded.save(self.ckpt_dir, progress.step, tree, config=config,
                         meta=progress.to_meta(), keep=keep)
            return
        path = checkpoints.checkpoint_path(self.ckpt_dir, progress.step)
        checkpoints.save(path, tree, config=config, meta=progress.to_meta())
        checkpoints.prune(self.ckpt_dir, keep)

    def close_sinks(self) -> None:
        """Close the progress bar, the logger and the evaluation envs."""
        if self.bar is not None:
            self.bar.close()
        if self.logger is not None:
            self.logger.close()
        if self.eval_envs is not None:
            self.eval_envs.close()
        self.bar = self.logger = self.eval_envs = None

    def close(self, status: str, error: BaseException | None = None) -> dict:
        """Close every sink and write `summary.json` (`status`: done, interrupted or failed).

        With several agents, the returns are means over the agents, and `agents` lists each
        agent's seed, grid values and returns.
        """
        self.close_sinks()
        wall = round(self.wall_before + time.perf_counter() - self.session_start, 1)
        summary = summarise(self.name, self.config.run, self.dir, self.unit, self.progress,
                            self.agents, wall, round(self.rate(), 1), status, error) | self.extra
        if self.agents.main:
            with open(os.path.join(self.dir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
        return summary

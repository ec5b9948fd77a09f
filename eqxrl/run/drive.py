"""The one loop skeleton every training loop runs: start the run, advance until the budget,
and after each advance check, log, evaluate and checkpoint on the run's schedule; Ctrl-C
checkpoints and stops at the next boundary; the summary is always written.

A loop supplies only what differs: `advance(start) -> Advanced` (its steps from `start` to its
next stop), `save()` (checkpoint its carry) and `policy_state()` (the state to evaluate).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
from tqdm.auto import tqdm

from eqxrl.run.harness import Run
from eqxrl.run.stop import StopFlag


@dataclasses.dataclass(frozen=True)
class Advanced:
    """What one advance of a loop did."""

    end: int
    """the step (env step or update) it reached"""
    metrics: dict[str, Any] | None = None
    """training metrics with the agent axis first, to check and log"""
    finite: jax.Array | None = None
    """per agent, whether `metrics` are finite; checked (with --nan-check) when given"""
    log: bool = False
    """log `metrics` now (each loop logs on its own schedule of learning steps)"""
    extra: list[dict[str, float]] | None = None
    """per agent of this process, values logged beside the metrics (episode returns)"""


def say(run: Run, text: str) -> None:
    """A line on stderr, with --no-progress too, from process 0 only (above the bar)."""
    if run.agents.main:
        tqdm.write(text, file=sys.stderr)


def drive(run: Run, act: Callable, advance: Callable[[int], Advanced], save: Callable[[], None],
          policy_state: Callable[[], Any], compiled: bool = False) -> dict[str, Any]:
    """Run the loop to the end of `run`'s budget; return the summary.

    Evaluations and checkpoints happen after the advance that reaches or crosses a multiple of
    their interval, and after the last one. A `compiled` loop, whose first advance compiles
    the whole training loop (a minute on Brax), says so and how long it took.
    """
    settings = run.config.run

    def body(stop: StopFlag) -> str:
        first = compiled
        while run.progress.step < run.total:
            if stop.requested:
                save()
                return "interrupted"
            start = run.progress.step
            if first:
                say(run, "compiling the training loop (XLA, once per run) ...")
                began = time.perf_counter()
            out = advance(start)
            if first:
                say(run, f"compiled, and ran the first {out.end - start} {run.unit}s, in "
                         f"{time.perf_counter() - began:.1f} s")
                first = False
            run.progress.step = out.end
            if out.finite is not None:
                run.check_finite(out.finite, out.metrics)
            run.bar.update(out.end - start)
            if out.log:
                run.log(out.metrics, out.extra)
            if run.due(out.end, settings.eval_interval, since=start):
                run.evaluate(policy_state())
            if run.due(out.end, settings.checkpoint_interval, since=start):
                save()
        return "done"

    return run_loop(run, act, body)


def run_loop(run: Run, act: Callable, body: Callable[[StopFlag], str]) -> dict:
    """Start `run`, call `body(stop)` (returns "done" or "interrupted"), always summarise.

    A failure before the first step removes a new run's folder; a later failure (a failed
    checkpoint write among them) is summarised as `failed` and raised again.
    """
    try:
        run.start(act)
    except BaseException:
        run.abandon()
        raise
    agents = run.agents
    if agents.devices > 1:  # say where it runs: several devices are easy to miss
        split = "the agents split across them" if agents.n > 1 else "each batch split across them"
        platform = agents.mesh.devices.flat[0].platform.upper()
        say(run, f"running {agents.n} agent(s) on {agents.devices} {platform} devices, {split}")
    elif agents.n > 1 and agents.layout == "unrolled":
        say(run, f"running {agents.n} agents' updates one after another in each compiled call "
                 "(--agents-layout: on a CPU, faster than vmapped)")
    try:
        with StopFlag() as stop:
            status = body(stop)
    except BaseException as error:
        if run.progress.step == run.start_step and not run.resume:
            run.abandon()
        else:
            run.close("failed", error)
        raise
    return run.close(status)

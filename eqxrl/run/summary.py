"""A run's summary: what `summary.json` holds, how the command line prints it, and the tag of
a run's seeds in its folder name."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from eqxrl.run.agents import Agents
from eqxrl.run.progress import Progress


def default_run_dir(name: str, run: Any) -> str:
    """`runs/<algorithm>__<env>__<seeds>__<time>`: where a run without --run-dir goes. The env
    id's `/` and `:` become `-` (`ALE/Pong-v5` made a nested folder, and some tools and file
    systems refuse a colon)."""
    env = str(run.env_id).replace("/", "-").replace(":", "-")
    return os.path.join("runs", f"{name}__{env}__{seeds_tag(run)}__"
                                f"{time.strftime('%Y%m%d-%H%M%S')}")


def eval_line(results: list[dict[str, float]], episodes: int) -> str:
    """The progress line of one evaluation: one agent's return, or the spread over agents."""
    if len(results) == 1:
        stats = results[0]
        score = stats.get("normalized_score_mean")
        shown = "" if score is None else f", normalized score {score:.1f}"
        return (f"eval return {stats['return_mean']:.1f} ± {stats['return_std']:.1f} over "
                f"{episodes} episodes{shown}")
    means = np.array([r["return_mean"] for r in results])
    return (f"eval return {means.mean():.1f} ± {means.std():.1f} over {len(results)} agents "
            f"(min {means.min():.1f}, max {means.max():.1f})")


def seeds_tag(run: Any) -> str:
    """`s0` for one seed, `s0-4` for --num-seeds 5, `s1,7` for --seeds 1 7; `+grid` with a grid."""
    seeds = run.seed_list
    if len(seeds) == 1:
        tag = f"s{seeds[0]}"
    elif seeds == tuple(range(seeds[0], seeds[0] + len(seeds))):
        tag = f"s{seeds[0]}-{seeds[-1]}"
    else:
        tag = "s" + ",".join(map(str, seeds))
    return tag + ("+grid" if run.grid else "")


def summarise(name: str, run: Any, run_dir: str, unit: str, progress: Progress,
              agents: Agents, wall_time: float, per_second: float, status: str,
              error: BaseException | None) -> dict[str, Any]:
    """What `summary.json` holds (`status`: done, interrupted or failed).

    With several agents, the returns are means over the agents, and `agents` lists each
    agent's seed, grid values and returns.
    """
    per_agent = progress.agents

    def mean(key: str) -> float | None:
        values = [getattr(a, key) for a in per_agent]
        return None if None in values else float(np.mean(values))

    summary = {
        "algo": name, "env_id": run.env_id, "seed": run.seed, "run_dir": run_dir,
        "unit": unit, "steps": progress.step,
        "final_eval_return": mean("last_eval"),
        "final_normalized_score": mean("last_score"),
        "best_eval_return": mean("best_eval"),
        "wall_time_s": wall_time, "per_second": per_second,
        "status": status, "interrupted": status == "interrupted",
        "error": None if error is None else f"{type(error).__name__}: {error}",
    }
    if agents.stacked:
        summary["seeds"] = list(dict.fromkeys(agents.seeds))
        summary["agents"] = [
            agents.labels(i) | {"final_eval_return": a.last_eval,
                                "final_normalized_score": a.last_score,
                                "best_eval_return": a.best_eval}
            for i, a in enumerate(per_agent)
        ]
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    """Print a short final summary of a run."""
    state = {"done": "done", "failed": f"failed ({summary.get('error')})"}.get(
        summary["status"], f"interrupted (continue with --resume {summary['run_dir']})"
    )

    def shown(key: str) -> Any:
        return None if summary[key] is None else round(summary[key], 1)

    score = summary["final_normalized_score"]
    who = f"seed {summary['seed']}"
    if summary.get("agents"):
        who = (f"{len(summary['agents'])} agents, seeds "
               f"{' '.join(map(str, summary['seeds']))}; returns are means over agents")
    print(
        f"\n{summary['algo']} on {summary['env_id']} ({who}): {state}\n"
        f"  {summary['unit'] + 's':<16} {summary['steps']} in {summary['wall_time_s']} s "
        f"({summary['per_second']} {summary['unit']}s/s this session)\n"
        f"  final eval       {shown('final_eval_return')}"
        + ("" if score is None else f"\n  normalized score {shown('final_normalized_score')}")
        + f"\n  best eval        {shown('best_eval_return')}\n"
        f"  run folder       {summary['run_dir']} (tensorboard --logdir {summary['run_dir']})"
        + _agents_lines(summary)
    )


def _agents_lines(summary: dict[str, Any]) -> str:
    """Per grid point: final eval mean ± std over its seeds (runs of several agents)."""
    agents = summary.get("agents")
    if not agents:
        return ""
    points: dict[str, list[float]] = {}
    for a in agents:
        key = ", ".join(f"{k}={v:g}" for k, v in a.items()
                        if k not in ("agent", "seed") and not k.endswith("_return")
                        and not k.endswith("_score"))
        points.setdefault(key or "all seeds", []).append(a["final_eval_return"])
    lines = [f"\n  agents           {len(agents)} ({len(summary['seeds'])} seed(s) per point; "
             "final eval mean ± std over seeds)"]
    for key, values in points.items():
        values = [v for v in values if v is not None]
        shown = f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "-"
        lines.append(f"\n    {key:<28} {shown}")
    return "".join(lines)

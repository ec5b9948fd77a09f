"""Plot learning curves (mean and spread over seeds) from run folders to a PNG.

    python -m eqxrl.plot runs/sac__Hopper-v5__s0__* runs/sac__Hopper-v5__s1__* --out hopper.png

Runs are grouped by their config without the seed and run folder, so several seeds of one
setting become one curve: the mean, with a band of ± one standard deviation (or min–max).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from typing import Literal

import numpy as np
import tyro

from .logging import read_metrics

# Config fields that do not change what is learned: runs differing only in these are seeds
# of one curve. (Evaluation and logging intervals change where points fall, not learning.)
_RUN_ONLY = {
    "seed", "run_dir", "resume", "progress", "tensorboard", "wandb", "nan_check",
    "checkpoint_interval", "keep_checkpoints", "log_interval",
}  # fmt: skip


def load_curve(run_dir: str, metric: str = "return_mean") -> tuple[np.ndarray, np.ndarray]:
    """`(steps, values)` of an evaluation metric of one run."""
    path = os.path.join(run_dir, "eval.csv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir!r} has no eval.csv; is it an eqxrl run folder?")
    columns = read_metrics(path)
    if metric not in columns:
        raise KeyError(f"{path!r} has no column {metric!r}; it has {sorted(columns)}.")
    return columns["step"].astype(np.int64), columns[metric]


def group_runs(run_dirs: list[str]) -> dict[str, list[str]]:
    """Group run folders whose configs differ only in run-only fields such as the seed."""
    groups: dict[str, list[str]] = defaultdict(list)
    for run in run_dirs:
        try:
            with open(os.path.join(run, "config.json")) as f:
                config = json.load(f)
        except FileNotFoundError:
            config = {"run": os.path.basename(run.rstrip("/"))}
        key = {k: v for k, v in config.items() if k not in _RUN_ONLY}
        groups[json.dumps(key, sort_keys=True)].append(run)
    return groups


def _label(key: str, all_keys: list[str]) -> str:
    configs = [json.loads(k) for k in all_keys]
    config = json.loads(key)
    varying = [k for k in config if any(c.get(k) != config[k] for c in configs)]
    shown = varying or [k for k in ("env_id",) if k in config]
    return ", ".join(f"{k}={config[k]}" for k in shown) or "run"


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Plot evaluation curves of eqxrl runs."""

    runs: tyro.conf.Positional[tuple[str, ...]]
    """run folders (each with eval.csv and config.json)"""
    out: str = "learning_curve.png"
    """PNG file to write"""
    metric: str = "return_mean"
    """eval.csv column to plot"""
    spread: Literal["std", "minmax"] = "std"
    """band around the mean over seeds"""
    title: str | None = None
    """figure title"""


def plot(args: PlotArgs) -> str:
    """Write the PNG and return its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("Plotting needs matplotlib: pip install 'eqxrl[plot]'") from err
    if not args.runs:
        raise ValueError("Give at least one run folder.")
    groups = group_runs(list(args.runs))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, runs in groups.items():
        curves = [load_curve(r, args.metric) for r in runs]
        steps = curves[0][0]
        for other, _ in curves[1:]:
            steps = np.intersect1d(steps, other)
        values = np.stack([v[np.isin(s, steps)] for s, v in curves])
        mean = values.mean(0)
        low, high = (
            (mean - values.std(0), mean + values.std(0))
            if args.spread == "std"
            else (values.min(0), values.max(0))
        )
        label = f"{_label(key, list(groups))} ({len(runs)} seed{'s' * (len(runs) > 1)})"
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, low, high, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"evaluation {args.metric.replace('_', ' ')}")
    ax.set_title(args.title or "eqxrl learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    plt.close(fig)
    return args.out


def cli() -> None:
    """Entry point of `eqxrl-plot` and `python -m eqxrl.plot`."""
    print(f"wrote {plot(tyro.cli(PlotArgs))}")


if __name__ == "__main__":
    cli()

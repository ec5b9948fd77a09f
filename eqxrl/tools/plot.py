"""Plot learning curves (mean and spread over seeds) from run folders to a PNG.

    eqxrl-plot runs/sac__Hopper-v5__s0__* runs/sac__Hopper-v5__s1__* --out hopper.png

Runs are grouped by algorithm and config without the seed and run folder, so several seeds of
one setting become one curve (so do the agents of one run of several seeds, `--num-seeds`;
each grid point is a curve of its own): the mean, with a band of ± one standard deviation (or
min–max).
Each legend entry names the algorithm, then what sets the curve apart from the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import defaultdict
from typing import Literal

import numpy as np
import tyro

from eqxrl.loops.finetune import joined_evals
from eqxrl.run.logging import read_metrics

# Run settings that do not change what is learned: runs differing only in these are seeds of
# one curve. (Evaluation and logging intervals change where points fall, not learning.)
_RUN_ONLY = {
    "seed", "run_dir", "resume", "progress", "tensorboard", "wandb", "nan_check",
    "checkpoint_interval", "keep_checkpoints", "log_interval", "num_seeds", "seeds", "grid",
    "devices",
}  # fmt: skip


_LABELS = ("agent", "seed")  # columns of a multi-agent run's rows that are not metrics


def _learning(fields: dict) -> dict:
    """`fields` without the run-only ones (`wandb_project` and the like included)."""
    return {k: v for k, v in fields.items() if k not in _RUN_ONLY and not k.startswith("wandb")}


def _eval_columns(run_dir: str) -> dict[str, np.ndarray]:
    path = os.path.join(run_dir, "eval.csv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir!r} has no eval.csv; is it an eqxrl run folder?")
    columns = read_metrics(path)
    if not columns:
        raise ValueError(
            f"{path} holds no evaluation yet (no rows): the run stopped before its first "
            "evaluation (--eval-interval); plot it once it has evaluated.")
    return columns


def members(run_dir: str) -> list[tuple[str, int | None]]:
    """The curves a run folder holds: `(run_dir, None)`, or one `(run_dir, i)` per agent of a
    run of several agents (seeds and grid points trained as one program)."""
    columns = _eval_columns(run_dir)
    if "agent" not in columns:
        return [(run_dir, None)]
    return [(run_dir, int(i)) for i in np.unique(columns["agent"])]


def load_curve(
    run_dir: str, metric: str = "return_mean", agent: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`(steps, values)` of an evaluation metric of one run (or of one agent of it). An offline
    run fine-tuned online (`--finetune-steps`) is one curve: its online evaluations follow the
    offline ones, at the offline updates plus their env steps."""
    columns = _eval_columns(run_dir)
    if metric not in columns:
        raise KeyError(f"{run_dir}/eval.csv has no column {metric!r}; it has {sorted(columns)}.")
    rows = [r for r in joined_evals(run_dir) if agent is None or r["agent"] == agent]
    return (np.array([r["step"] for r in rows], np.int64),
            np.array([r.get(metric, np.nan) for r in rows]))


def _setting(run_dir: str, agent: int | None = None) -> dict:
    """What a run learns: `{"algorithm", "run", "config"}` from its config.json, seed removed.

    `config.json` is `{"algorithm", "module", "config"}` with the shared run settings under
    `config["run"]`. An older flat config (no "config" key) does not name the algorithm: it is
    read from the folder name (`sac__Hopper-v5__s0__...` -> "sac"), or None.
    """
    name = os.path.basename(os.path.normpath(run_dir))
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            record = json.load(f)
    except FileNotFoundError:
        record = {"run": name}  # nothing to compare: the run is its own curve
    if "config" in record:
        config = dict(record["config"])
        run = config.pop("run", {})
        algorithm = record.get("algorithm")
    else:
        config, run, algorithm = record, {}, None
    if algorithm is None and "__" in name:
        algorithm = name.split("__")[0]
    if agent is not None:  # the agent's grid values are its hyperparameters
        columns = _eval_columns(run_dir)
        row = int(np.argmax(columns["agent"] == agent))
        for field, _ in run.get("grid", []):
            value = float(columns[field][row])
            config[field] = int(value) if isinstance(config.get(field), int) else value
    return {"algorithm": algorithm, "run": _learning(run), "config": _learning(config)}


def group_runs(run_dirs: list[str]) -> dict[str, list[tuple[str, int | None]]]:
    """Group the curves of run folders whose configs differ only in run-only fields such as
    the seed: separate runs, and the agents of runs of several seeds or grid points.

    Keys are the settings (algorithm, run settings, hyperparameters) as JSON; values are
    `(run_dir, agent)` pairs (`agent` None for a run of one agent).
    """
    groups: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
    for run in run_dirs:
        for member in members(run):
            groups[json.dumps(_setting(*member), sort_keys=True)].append(member)
    return groups


def _label(key: str, all_keys: list[str]) -> str:
    """The algorithm, then the fields that tell this curve from the others (or the env id).

    Run settings are compared with every other curve; hyperparameters only with curves of the
    same algorithm (another algorithm's are different fields, and its name tells it apart).
    """
    this = json.loads(key)
    others = [s for s in map(json.loads, all_keys) if s != this]
    same = [s for s in others if s["algorithm"] == this["algorithm"]]

    def varying(part: str, among: list[dict]) -> list[str]:
        fields = this[part]
        return [k for k in fields if any(k in o[part] and o[part][k] != fields[k] for o in among)]

    shown = [(k, this["run"][k]) for k in varying("run", others)]
    shown += [(k, this["config"][k]) for k in varying("config", same)]
    if not shown:
        fields = {**this["config"], **this["run"]}
        shown = [("env_id", fields["env_id"])] if "env_id" in fields else []
    parts = [this["algorithm"]] if this["algorithm"] else []
    return ", ".join(parts + [f"{k}={v}" for k, v in shown]) or "run"


def legend_labels(groups: dict[str, list]) -> dict[str, str]:
    """The legend entry of each group of `group_runs`: "sac, env_id=Hopper-v5 (3 seeds)"."""
    keys = list(groups)
    return {
        key: f"{_label(key, keys)} ({len(runs)} seed{'s' * (len(runs) != 1)})"
        for key, runs in groups.items()
    }


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
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise ValueError(f"--out {args.out}: its folder {folder} does not exist; create it, or "
                         "choose a path in an existing folder.")
    groups = group_runs(list(args.runs))
    labels = legend_labels(groups)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, runs in groups.items():
        curves = [load_curve(r, args.metric, agent) for r, agent in runs]
        steps = curves[0][0]
        for other, _ in curves[1:]:
            steps = np.intersect1d(steps, other)
        if steps.size == 0:
            raise ValueError(
                f"{labels[key]}: its runs share no evaluated step ({[r for r, _ in runs]}), so "
                "there is no mean curve to draw; plot them separately, or evaluate them on the "
                "same --eval-interval.")
        values = np.stack([v[np.isin(s, steps)] for s, v in curves])
        mean = values.mean(0)
        low, high = (
            (mean - values.std(0), mean + values.std(0))
            if args.spread == "std"
            else (values.min(0), values.max(0))
        )
        # one evaluation is a point, not a line: mark the evaluations of short curves
        ax.plot(steps, mean, label=labels[key], marker="o" if steps.size < 3 else None)
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
    """Entry point of `eqxrl-plot` and `python -m eqxrl.tools.plot`."""
    args = tyro.cli(PlotArgs)
    try:
        print(f"wrote {plot(args)}")
    except (ValueError, KeyError, OSError, ImportError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()

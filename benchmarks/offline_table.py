"""Train BC, TD3+BC, IQL, CQL and ReBRAC on D4RL-style datasets; print normalised scores as a
table, and each run's evaluation curve.

Run:  python benchmarks/offline_table.py --datasets data/*.hdf5 --total-updates 50000
      python benchmarks/offline_table.py --datasets data/*.hdf5 --algos iql cql --seeds 0 1 2
      python benchmarks/offline_table.py --datasets data/*.hdf5 --num-seeds 3  # one vmapped run
      python benchmarks/offline_table.py --datasets data/*.hdf5 --table-only

Each (dataset, algorithm, seed) is one run of `algorithms/<algo>.py` in a subprocess, written
to `<out-dir>/<dataset name>/<algo>__s<seed>/`; a run whose `summary.json` already exists
(and says it finished) is not run again, and one with a checkpoint continues with `--resume`,
so an interrupted table continues where it stopped.
With `--num-seeds N` each (dataset, algorithm) is one run of N agents (seeds 0..N−1, vmapped
in one program), in `<algo>__n<N>/`.
The table gives, per dataset, the normalised score of the data itself (mean episode return
of the dataset; a last, unfinished episode counts too) and of each algorithm's final
evaluation (mean ± std over seeds), using the reference returns stored in the dataset, and
each run's wall time. It is printed and written to `<out-dir>/table.md`, with the curves
(mean normalised score at each evaluation) below it, so that flattening can be seen.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import tyro

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
from eqxrl import Dataset, normalized_score  # noqa: E402
from eqxrl.datasets import DatasetInfo, episode_returns, load_dataset  # noqa: E402
from eqxrl.run.checkpoints import list_checkpoints  # noqa: E402

Algo = Literal["bc", "td3_bc", "iql", "cql", "rebrac"]


@dataclasses.dataclass(frozen=True)
class Args:
    datasets: tuple[str, ...]
    """D4RL-style .hdf5 files (with reference returns, as `python -m eqxrl.tools.collect` writes)"""
    algos: tuple[Algo, ...] = ("bc", "td3_bc", "iql", "cql", "rebrac")
    """algorithms to train, one column each"""
    seeds: tuple[int, ...] = (0,)
    """training seeds per (dataset, algorithm), one run each"""
    num_seeds: int = 1
    """above 1: seeds 0..N−1 as one vmapped run per (dataset, algorithm), instead of --seeds"""
    total_updates: int = 50_000
    """gradient updates per run"""
    updates: tuple[str, ...] = ()
    """per-algorithm update counts that replace --total-updates, e.g. cql=5000"""
    eval_episodes: int = 10
    """episodes of the final evaluation"""
    eval_interval: int | None = None
    """updates between evaluations; default: evaluate only at the end"""
    out_dir: str = "runs/offline_table"
    """where the runs and table.md go"""
    jobs: int = 1
    """runs at the same time (each then gets one XLA CPU thread)"""
    table_only: bool = False
    """only read finished runs and print the table"""

    def __post_init__(self):
        if not self.datasets:
            raise ValueError("--datasets needs at least one file.")
        for path in self.datasets:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--datasets: no file {path!r}.")
        if self.num_seeds > 1 and self.seeds != (0,):
            raise ValueError(f"--num-seeds {self.num_seeds} trains seeds 0..{self.num_seeds - 1} "
                             f"in one run; drop --seeds {' '.join(map(str, self.seeds))}.")
        for name, value in (("total_updates", self.total_updates), ("jobs", self.jobs),
                            ("num_seeds", self.num_seeds)):
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}.")
        if self.eval_interval is not None and self.eval_interval < 1:
            raise ValueError(f"--eval-interval must be >= 1, got {self.eval_interval}.")
        for item in self.updates:
            algo, _, count = item.partition("=")
            if algo not in self.algos or not count.isdigit() or int(count) < 1:
                raise ValueError(
                    f"--updates: expected ALGO=N with ALGO one of {list(self.algos)} and N >= 1, "
                    f"got {item!r}."
                )

    @property
    def runs(self) -> tuple[int, ...]:
        """One entry per run of a (dataset, algorithm): its seed, or -1 for the vmapped run."""
        return (-1,) if self.num_seeds > 1 else self.seeds

    def updates_of(self, algo: str) -> int:
        counts = dict(item.partition("=")[::2] for item in self.updates)
        return int(counts.get(algo, self.total_updates))


def dataset_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def run_dir(args: Args, path: str, algo: str, seed: int) -> str:
    """The run's folder; seed −1 is the vmapped run of --num-seeds."""
    name = f"{algo}__n{args.num_seeds}" if seed < 0 else f"{algo}__s{seed}"
    return os.path.join(args.out_dir, dataset_name(path), name)


def read_summary(directory: str) -> dict | None:
    """The run's summary if it finished (not interrupted), else None."""
    try:
        with open(os.path.join(directory, "summary.json")) as f:
            summary = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return None if summary.get("interrupted") else summary


def command(args: Args, path: str, algo: str, seed: int) -> list[str]:
    return [
        sys.executable,
        os.path.join(ROOT, "algorithms", f"{algo}.py"),
        "--dataset", path,
        *(["--num-seeds", str(args.num_seeds)] if seed < 0 else ["--seed", str(seed)]),
        "--total-updates", str(args.updates_of(algo)),
        "--eval-interval", str(args.eval_interval or args.updates_of(algo)),
        "--eval-episodes", str(args.eval_episodes),
        "--run-dir", run_dir(args, path, algo, seed),
        "--no-progress",
    ]  # fmt: skip


def train(args: Args, path: str, algo: str, seed: int) -> tuple[str, float, int]:
    """Run one training run (unless finished before); return (label, seconds, exit code)."""
    directory = run_dir(args, path, algo, seed)
    label = f"{dataset_name(path)} {algo} " + (f"n{args.num_seeds}" if seed < 0 else f"s{seed}")
    if read_summary(directory) is not None:
        return label, 0.0, 0
    cmd = command(args, path, algo, seed)
    if list_checkpoints(os.path.join(directory, "checkpoints")):
        cmd = [*cmd[:2], "--resume", directory, "--no-progress"]
    elif os.path.isdir(directory):  # stopped before its first checkpoint: nothing to resume
        shutil.rmtree(directory)
    env = dict(os.environ)
    if args.jobs > 1:  # runs share the CPU: one thread each beats oversubscription
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()
    os.makedirs(os.path.dirname(directory), exist_ok=True)  # the run makes its own folder
    start = time.perf_counter()
    with open(directory + ".log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    return label, time.perf_counter() - start, code


def data_score(dataset: Dataset, info: DatasetInfo) -> tuple[float | None, int]:
    """Normalised mean episode return of the dataset, and its number of episodes."""
    returns = np.asarray(episode_returns(dataset), np.float64)
    if info.ref_min_score is None or info.ref_max_score is None:
        return None, int(returns.size)
    return float(np.mean(normalized_score(returns, info.reference))), int(returns.size)


def table(args: Args) -> str:
    header = ["dataset", "transitions", "data"] + [
        f"{algo} ({args.updates_of(algo) / 1000:g}k)" for algo in args.algos
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for path in args.datasets:
        dataset, info = load_dataset(path)
        score, episodes = data_score(dataset, info)
        cells = [
            dataset_name(path),
            f"{len(dataset):,}",
            "n/a" if score is None else f"{score:.1f} ({episodes} ep.)",
        ]
        for algo in args.algos:
            summaries = [s for seed in args.runs
                         if (s := read_summary(run_dir(args, path, algo, seed))) is not None]
            scores = [x for s in summaries for x in agent_scores(s) if x is not None]
            minutes = sum(s.get("wall_time_s") or 0.0 for s in summaries) / 60
            time = f", {minutes:.0f} min" if minutes else ""
            if not scores:
                cells.append("–")
            elif len(scores) == 1:
                cells.append(f"{scores[0]:.1f}{time}")
            else:
                cells.append(f"{np.mean(scores):.1f} ± {np.std(scores):.1f} (n={len(scores)}"
                             f"{time})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agent_scores(summary: dict) -> list[float | None]:
    """Each agent's final normalised score (one for a single-seed run)."""
    if "agents" in summary:
        return [a.get("final_normalized_score") for a in summary["agents"]]
    return [summary.get("final_normalized_score")]


def curve(directory: str, column: str = "normalized_score_mean") -> dict[int, float]:
    """Mean of an eval.csv column (the normalised score) over the run's agents at each
    evaluation step."""
    path = os.path.join(directory, "eval.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(column)]
    steps: dict[int, list[float]] = {}
    for r in rows:
        steps.setdefault(int(float(r["step"])), []).append(float(r[column]))
    return {s: float(np.mean(v)) for s, v in sorted(steps.items())}


def curves(args: Args) -> str:
    """One line per (dataset, algorithm): the mean normalised score at each evaluation."""
    lines = []
    for path in args.datasets:
        for algo in args.algos:
            for seed in args.runs:
                points = curve(run_dir(args, path, algo, seed))
                if points:
                    tail = ", ".join(f"{s / 1000:g}k: {v:.1f}" for s, v in points.items())
                    lines.append(f"- {dataset_name(path)} {algo}"
                                 f"{'' if seed < 0 else f' s{seed}'}: {tail}")
    return "\n".join(lines)


def main(args: Args) -> None:
    if not args.table_only:
        jobs = [(p, a, s) for p in args.datasets for a in args.algos for s in args.runs]
        failed = []
        with ThreadPoolExecutor(args.jobs) as pool:
            for label, seconds, code in pool.map(lambda j: train(args, *j), jobs):
                status = "ok" if code == 0 else f"FAILED (exit {code}, see its .log)"
                print(f"{label}: {status} in {seconds:.0f} s", flush=True)
                if code != 0:
                    failed.append(label)
        if failed:
            print(f"{len(failed)} run(s) failed: {failed}", file=sys.stderr)
    seeds = list(range(args.num_seeds)) if args.num_seeds > 1 else list(args.seeds)
    text = (
        f"Normalised scores after the updates in each column header (thousands), final "
        f"evaluation over {args.eval_episodes} episodes; seeds {seeds}; wall time per run.\n\n"
        f"{table(args)}\n\nMean normalised score at each evaluation:\n\n{curves(args)}\n"
    )
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "table.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))

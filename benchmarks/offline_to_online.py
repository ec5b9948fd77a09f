"""Offline → online, side by side: SAC from scratch, RLPD (SAC with the dataset in every batch),
and IQL and ReBRAC trained offline then fine-tuned online, on one env and dataset, for the same
online env steps. Prints the evaluation curves as a table and writes them to a PNG.

Run:  python benchmarks/offline_to_online.py --dataset data/halfcheetah-medium.hdf5
      python benchmarks/offline_to_online.py --dataset data/pendulum-mixed.hdf5 \
          --online-steps 5000 --eval-interval 500 --start-steps 500 --num-seeds 3

Each method is one run of `algorithms/<algo>.py` in a subprocess (with --num-seeds, one
vmapped run of seeds 0..N−1), written to `<out-dir>/<dataset name>/<method>/`; a finished run
is not run again and an interrupted one continues with --resume. A fine-tuned method's curve
starts at its last offline evaluation (online step 0) and follows its fine-tuning phase
(`<run>/finetune/eval.csv`). The table gives the mean normalised score over the seeds at each
evaluation, with the dataset's reference returns, and says whether RLPD is ahead of SAC at
every evaluation step.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Literal

import tyro

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
from benchmarks.offline_table import curve, dataset_name, read_summary  # noqa: E402
from eqxrl.datasets import load_dataset  # noqa: E402
from eqxrl.run.checkpoints import list_checkpoints  # noqa: E402

Method = Literal["sac", "rlpd", "iql", "rebrac"]
FINETUNED = ("iql", "rebrac")  # trained offline, then online with --finetune-steps


@dataclasses.dataclass(frozen=True)
class Args:
    dataset: str
    """a D4RL-style .hdf5 file with reference returns (as `eqxrl-collect` writes)"""
    online_steps: int = 50_000
    """online env steps of every method"""
    methods: tuple[Method, ...] = ("sac", "rlpd", "iql", "rebrac")
    """methods to run, one curve each"""
    num_seeds: int = 1
    """seeds 0..N−1 of every method, as one vmapped run"""
    eval_interval: int = 5_000
    """env steps between evaluations (IQL's offline phase: updates)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    start_steps: int = 5_000
    """random steps before SAC and RLPD learn (RLPD's paper: 5,000)"""
    utd: int = 20
    """RLPD's updates per env step (the paper's 20)"""
    iql_offline_updates: int = 100_000
    """IQL's offline updates before fine-tuning"""
    rebrac_offline_updates: int = 100_000
    """ReBRAC's offline updates before fine-tuning"""
    rebrac_actor_bc: float = 0.001
    """ReBRAC's β₁ (--actor-bc; the paper tunes it per dataset)"""
    out_dir: str = "runs/offline_to_online"
    """where the runs, table.md and curves.png go"""
    table_only: bool = False
    """only read finished runs and print the table"""

    def __post_init__(self):
        if not os.path.isfile(self.dataset):
            raise FileNotFoundError(f"--dataset: no file {self.dataset!r}.")
        for name in ("online_steps", "num_seeds", "eval_interval", "eval_episodes", "utd",
                     "iql_offline_updates", "rebrac_offline_updates", "start_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                                 f"{getattr(self, name)}.")
        if self.start_steps >= self.online_steps:
            raise ValueError(f"--start-steps ({self.start_steps}) must be < --online-steps "
                             f"({self.online_steps}).")


def run_dir(args: Args, method: str) -> str:
    return os.path.join(args.out_dir, dataset_name(args.dataset), method)


def command(args: Args, method: str) -> list[str]:
    """The training command of one method."""
    common = ["--num-seeds", str(args.num_seeds), "--eval-interval", str(args.eval_interval),
              "--eval-episodes", str(args.eval_episodes), "--run-dir", run_dir(args, method),
              "--no-progress"]
    script = [sys.executable, os.path.join(ROOT, "algorithms", f"{method}.py")]
    if method in FINETUNED:
        updates = getattr(args, f"{method}_offline_updates")
        extra = ["--actor-bc", str(args.rebrac_actor_bc)] if method == "rebrac" else []
        return [*script, "--dataset", args.dataset, "--total-updates", str(updates),
                "--finetune-steps", str(args.online_steps), *extra, *common]
    online = ["--total-steps", str(args.online_steps), "--start-steps", str(args.start_steps)]
    env_id = dataset_env(args.dataset)
    if method == "rlpd":
        return [*script, "--env-id", env_id, "--offline-data", args.dataset, "--utd",
                str(args.utd), *online, *common]
    return [*script, "--env-id", env_id, *online, *common]


def dataset_env(path: str) -> str:
    info = load_dataset(path)[1]
    if info.env_id is None:
        raise ValueError(f"--dataset {path!r} names no env id in its metadata.")
    return info.env_id


def train(args: Args, method: str) -> tuple[float, int]:
    """Run one method (unless finished before); return (seconds, exit code)."""
    directory = run_dir(args, method)
    finished = os.path.join(directory, "finetune") if method in FINETUNED else directory
    if read_summary(finished) is not None:
        return 0.0, 0
    cmd = command(args, method)
    if list_checkpoints(os.path.join(directory, "checkpoints")):
        cmd = [*cmd[:2], "--resume", directory, "--no-progress"]
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    start = time.perf_counter()
    with open(directory + ".log", "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start, code


def curves(args: Args) -> dict[str, dict[int, float]]:
    """Method -> {online env step: mean normalised score}; a fine-tuned method's step 0 is its
    offline end.

    Online runs log returns only (their env has no reference returns), so every curve is
    normalised here with the dataset's random and expert returns.
    """
    low, high = load_dataset(args.dataset)[1].reference or (0.0, 100.0)
    out = {}
    for method in args.methods:
        directory = run_dir(args, method)
        if method in FINETUNED:
            offline = curve(directory, "return_mean")
            points = {0: offline[max(offline)]} if offline else {}
            points |= curve(os.path.join(directory, "finetune"), "return_mean")
        else:
            points = curve(directory, "return_mean")
        if points:
            out[method] = {s: 100 * (r - low) / (high - low) for s, r in points.items()}
    return out


def table(args: Args, lines: dict[str, dict[int, float]]) -> str:
    steps = sorted({s for points in lines.values() for s in points})
    header = "| online steps | " + " | ".join(lines) + " |"
    rows = [header, "|" + "---|" * (len(lines) + 1)]
    for s in steps:
        cells = [f"{lines[m][s]:.1f}" if s in lines[m] else "–" for m in lines]
        rows.append(f"| {s:,} | " + " | ".join(cells) + " |")
    if "sac" in lines and "rlpd" in lines:
        shared = [s for s in steps if s in lines["sac"] and s in lines["rlpd"]]
        behind = [s for s in shared if lines["rlpd"][s] <= lines["sac"][s]]
        note = f" (not at {behind})" if behind else ""
        rows.append(f"\nRLPD ahead of SAC at {len(shared) - len(behind)} of {len(shared)} "
                    f"evaluation steps{note}.")
    return "\n".join(rows)


def plot(args: Args, lines: dict[str, dict[int, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, points in lines.items():
        ax.plot(list(points), list(points.values()), marker="o", markersize=3, label=method)
    ax.set_xlabel("online env steps")
    ax.set_ylabel("normalised score")
    ax.set_title(f"{dataset_name(args.dataset)}, {args.num_seeds} seed(s)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Args) -> None:
    if not args.table_only:
        for method in args.methods:
            seconds, code = train(args, method)
            status = "ok" if code == 0 else f"FAILED (exit {code}: {run_dir(args, method)}.log)"
            print(f"{method}: {status} in {seconds:.0f} s", flush=True)
    lines = curves(args)
    settings = {"rlpd": f"RLPD at UTD {args.utd}",
                "iql": f"IQL after {args.iql_offline_updates:,} offline updates",
                "rebrac": f"ReBRAC (β₁ {args.rebrac_actor_bc}) after "
                          f"{args.rebrac_offline_updates:,}"}
    described = "".join(f", {settings[m]}" for m in args.methods if m in settings)
    text = (f"Mean normalised score over seeds 0..{args.num_seeds - 1} at each evaluation "
            f"({args.eval_episodes} episodes) of {dataset_name(args.dataset)}{described}.\n\n"
            f"{table(args, lines)}\n")
    folder = os.path.join(args.out_dir, dataset_name(args.dataset))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "table.md"), "w") as f:
        f.write(text)
    if lines:
        plot(args, lines, os.path.join(folder, "curves.png"))
    print(text)


if __name__ == "__main__":
    main(tyro.cli(Args))

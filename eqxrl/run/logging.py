"""One `Logger` for TensorBoard, CSV and (optionally) Weights & Biases. Never call it in jit."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


class Logger:
    """Write scalar metrics of named groups (`train`, `eval`, ...) to every sink.

    Each group gets `<run_dir>/<group>.csv` with a `step` column; TensorBoard tags are
    `<group>/<metric>`. With `resume_step`, CSV rows after that step (written by a run that was
    interrupted before its next checkpoint) are dropped, so a resumed run's files stay clean.
    """

    def __init__(
        self,
        run_dir: str,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "eqxrl",
        wandb_entity: str | None = None,
        wandb_group: str | None = None,
        wandb_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        resume_step: int | None = None,
    ):
        self.run_dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        self._fields: dict[str, list[str]] = {}
        if resume_step is not None:
            for name in os.listdir(run_dir):
                if name.endswith(".csv"):
                    _truncate_csv(os.path.join(run_dir, name), resume_step)
        self._tensorboard = tensorboard
        if tensorboard:
            import tensorboardX  # noqa: F401 (fail now, not at the first log, when missing)
        self._writers: dict[str, Any] = {}  # "" (the run) or an agent's folder -> writer
        self._wandb = None
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError as err:
                raise ImportError(
                    "wandb=True needs Weights & Biases: pip install 'eqxrl[wandb]'"
                ) from err
            # The id must be unique per run (W&B ids are global to the project): the run
            # harness makes a random one and keeps it in the checkpoints, so a resumed run
            # continues the same W&B run.
            self._wandb = wandb_lib.init(
                project=wandb_project,
                entity=wandb_entity,
                group=wandb_group,
                name=os.path.basename(run_dir.rstrip("/")),
                id=wandb_id,
                config=dict(config or {}),
                dir=run_dir,
                resume="allow",
            )

    def log(self, metrics: Mapping[str, Any], step: int, group: str = "train",
            labels: Mapping[str, Any] | None = None) -> None:
        """Log a flat dict of scalars (Python numbers or 0-d arrays) at `step`.

        `labels` tell one agent of a multi-agent run apart (`{"agent": 3, "seed": 3,
        "critic_lr": 1e-3}`): they are leading CSV columns of its rows, and its TensorBoard
        events go to `agents/<agent3_seed3_critic_lr=0.001>/`, so agents overlay as runs.
        """
        row = {k: float(np.asarray(v)) for k, v in metrics.items()}
        self._write_csv(group, step, dict(labels or {}) | row)
        name = _agent_name(labels) if labels else ""
        tb, prefix = self._writer(name), f"{name}/" if name else ""
        if tb is not None:
            for k, v in row.items():
                tb.add_scalar(f"{group}/{k}", v, step)
        if self._wandb is not None:
            self._wandb.log({f"{prefix}{group}/{k}": v for k, v in row.items()}, step=step)

    def _writer(self, name: str) -> Any:
        """The TensorBoard writer of the run (`name` "") or of one agent, made when first used."""
        if not self._tensorboard:
            return None
        if name not in self._writers:
            from tensorboardX import SummaryWriter

            folder = os.path.join(self.run_dir, "agents", name) if name else self.run_dir
            self._writers[name] = SummaryWriter(folder, flush_secs=10)
        return self._writers[name]

    def _write_csv(self, group: str, step: int, row: dict[str, Any]) -> None:
        path = os.path.join(self.run_dir, f"{group}.csv")
        fields = self._fields.get(group)
        if fields is None and os.path.exists(path):
            with open(path, newline="") as f:
                fields = next(csv.reader(f), None)
        new = [k for k in row if fields is None or k not in fields]
        if fields is None or new:
            # A new metric appeared: rewrite the file with the wider header.
            old = _read_csv(path) if fields is not None else []
            fields = ["step", *(fields[1:] if fields else []), *new]
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, fields)
                writer.writeheader()
                writer.writerows(old)
        self._fields[group] = fields
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fields).writerow({"step": step, **row})

    def flush(self) -> None:
        """Flush TensorBoard events to disk."""
        for tb in self._writers.values():
            tb.flush()

    def close(self) -> None:
        """Flush and close every sink."""
        for tb in self._writers.values():
            tb.close()
        self._writers = {}
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _agent_name(labels: Mapping[str, Any]) -> str:
    """`agent3_seed3_critic_lr=0.001`: an agent's folder name from its labels."""
    return "_".join(f"{k}{v}" if k in ("agent", "seed") else f"{k}={v:g}"
                    for k, v in labels.items())


def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _truncate_csv(path: str, last_step: int) -> None:
    rows = _read_csv(path)
    if not rows:
        return
    kept = [r for r in rows if int(r["step"]) <= last_step]
    if len(kept) < len(rows):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(kept)


def read_metrics(path: str) -> dict[str, np.ndarray]:
    """Read a metrics CSV written by `Logger` into columns (missing values become NaN)."""
    rows = _read_csv(path)
    if not rows:
        return {}

    def number(row: int, key: str) -> float:
        text = rows[row].get(key)
        if text in (None, ""):
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise ValueError(
                f"{path}: row {row + 1} holds {text!r} in column {key!r}, not a number; the file "
                "is damaged (eqxrl writes numbers only).") from None

    return {k: np.array([number(i, k) for i in range(len(rows))]) for k in rows[0]}

"""Settings of offline → online fine-tuning (`--finetune-steps`), and the online run settings of
the fine-tuning phase, derived from the offline run's.
"""

from __future__ import annotations

import dataclasses
import os

from eqxrl.core.checks import at_least, only_with, within
from eqxrl.run.checkpoints import list_checkpoints
from eqxrl.run.record import dataset_path, read_record
from eqxrl.run.settings import OfflineRun, OnlineRun

FINETUNE_DIR = "finetune"
"""The fine-tuning phase's run folder, inside the offline run's."""


@dataclasses.dataclass(frozen=True)
class Finetune:
    """Offline → online fine-tuning: after the offline updates, the agents train online."""

    finetune_steps: int = 0
    """online env steps after the offline updates, one update each, starting from the offline
    state (a run in <run-dir>/finetune); 0: offline only"""
    finetune_fraction: float = 0.5
    """fraction of each fine-tuning batch taken from the dataset (the rest: online replay)"""

    def __post_init__(self):
        at_least(self, 0, "finetune_steps")
        within(self, "finetune_fraction", 0, 1)
        only_with(self, self.finetune_steps > 0, "--finetune-steps N", "finetune_fraction")


def online_settings(offline: OfflineRun, finetune: Finetune, run_dir: str) -> OnlineRun:
    """The fine-tuning phase's `OnlineRun` for the offline run in `run_dir`.

    Same env, agents (seeds, grid), batch size, intervals and sinks; `finetune_steps` env steps
    from its own folder `<run_dir>/finetune` (resumed when it has checkpoints), the dataset
    (path made absolute) mixed into every batch, and no random phase: the first action is the
    loop's usual random one, every later one the trained policy's.
    """
    shared = {f.name: getattr(offline, f.name) for f in dataclasses.fields(OnlineRun)
              if f.init and hasattr(offline, f.name)}
    folder = os.path.join(run_dir, FINETUNE_DIR)
    started = read_record(run_dir).get("cwd") if os.path.exists(
        os.path.join(run_dir, "config.json")) else None
    resumes = bool(list_checkpoints(os.path.join(folder, "checkpoints")))
    if os.path.exists(folder) and not resumes:
        raise FileExistsError(
            f"{folder} holds a fine-tuning phase that stopped before its first checkpoint, so "
            "there is nothing to resume: remove that folder, and resume the run again.")
    fraction = finetune.finetune_fraction
    return OnlineRun(**(shared | dict(
        total_steps=finetune.finetune_steps, start_steps=1,
        buffer_size=max(finetune.finetune_steps, offline.batch_size), utd=1, update_every=1,
        offline_data=os.path.abspath(dataset_path(offline.dataset, started)) if fraction else "",
        offline_fraction=fraction if fraction else 0.5,  # (no dataset: the flag's default)
        run_dir=folder, resume=folder if resumes else None)))

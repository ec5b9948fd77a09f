"""Offline → online fine-tuning (`--finetune-steps`): an offline run's agents continue online,
and its run folder holds both phases.

When the offline updates are done, the agents train online for `finetune_steps` env steps,
starting from their newest checkpoint. That phase is a run of the algorithm's
`FinetuneConfig` (its own hyperparameters, online run settings: `eqxrl.run.finetuning`) in
`<run_dir>/finetune`. Its batches take `finetune_fraction` of their rows from the dataset,
preprocessed as offline, with the online rows' rewards transformed by the same preset.
Resuming the run folder resumes whichever phase is unfinished. `joined_evals` gives the
evaluation curve across the switch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from types import ModuleType
from typing import Any

from eqxrl.loops.contract import OfflineHooks, OffPolicyHooks
from eqxrl.loops.offline import train_offline
from eqxrl.loops.online import train_online
from eqxrl.run.finetuning import FINETUNE_DIR, online_settings
from eqxrl.run.logging import read_metrics
from eqxrl.run.record import resolve_resume


def train_offline_online(
    config: Any, algorithm: ModuleType,
    hooks: OfflineHooks = OfflineHooks(),  # noqa: B008 (a frozen record)
) -> dict[str, Any]:
    """`train_offline`, then, with `config.finetune.finetune_steps` > 0, the online phase.

    `algorithm.FinetuneConfig` is its Config with `run: OnlineRun`. Returns the offline
    summary, or the online phase's with the offline one under "offline".
    """
    config = resolve_resume(config)
    summary = train_offline(config, algorithm, hooks)
    steps = config.finetune.finetune_steps
    if not steps or summary["status"] != "done":
        return summary
    run_dir = summary["run_dir"]
    offline = dataclasses.replace(config.run, env_id=summary["env_id"])  # from the data
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.init and f.name != "run"}
    online = algorithm.FinetuneConfig(
        **fields, run=online_settings(offline, config.finetune, run_dir))
    fine = train_online(online, algorithm, OffPolicyHooks(
        start_from=run_dir, offline_preset=config.run.preset))
    return fine | {"offline": summary}


def joined_evals(run_dir: str) -> list[dict[str, float]]:
    """The rows of `eval.csv` of an offline run and of its fine-tuning phase, as one curve:
    the online rows' `step` is the offline updates plus their env steps, and each row says
    its `phase` (0 offline, 1 online)."""
    def rows(path: str) -> list[dict[str, float]]:
        columns = read_metrics(path) if os.path.exists(path) else {}
        return [{k: float(v[i]) for k, v in columns.items() if not math.isnan(v[i])}
                for i in range(len(columns.get("step", ())))]

    offline = [r | {"phase": 0.0} for r in rows(os.path.join(run_dir, "eval.csv"))]
    switch = max((r["step"] for r in offline), default=0.0)
    online = [r | {"step": switch + r["step"], "phase": 1.0}
              for r in rows(os.path.join(run_dir, FINETUNE_DIR, "eval.csv"))]
    return offline + online

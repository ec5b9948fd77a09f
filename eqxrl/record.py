"""What a run folder records about itself (`config.json`), and `--resume` resolved against it.

`config.json` is `{"algorithm": "sac", "module": "algorithms.sac", "config": {...}}`: the
algorithm's name, the module to import to use the run again, and its whole config (run
settings under `"run"`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from types import ModuleType
from typing import Any

from .config import BUDGET_FIELDS, PLACEMENT_FIELDS, defaults, flag, flat_fields, from_dict


def algorithm_name(algorithm: ModuleType) -> str:
    """`sac` for `algorithms/sac.py`, also when it runs as `__main__`."""
    path = getattr(algorithm, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else algorithm.__name__


def module_name(algorithm: ModuleType) -> str:
    """The importable name of an algorithm module (`algorithms.sac` for a script run)."""
    if algorithm.__name__ != "__main__" or not getattr(algorithm, "__file__", None):
        return algorithm.__name__
    folder, file = os.path.split(os.path.abspath(algorithm.__file__))
    stem = os.path.splitext(file)[0]
    package = os.path.basename(folder)
    return f"{package}.{stem}" if os.path.exists(os.path.join(folder, "__init__.py")) else stem


def read_record(run_dir: str) -> dict[str, Any]:
    """The `config.json` of a run folder: algorithm, module and config as saved."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{run_dir!r} is not a run folder: it has no config.json (cwd {os.getcwd()!r})."
        )
    with open(path) as f:
        return json.load(f)


def resolve_resume(config: Any, given: set[str] | None = None) -> Any:
    """With `config.run.resume` set, the saved config of that run folder, with what may change.

    `given` names the flat fields the user set (`run.total_steps`); by default the fields that
    differ from the class defaults. A new budget extends the run; `progress` may change; any
    other given field that differs from the saved run is refused. The result has `run_dir` set
    to the folder (as given, so a moved or copied folder works) and keeps `resume`.
    """
    run = config.run
    if run.resume is None or run.run_dir == run.resume:
        return config  # a new run, or resolved already
    saved = from_dict(type(config), read_record(run.resume)["config"], "config.json")
    now, before = flat_fields(config), flat_fields(saved)
    if given is None:
        # Set by the user: differs from the algorithm's default, and (for run settings built
        # as `OfflineRun(resume=...)`) from the run class's own default too.
        default = defaults(type(config))
        own = {f"run.{k}": v for k, v in flat_fields(type(run)()).items()}
        given = {
            k for k, v in now.items() if v != default.get(k) and (k not in own or v != own[k])
        }
    changes: dict[str, Any] = dict(run_dir=run.resume, resume=run.resume, progress=run.progress)
    # Where the run goes on (devices, processes) is this invocation's, never the saved one's.
    changes |= {name: getattr(run, name) for name in PLACEMENT_FIELDS}
    for name in sorted(given):
        field = name.removeprefix("run.")
        if field in ("resume", "progress") or now[name] == before.get(name):
            continue
        if field in BUDGET_FIELDS or field in PLACEMENT_FIELDS:  # the state is resharded
            changes[field] = now[name]
        elif field == "run_dir" and os.path.abspath(now[name]) == os.path.abspath(run.resume):
            continue
        else:
            raise ValueError(
                f"--resume {run.resume}: {flag(field)} {now[name]!r} would change the run "
                f"(it was trained with {before.get(name)!r}). With --resume only "
                "--total-steps/--total-updates (to extend it), --progress and where it runs "
                "(--devices, --num-processes, ...) may change; for "
                "other settings start a new run with another --run-dir."
            )
    return dataclasses.replace(saved, run=dataclasses.replace(saved.run, **changes))

"""What a run folder records about itself (`config.json`), and `--resume` resolved against it.

`config.json` is `{"algorithm": "sac", "module": "eqxrl.algorithms.sac", "config": {...}}`: the
algorithm's name, the module to import to use the run again, and its whole config (run
settings under `"run"`). Folders written before the algorithms moved under the `eqxrl` name
say `"algorithms.sac"`; they read as `eqxrl.algorithms.sac`.

A run folder may come from anyone, so the module it names is imported only when it is one of
`eqxrl.algorithms` (`trusted_module`); any other module has to be passed in by the caller.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pkgutil
import sys
from types import ModuleType
from typing import Any

from eqxrl.core.checks import ConfigError, flag
from eqxrl.envs.gym import env_id_from_file
from eqxrl.run import checkpoints, sharded
from eqxrl.run.config_io import defaults, flat_fields, from_dict
from eqxrl.run.settings import BUDGET_FIELDS, PLACEMENT_FIELDS


def algorithm_name(algorithm: ModuleType) -> str:
    """`sac` for `algorithms/sac.py`, also when it runs as `__main__`."""
    path = getattr(algorithm, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else algorithm.__name__


ALGORITHMS = "eqxrl.algorithms"
"""The package of eqxrl's algorithm files (the top-level `algorithms/` folder, installed)."""
OLD_ALGORITHMS = "algorithms"
"""What `config.json` called that package before it was installed under the eqxrl name."""


def _algorithm_files() -> tuple[list[str], set[str]]:
    """The folders of `eqxrl.algorithms` and the module names in them (without importing it)."""
    spec = importlib.util.find_spec(ALGORITHMS)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return folders, {m.name for m in pkgutil.iter_modules(folders)}


def module_name(algorithm: ModuleType) -> str:
    """The importable name of an algorithm module: `eqxrl.algorithms.sac` for
    `python algorithms/sac.py`, the file's stem for a script elsewhere."""
    file = getattr(algorithm, "__file__", None)
    if algorithm.__name__ != "__main__" or not file:
        return algorithm.__name__
    folder, stem = os.path.split(os.path.splitext(os.path.abspath(file))[0])
    folders, _ = _algorithm_files()
    if any(os.path.samefile(folder, f) for f in folders if os.path.isdir(f)):
        return f"{ALGORITHMS}.{stem}"
    return stem


def trusted_module(name: str) -> str | None:
    """The module to import for a recorded module `name`, if it is one of eqxrl's algorithm
    files (`eqxrl.algorithms.sac`, or the older `algorithms.sac`); None for anything else."""
    package, _, stem = name.rpartition(".")
    if package not in (ALGORITHMS, OLD_ALGORITHMS) or not stem.isidentifier():
        return None
    return f"{ALGORITHMS}.{stem}" if stem in _algorithm_files()[1] else None


def read_record(run_dir: str) -> dict[str, Any]:
    """The `config.json` of a run folder: algorithm, module and config as saved."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{run_dir!r} is not a run folder: it has no config.json (cwd {os.getcwd()!r})."
        )
    try:
        with open(path) as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the run folder is damaged.") from None
    missing = [k for k in ("algorithm", "module", "config") if k not in record]
    if not isinstance(record, dict) or missing:
        raise ValueError(
            f"{path} is not an eqxrl run record: it lacks {missing or 'its keys'} "
            "(expected {\"algorithm\", \"module\", \"config\"})."
        )
    return record


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
    record = read_record(run.resume)
    _same_algorithm(config, record, run.resume)
    saved_class = record.get("config_class", "Config")
    if saved_class != type(config).__name__:
        parent = os.path.dirname(os.path.normpath(run.resume))
        raise ConfigError(
            f"--resume {run.resume}: that folder holds a run of {saved_class} (the fine-tuning "
            f"phase of the run in {parent}), not of {type(config).__name__}; resume the whole "
            f"run instead: --resume {parent}.")
    saved = from_dict(type(config), record["config"], "config.json")
    now, before = flat_fields(config), flat_fields(saved)
    if not ("run.env_id" in (given or ()) and now.get("run.env_id") == before.get("run.env_id")):
        env_id_from_file(saved.run.env_id, os.path.join(run.resume, "config.json"))
    if given is None:
        # Set by the user: differs from the algorithm's default, and (for run settings built
        # as `OfflineRun(resume=...)`) from the run class's own default too.
        default = defaults(type(config))
        own = {f"run.{k}": v for k, v in flat_fields(type(run)()).items()}
        given = {
            k for k, v in now.items() if v != default.get(k) and (k not in own or v != own[k])
        }
    changes: dict[str, Any] = dict(run_dir=run.resume, resume=run.resume, progress=run.progress)
    dataset = getattr(saved.run, "dataset", None)
    if (isinstance(dataset, str) and dataset.endswith((".hdf5", ".h5"))
            and "run.dataset" not in (given or ())
            and not os.path.exists(dataset_path(dataset, record.get("cwd")))):
        started = record.get("cwd")
        raise ConfigError(
            f"--resume {run.resume}: its --dataset {dataset!r} is found neither from here "
            f"({os.getcwd()}) nor from the folder the run started in"
            f"{f' ({started})' if started else ' (which its config.json does not record)'}. "
            "Run from that folder, or put the file back where it was.")
    # Where the run goes on (devices, processes) is this invocation's, never the saved one's.
    changes |= {name: getattr(run, name) for name in PLACEMENT_FIELDS}
    for name in sorted(given):
        field = name.removeprefix("run.")
        if field in ("resume", "progress") or now[name] == before.get(name):
            continue
        if field in BUDGET_FIELDS:
            _budget_reaches_checkpoint(run.resume, field, now[name])
            changes[field] = now[name]
        elif field in PLACEMENT_FIELDS:  # the state is resharded
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


def dataset_path(dataset: str, started: str | None) -> str:
    """The dataset file to read: `dataset` as given, or, for a relative path that is not found
    from here, the same path from `started`, the folder a resumed run started in (its
    `config.json` records it as "cwd"), so `--resume` works from any folder offline too."""
    if os.path.isabs(dataset) or os.path.exists(dataset) or not isinstance(started, str):
        return dataset
    moved = os.path.join(started, dataset)
    return moved if os.path.exists(moved) else dataset


def _same_algorithm(config: Any, record: dict[str, Any], run_dir: str) -> None:
    """Refuse to resume a run of one of eqxrl's algorithms with another one's file."""
    module = sys.modules.get(type(config).__module__)
    ours = trusted_module(module_name(module)) if module is not None else None
    theirs = trusted_module(str(record["module"]))
    if ours is not None and theirs is not None and ours != theirs:
        stem = theirs.rpartition(".")[2]
        raise ConfigError(
            f"--resume {run_dir}: that run was trained by {record['algorithm']} ({theirs}), "
            f"not by {ours.rpartition('.')[2]}. Resume it with its own file: python "
            f"algorithms/{stem}.py --resume {run_dir}."
        )


def _budget_reaches_checkpoint(run_dir: str, field: str, budget: int) -> None:
    """Refuse a new budget below the step of the run's newest checkpoint."""
    folder = os.path.join(run_dir, "checkpoints")
    found = [s for s, _ in checkpoints.list_checkpoints(folder)] or sharded.steps(folder)
    if found and budget < max(found):
        raise ConfigError(
            f"--resume {run_dir}: {flag(field)} {budget} is below the step of its newest "
            f"checkpoint ({max(found)}); a run can be extended, not shortened. Give "
            f"{flag(field)} {max(found)} or more."
        )

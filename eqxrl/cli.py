"""The command line of an algorithm file: flags in, summary out, exit code 130 on Ctrl-C.

    if __name__ == "__main__":
        eqxrl.cli(main, Config)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from .config import flat_fields
from .record import resolve_resume


def print_summary(summary: dict[str, Any]) -> None:
    """Print a short final summary of a run."""
    state = {"done": "done", "failed": f"failed ({summary.get('error')})"}.get(
        summary["status"], f"interrupted (continue with --resume {summary['run_dir']})"
    )

    def shown(key: str) -> Any:
        return None if summary[key] is None else round(summary[key], 1)

    score = summary["final_normalized_score"]
    print(
        f"\n{summary['algo']} on {summary['env_id']} (seed {summary['seed']}): {state}\n"
        f"  {summary['unit'] + 's':<16} {summary['steps']} in {summary['wall_time_s']} s "
        f"({summary['per_second']} {summary['unit']}s/s this session)\n"
        f"  final eval       {shown('final_eval_return')}"
        + ("" if score is None else f"\n  normalized score {shown('final_normalized_score')}")
        + f"\n  best eval        {shown('best_eval_return')}\n"
        f"  run folder       {summary['run_dir']} (tensorboard --logdir {summary['run_dir']})"
    )


def cli(main: Callable[[Any], dict], config_class: type, args: list[str] | None = None) -> None:
    """Parse flags into `config_class`, run `main`, print the summary; exit 130 if interrupted.

    With `--resume`, the flags given on the command line (not their defaults) decide what the
    user asked to change, so `--total-steps` equal to its default still extends a run.
    """
    import tyro

    argv = sys.argv[1:] if args is None else args
    config = tyro.cli(config_class, args=argv)
    if config.run.resume is not None:
        names = {a.split("=")[0].removeprefix("--").replace("-", "_") for a in argv}
        given = {k for k in flat_fields(config) if k.split(".")[-1] in names}
        config = resolve_resume(config, given)
    summary = main(config)
    print_summary(summary)
    if summary["interrupted"]:
        sys.exit(130)  # as a shell does for Ctrl-C, so `a && b` stops

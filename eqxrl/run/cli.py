"""The command line of an algorithm file: flags in, summary out, exit code 130 on Ctrl-C.

    if __name__ == "__main__":
        eqxrl.cli(main, Config)

`main(config)` trains and returns the run's summary; a refused setting becomes one `error:`
line and exit code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
import typing
from collections.abc import Callable, Iterator
from typing import Any

import jax

from eqxrl.core.checks import ConfigError, flag
from eqxrl.rl.networks import NETWORK_FLAGS
from eqxrl.run.config_io import flat_fields
from eqxrl.run.record import resolve_resume
from eqxrl.run.summary import print_summary


def split_grid_flags(
    config_class: type, argv: list[str]
) -> tuple[list[str], tuple[tuple[str, tuple[float | int, ...]], ...]]:
    """Take the grid out of the flags: a numeric hyperparameter given several values
    (`--critic-lr 3e-4 1e-3`) becomes a grid entry, and its first value stays in the flags (so
    tyro checks it as usual). A run setting given several values is an error."""
    hints = typing.get_type_hints(config_class)
    run_hints = typing.get_type_hints(hints["run"]) if "run" in hints else {}
    out, grid, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        name = token[2:].replace("-", "_") if token.startswith("--") and "=" not in token else ""
        values = []
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            values.append(argv[j])
            j += 1
        kind = hints.get(name) if name != "run" else None
        if len(values) > 1 and kind in (int, float):
            try:
                parsed = tuple(kind(v) for v in values)
            except ValueError:
                raise ConfigError(  # noqa: B904 (a command-line error, not a traceback)
                    f"{flag(name)} takes numbers, got {' '.join(values)}."
                )
            grid.append((name, parsed))
            out += [token, values[0]]
            i = j
            continue
        if len(values) > 1 and run_hints.get(name) in (int, float, str, bool):
            raise ConfigError(
                f"{flag(name)} is a run setting and takes one value, got "
                f"{' '.join(values)}. Several values make a grid only for the algorithm's "
                "numeric hyperparameters (several seeds: --num-seeds N or --seeds S1 S2 ...)."
            )
        out.append(token)
        i += 1
    return out, tuple(grid)


def refuse_network_flags(config_class: type, args: list[str]) -> None:
    """A clear error for `--network simba` (or another `eqxrl.Networks` flag) given to an
    algorithm whose Config does not offer them, before tyro's "unrecognized" error."""
    import tyro

    hint = typing.get_type_hints(config_class, include_extras=True).get("net")
    if hint is not None and tyro.conf.Suppress not in getattr(hint, "__metadata__", ()):
        return
    given = [a.split("=")[0] for a in args if a.split("=")[0] in NETWORK_FLAGS]
    if given:
        raise ConfigError(
            f"{given[0]} is not an option of this algorithm: the network family (--network "
            "mlp/simba), weight decay and resets are options of the off-policy algorithms with "
            "continuous actions that build their own actor and critics (sac, td3, crossq, tqc).")


def refuse(error: Exception) -> None:
    """Print a setting's error as a command-line error and exit with code 2 (as tyro does)."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def _raised_by_eqxrl(error: BaseException) -> bool:
    """Whether `error` was raised by eqxrl's own code (the library or its algorithm files),
    whose messages are written for users, rather than inside a dependency or user code."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    where = os.path.abspath(tb.tb_frame.f_code.co_filename)
    algorithms = importlib.util.find_spec("eqxrl.algorithms")  # located, not imported here
    roots = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]  # eqxrl/
    if algorithms is not None and algorithms.submodule_search_locations:
        roots += [os.path.abspath(p) for p in algorithms.submodule_search_locations]
    return any(where.startswith(root + os.sep) for root in roots)


@contextlib.contextmanager
def command_line_errors() -> Iterator[None]:
    """Turn a refused input into one `error:` line and exit code 2, never a traceback.

    A `ConfigError`, and any `ValueError` or `OSError` that eqxrl itself raised (a dataset,
    run folder, checkpoint, env id or weight file it checked), is printed as one line. An
    error raised inside a dependency or in user code keeps its traceback: that is a bug to
    see whole, not an input to correct. `EQXRL_TRACEBACK=1` in the environment keeps every
    traceback (to see where one of eqxrl's own errors came from).
    """
    try:
        yield
    except (ValueError, OSError) as err:  # ConfigError included
        if os.environ.get("EQXRL_TRACEBACK", "0") not in ("", "0") or not (
                isinstance(err, ConfigError) or _raised_by_eqxrl(err)):
            raise
        refuse(err)


def parse_flags(config_class: type, args: list[str]) -> tuple[Any, list[str]]:
    """`(config, flags without the grid's extra values)` from command-line flags."""
    import tyro

    with command_line_errors():  # a nested setting's check (tyro reports the top level's)
        refuse_network_flags(config_class, args)
        argv, grid = split_grid_flags(config_class, args)
        config = tyro.cli(config_class, args=argv)
        if grid:
            config = dataclasses.replace(config, run=dataclasses.replace(config.run, grid=grid))
    return config, argv


def cli(main: Callable[[Any], dict], config_class: type, args: list[str] | None = None) -> None:
    """Parse flags into `config_class`, run `main`, print the summary; exit 130 if interrupted.

    A numeric hyperparameter given several values (`--critic-lr 3e-4 1e-3 --tau 0.005 0.01`)
    trains the grid of every combination, each with every seed, as one program.

    With `--resume`, the flags given on the command line (not their defaults) decide what the
    user asked to change, so `--total-steps` equal to its default still extends a run.
    """
    config, argv = parse_flags(config_class, sys.argv[1:] if args is None else args)
    if config.run.resume is not None:
        grid = config.run.grid
        names = {a.split("=")[0].removeprefix("--").replace("-", "_") for a in argv}
        names |= {"grid"} if grid else set()
        given = {k for k in flat_fields(config) if k.split(".")[-1] in names}
        with command_line_errors():  # the folder, its record or a changed setting
            config = resolve_resume(config, given)
    with command_line_errors():
        summary = main(config)
    if jax.process_index() == 0:  # in a multi-process run, process 0 speaks for all
        print_summary(summary)
    if summary["interrupted"]:
        sys.exit(130)  # as a shell does for Ctrl-C, so `a && b` stops

"""The README's code blocks, as a user types them: Python blocks run; every command line of the
bash blocks that starts an algorithm or a module parses with that program's own flags."""

import importlib
import os
import re
import shlex
import subprocess
import sys

import pytest
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    README = f.read()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
COMMANDS = [
    line.split("#")[0].strip()
    for lang, code in BLOCKS
    if lang == "bash"
    for line in code.splitlines()
    if "python " in line
]


def test_the_readme_has_code_blocks():
    assert len(PYTHON) >= 2 and len(COMMANDS) >= 5


@pytest.mark.parametrize("code", [
    pytest.param(code, marks=pytest.mark.slow) if "MAE(" in code else code  # 18 s
    for code in PYTHON], ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_block_runs(code, tmp_path):
    # A fresh interpreter in an empty folder, as a notebook user would start.
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def command_arguments(command):
    """(program, args) of the `python ...` part of a command line."""
    part = command.split("&&")[-1].strip()
    words = shlex.split(part)
    assert words[0] == "python", command
    if words[1] == "-m":
        return words[2], words[3:]
    return words[1], words[2:]


@pytest.mark.parametrize("command", COMMANDS)
def test_command_line_parses(command, capsys):
    program, args = command_arguments(command)
    if "--help" in args:
        result = subprocess.run([sys.executable, program, *args], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return
    # Parse the flags exactly as the program does, without training (in this process: a
    # fresh interpreter per command cost ~4 s each, for ~30 commands).
    if program.startswith("algorithms/"):
        from eqxrl.run import parse_flags

        module = importlib.import_module("eqxrl." + program[:-3].replace("/", "."))
        parse = lambda: parse_flags(module.Config, args)  # noqa: E731
    elif program == "eqxrl.tools.plot":
        from eqxrl.tools.plot import PlotArgs

        parse = lambda: tyro.cli(PlotArgs, args=args)  # noqa: E731
    elif program == "eqxrl.tools.collect":
        from eqxrl.tools import collect

        commands = {"random": collect.Random, "policy": collect.Policy,
                    "replay": collect.Replay, "concat": collect.Concat}
        parse = lambda: tyro.extras.subcommand_cli_from_dict(commands, args=args)  # noqa: E731
    elif program.startswith("benchmarks/"):
        pytest.skip("benchmarks are run by hand; their flags are tested in their own files")
    else:
        pytest.fail(f"README command for an unknown program: {command}")
    try:
        parse()
    except SystemExit as exit:  # tyro and eqxrl report a bad flag on stderr and exit 2
        pytest.fail(f"{command!r} does not parse (exit {exit.code}): {capsys.readouterr().err}")

"""The code blocks of the README and of the docs site's pages (docs/**/*.md), as a user types
them: Python blocks run; every command line of the bash blocks that starts an algorithm or a
module parses with that program's own flags."""

import glob
import importlib
import os
import re
import shlex
import subprocess
import sys

import pytest
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                recursive=True))


def blocks(page):
    """(language, code) of each fenced block of a page (indented ones, inside lists, too)."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"^( *)```(\w+)\n(.*?)^\1```", text, flags=re.DOTALL | re.MULTILINE)
    return [(lang, "\n".join(line[len(indent):] for line in code.splitlines()))
            for indent, lang, code in found]


PYTHON = [(page, i, code) for page in PAGES
          for i, code in enumerate(c for lang, c in blocks(page) if lang == "python")]
COMMANDS = [
    line.split("#")[0].strip()
    for page in PAGES
    for lang, code in blocks(page)
    if lang == "bash"
    for line in code.splitlines()
    if "python " in line
]


def test_the_docs_have_code_blocks():
    assert "README.md" in PAGES and any(p.startswith("docs/guides/") for p in PAGES)
    assert len(PYTHON) >= 6 and len(COMMANDS) >= 20


@pytest.mark.parametrize("code", [
    pytest.param(code, marks=pytest.mark.slow) if "MAE(" in code else code  # 18 s
    for _, _, code in PYTHON], ids=[f"{page}-python-{i}" for page, i, _ in PYTHON])
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


@pytest.mark.parametrize("command", sorted(set(COMMANDS)))
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
        pytest.fail(f"a docs command for an unknown program: {command}")
    try:
        parse()
    except SystemExit as exit:  # tyro and eqxrl report a bad flag on stderr and exit 2
        pytest.fail(f"{command!r} does not parse (exit {exit.code}): {capsys.readouterr().err}")

"""The package layout: layers without cycles, small modules with docstrings, public imports in
algorithm files, and an installed package with nothing named `algorithms` beside `eqxrl`."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = sorted(glob.glob(os.path.join(ROOT, "eqxrl", "**", "*.py"), recursive=True))
ALGORITHMS = sorted(glob.glob(os.path.join(ROOT, "algorithms", "*.py")))
MAX_LINES = 300


def test_import_contracts_hold():
    """import-linter's layers and acyclic-siblings contracts in pyproject.toml."""
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which(
        "lint-imports")
    assert lint is not None, "lint-imports is missing: pip install -e '.[dev]'"
    out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: os.path.relpath(p, ROOT))
def test_library_modules_are_small_and_say_their_concern(path):
    with open(path) as f:
        source = f.read()
    lines = source.count("\n")
    assert lines <= MAX_LINES, f"{path}: {lines} lines; split it by concern (<= {MAX_LINES})"
    tree = ast.parse(source)
    assert ast.get_docstring(tree), f"{path} has no module docstring"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{path} imports private names {private} from {node.module}"
            assert not (node.module or "").startswith("algorithms"), path
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith(("algorithms", "eqxrl.algorithms"))
                           for a in node.names), f"{path} imports an algorithm module"


@pytest.mark.parametrize("path", ALGORITHMS, ids=os.path.basename)
def test_algorithm_files_import_public_names(path):
    """`import eqxrl`, or names a subpackage's `__init__` re-exports, or a sibling algorithm."""
    import importlib

    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "eqxrl.algorithms":
            continue  # a sibling algorithm file (CQL on SAC, TD3+BC on TD3)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eqxrl"):
            package = importlib.import_module(node.module)
            assert package.__name__.count(".") <= 1, (
                f"{path}: `from {node.module} import ...` reaches into a module; import the "
                "name from its subpackage (eqxrl.core, eqxrl.vision, ...)")
            assert hasattr(package, "__path__"), f"{path}: {node.module} is not a package"
            for alias in node.names:
                assert hasattr(package, alias.name), f"{path}: {node.module}.{alias.name}"


def test_pyproject_lists_every_package():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    folders = {os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
               for p in glob.glob(os.path.join(ROOT, "eqxrl", "**", "__init__.py"),
                                  recursive=True)}
    assert listed == folders | {"eqxrl.algorithms"}


def test_the_wheel_holds_only_eqxrl(tmp_path):
    """`pip install .` installs `eqxrl/` (algorithms as `eqxrl/algorithms/`) and its metadata,
    never a top-level `algorithms` package."""
    pytest.importorskip("setuptools", minversion="77")
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info/ beside it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    for name in ("eqxrl", "algorithms"):
        shutil.copytree(os.path.join(ROOT, name), source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = glob.glob(str(tmp_path / "*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"eqxrl", next(t for t in tops if t.endswith(".dist-info"))}, tops
    assert "eqxrl/algorithms/sac.py" in names and "eqxrl/algorithms/__init__.py" in names


def test_an_incomplete_algorithm_is_refused_with_every_missing_name():
    import types

    import eqxrl
    from eqxrl.algorithms import ppo, sac

    module = types.ModuleType("half_done")
    module.init, module.update, module.act = sac.init, sac.update, 3
    with pytest.raises(TypeError, match=r"lacks \['Config', 'State'\]; \['act'\] are not fun"):
        eqxrl.train_online(sac.Config(), module)
    with pytest.raises(TypeError, match=r"not an OnPolicyAlgorithm: it lacks \['explore'\]"):
        eqxrl.train_on_policy(ppo.Config(), sac)
    eqxrl.check_algorithm(ppo, eqxrl.loops.OnPolicyAlgorithm)  # complete: no error

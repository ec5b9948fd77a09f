"""Loading run folders: old-format folders still load and resume exactly, foreign modules never run.

`tests/data/sac_run_v0_1` was written by eqxrl 0.1 before the package layout changed (its
`config.json` says `"module": "algorithms.sac"`): SAC on Pendulum-v1, seed 0, 300 env steps,
checkpoints at steps 200 and 300, made with

    python algorithms/sac.py --env-id Pendulum-v1 --total-steps 300 --start-steps 100 \\
        --buffer-size 1000 --batch-size 32 --hidden-dims 16 16 --eval-episodes 1 \\
        --eval-interval 300 --log-interval 100 --checkpoint-interval 200 --no-tensorboard
"""

from __future__ import annotations

import json
import os
import shutil

import equinox as eqx
import numpy as np
import pytest

import eqxrl
from eqxrl.algorithms import sac
from eqxrl.run.record import trusted_module

OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "sac_run_v0_1")


def test_old_run_folder_loads():
    with open(os.path.join(OLD_RUN, "config.json")) as f:
        assert json.load(f)["module"] == "algorithms.sac"  # the old record, as written
    run = eqxrl.load_run(OLD_RUN)
    assert run.algorithm is sac and run.step == 300
    policy, config = eqxrl.load_policy(OLD_RUN)
    action = policy(np.zeros(3, np.float32))
    assert action.shape == (1,) and np.all(np.abs(np.asarray(action)) <= 1.0)
    assert config.hidden_dims == (16, 16)


def test_old_run_folder_resumes_bit_exactly(tmp_path):
    """Resumed from its step-200 checkpoint by today's code, the old run reaches the state and
    the final evaluation that the old code reached without stopping."""
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    os.remove(run_dir / "checkpoints" / "step_0000000300.ckpt")
    eqxrl.cli(sac.main, sac.Config, ["--resume", str(run_dir), "--total-steps", "300",
                                     "--no-progress"])
    resumed, original = eqxrl.load_run(str(run_dir)), eqxrl.load_run(OLD_RUN)
    assert resumed.step == original.step == 300
    assert bool(eqx.tree_equal(resumed.state, original.state))
    with open(run_dir / "summary.json") as f, open(os.path.join(OLD_RUN, "summary.json")) as g:
        assert json.load(f)["final_eval_return"] == json.load(g)["final_eval_return"]
    with open(run_dir / "config.json") as f:
        assert json.load(f)["module"] == "eqxrl.algorithms.sac"  # rewritten in today's form


def test_trusted_modules():
    assert trusted_module("eqxrl.algorithms.sac") == "eqxrl.algorithms.sac"
    assert trusted_module("algorithms.td3") == "eqxrl.algorithms.td3"  # old records
    for name in ("os", "evil", "algorithms.os", "eqxrl.algorithms.sac.x", "eqxrl.run.load",
                 "eqxrl.algorithms.no_such_algorithm", "eqxrl.algorithms."):
        assert trusted_module(name) is None, name


def test_a_planted_module_is_never_imported(tmp_path, monkeypatch):
    """A run folder naming a module outside eqxrl.algorithms is refused before any import, even
    when that module is importable; passing it explicitly is the way to use it."""
    marker = tmp_path / "imported"
    (tmp_path / "planted_algo.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom eqxrl.algorithms.sac import *  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    record = json.loads((run_dir / "config.json").read_text())
    for module in ("planted_algo", "eqxrl.algorithms.planted_algo", "algorithms.planted_algo"):
        (run_dir / "config.json").write_text(json.dumps(record | {"module": module}))
        with pytest.raises(ValueError, match=r"not one of eqxrl\.algorithms.*algorithm=module"):
            eqxrl.load_policy(str(run_dir))
        with pytest.raises(ValueError, match="not one of eqxrl.algorithms"):
            eqxrl.load_run(str(run_dir))
    assert not marker.exists()
    # The caller's own module is used when passed in (the name must match the record's).
    (run_dir / "config.json").write_text(json.dumps(record | {"module": "planted_algo"}))
    policy, _ = eqxrl.load_policy(str(run_dir), algorithm=sac)
    assert policy(np.zeros(3, np.float32)).shape == (1,)
    assert not marker.exists()


def test_damaged_records_are_named(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD_RUN, run_dir)
    (run_dir / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        eqxrl.load_policy(str(run_dir))
    (run_dir / "config.json").write_text(json.dumps({"algorithm": "sac", "config": {}}))
    with pytest.raises(ValueError, match=r"lacks \['module'\]"):
        eqxrl.load_policy(str(run_dir))

"""Run folders users can trust, through the command line where a user meets them."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import gymnasium as gym
import jax
import numpy as np
import pytest

import eqxrl
from eqxrl.algorithms import sac, td3
from eqxrl.run import checkpoints as ck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--env-id", "Pendulum-v1", "--total-steps", "300", "--start-steps", "100",
        "--batch-size", "32", "--buffer-size", "5000", "--hidden-dims", "32", "32",
        "--eval-interval", "300", "--eval-episodes", "1", "--checkpoint-interval", "150",
        "--log-interval", "100", "--no-progress", "--no-tensorboard"]


def sac_cli(*args):
    """`python algorithms/sac.py ARGS` in this process; returns the exit code."""
    try:
        eqxrl.cli(sac.main, sac.Config, list(args))
    except SystemExit as exit:
        return exit.code
    return 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 300-step SAC run (checkpoints at 150 and 300)."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "sac")
    assert sac_cli(*TINY, "--run-dir", run_dir) == 0
    return run_dir


def read_json(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


def copy_of(run_dir, tmp_path, name="copy"):
    target = str(tmp_path / name)
    shutil.copytree(run_dir, target)
    return target


def test_a_fresh_run_into_an_existing_folder_is_refused(finished, capsys):
    assert sac_cli(*TINY, "--run-dir", finished) == 2  # one error: line, no traceback
    assert re.search(r"^error: --run-dir '.*sac' exists already.*--resume",
                     capsys.readouterr().err)


def test_a_failed_start_leaves_no_folder(tmp_path, capsys):
    assert sac_cli(*TINY, "--run-dir", str(tmp_path / "bad"), "--env-id", "Nope-v0") == 2
    assert "error: env_id='Nope-v0' could not be made" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")


def test_resume_extends_a_moved_run_from_another_cwd(finished, tmp_path, monkeypatch):
    moved = copy_of(finished, tmp_path, "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    relative = os.path.relpath(moved)
    assert sac_cli("--resume", relative, "--total-steps", "450", "--no-progress") == 0
    summary = read_json(moved, "summary.json")
    assert summary["steps"] == 450 and summary["status"] == "done"
    assert [s for s, _ in ck.list_checkpoints(os.path.join(moved, "checkpoints"))] == [300, 450]
    record = read_json(moved, "config.json")
    assert record["config"]["run"]["total_steps"] == 450  # a later --resume continues to 450
    assert not os.path.exists(elsewhere / "runs")


def test_resume_refuses_flags_that_would_change_the_run(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    for args, says in [
        (["--seed", "3"], r"--seed 3 would change the run \(it was trained with 0"),
        (["--actor-lr", "0.001"], r"--actor-lr 0.001 would change the run"),
        (["--total-steps", "200"], r"--total-steps 200 is below the step of its newest "
                                   r"checkpoint \(300\)"),
    ]:
        assert sac_cli("--resume", run, *args) == 2
        assert re.search("error: --resume .*" + says, capsys.readouterr().err)
    with pytest.raises(ValueError, match=r"--total-steps 200 is below the step of its newest"):
        sac.main(sac.Config(run=eqxrl.OnlineRun(resume=run, total_steps=200)))
    # Flags equal to the saved run's values change nothing and are accepted.
    assert sac_cli("--resume", run, "--seed", "0", "--hidden-dims", "32", "32") == 0


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert sac_cli("--resume", str(tmp_path)) == 2
    assert "not a run folder: it has no config.json" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"not a run folder: it has no config.json"):
        eqxrl.run.resolve_resume(sac.Config(run=eqxrl.OnlineRun(resume=str(tmp_path))))


def test_checkpoints_store_only_the_filled_buffer_rows(finished):
    path = ck.list_checkpoints(os.path.join(finished, "checkpoints"))[-1][1]
    header, _ = ck.read_header(path)
    layout = {name: shape for name, shape, _ in header["layout"]}
    assert layout["['buffer']['data'].obs"] == [300, 3]  # not the 5000-row capacity
    assert header["meta"]["buffer_rows"] == 300
    run = eqxrl.load_run(finished, buffer=True)
    assert run.buffer.capacity == 5000 and int(run.buffer.size) == 300


def test_ctrl_c_checkpoints_then_exits_130(tmp_path):
    run_dir = str(tmp_path / "interrupted")
    args = [a for a in TINY if a != "--no-progress"]
    args[args.index("--total-steps") + 1] = "100000"
    process = subprocess.Popen(
        [sys.executable, "algorithms/sac.py", *args, "--run-dir", run_dir, "--log-interval",
         "10", "--progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while not os.path.exists(os.path.join(run_dir, "train.csv")) and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 130, out
    assert f"interrupted (continue with --resume {run_dir})" in out
    assert ck.list_checkpoints(os.path.join(run_dir, "checkpoints"))


class BreakCheckpointsAt(gym.Wrapper):
    """Replaces the run's checkpoints/ folder by a file on the given step (a failing disk)."""

    def __init__(self, env, run_dir, at):
        super().__init__(env)
        self.run_dir, self.at, self.count = run_dir, at, 0

    def step(self, action):
        self.count += 1
        if self.count == self.at:
            folder = os.path.join(self.run_dir, "checkpoints")
            shutil.rmtree(folder)
            open(folder, "w").close()
        return self.env.step(action)


def test_a_failed_checkpoint_write_is_not_a_clean_finish(tmp_path):
    run_dir = str(tmp_path / "broken")
    config = sac.Config(
        run=eqxrl.OnlineRun(env_id="Pendulum-v1", total_steps=300, start_steps=100,
                            batch_size=32, buffer_size=1000, eval_interval=300,
                            eval_episodes=1, checkpoint_interval=150, run_dir=run_dir,
                            progress=False),
        hidden_dims=(32, 32),
    )
    breaking = lambda env_id: BreakCheckpointsAt(eqxrl.make_env(env_id), run_dir, 200)
    with pytest.raises(OSError):
        eqxrl.train_online(config, sac, make_env=breaking)
    summary = read_json(run_dir, "summary.json")
    assert summary["status"] == "failed" and summary["steps"] == 300
    assert summary["error"].startswith(("NotADirectoryError", "FileNotFoundError"))


@pytest.mark.slow  # 15 s: three short runs; the default suite is ~10 min
def test_wandb_gets_project_entity_group_and_a_unique_id(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(kw) or types.SimpleNamespace(
        log=lambda *a, **k: None, finish=lambda: None)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    flags = ["--wandb", "--wandb-project", "p", "--wandb-entity", "e", "--wandb-group", "g"]
    assert sac_cli(*TINY, *flags, "--run-dir", str(tmp_path / "a")) == 0
    assert sac_cli(*TINY, *flags, "--run-dir", str(tmp_path / "b")) == 0
    assert sac_cli("--resume", str(tmp_path / "a"), "--total-steps", "400") == 0
    assert [(c["project"], c["entity"], c["group"]) for c in calls] == [("p", "e", "g")] * 3
    ids = [c["id"] for c in calls]
    assert ids[0] != ids[1] and ids[2] == ids[0]  # unique per run, kept when resumed


# 18 s each: slow (tests/test_run_load.py loads an online SAC run folder in the default run).
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", [sac, td3])
def test_load_policy_of_an_online_run(algorithm, tmp_path):
    run_dir = str(tmp_path / algorithm.__name__)
    config = algorithm.Config(
        run=eqxrl.OnlineRun(env_id="Pendulum-v1", total_steps=200, start_steps=100,
                            batch_size=32, buffer_size=1000, eval_interval=200,
                            eval_episodes=1, run_dir=run_dir, progress=False),
        hidden_dims=(32, 32),
    )
    algorithm.main(config)
    policy, loaded = eqxrl.load_policy(run_dir)
    assert loaded == config
    state = eqxrl.load_run(run_dir).state
    obs = jax.numpy.asarray(np.random.default_rng(0).normal(size=(5, 3)), jax.numpy.float32)
    expected = algorithm.act(state, obs, jax.random.key(0), deterministic=True)
    np.testing.assert_allclose(policy(obs), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy(obs[0]), expected[0], rtol=1e-5, atol=1e-6)  # one obs
    if algorithm is td3:
        with pytest.raises(ValueError, match=r"algorithm='sac', but the run was trained by 'td3'"):
            eqxrl.load_policy(run_dir, algorithm=sac)
    # From Python, `OnlineRun(resume=...)` carries OnlineRun's own defaults (TD3's default
    # start_steps is 25k): they are not taken for flags the user set.
    resumed = algorithm.Config(run=eqxrl.OnlineRun(resume=run_dir, total_steps=250))
    assert algorithm.main(resumed)["steps"] == 250


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--init-temperature", "inf"], r"--init-temperature must be a finite number > 0, got inf"),
        (["--init-temperature", "nan"], r"--init-temperature must be a finite number > 0, got nan"),
        (["--start-steps", "300"], r"--start-steps \(300\) must be < --total-steps \(300\)"),
        (["--log-std-min", "3"], r"--log-std-min \(3.0\) must be finite and <= --log-std-max"),
    ],
)
def test_bad_flags_are_early_errors_naming_the_flag(flags, message, tmp_path, capsys):
    # tyro shows an algorithm field's ValueError in a box and exits with 2; a run setting's
    # ValueError comes through as it is. Either way it names the flag, before anything runs.
    try:
        assert sac_cli(*TINY, *flags, "--run-dir", str(tmp_path / "never")) == 2
        shown = capsys.readouterr()
        text = " ".join((shown.out + shown.err).replace("│", " ").split())
    except ValueError as error:
        text = str(error)
    assert re.search(message, text), text
    assert not os.path.exists(tmp_path / "never")


def test_logged_rate_covers_the_last_log_interval(monkeypatch):
    # train.csv's steps_per_second is the rate since the previous row, so a slow start
    # (compilation, a long evaluation) does not drag every later row down; the summary's
    # per_second stays the whole session's average.
    run = object.__new__(eqxrl.run.harness.Run)
    run.progress = eqxrl.run.progress.Progress([], step=100)
    run.session_start, run.start_step = 0.0, 0
    run.rate_mark = (0.0, 0)
    clock = iter([10.0, 20.0, 20.0])
    monkeypatch.setattr(eqxrl.run.harness.time, "perf_counter", lambda: next(clock))
    assert run.recent_rate() == pytest.approx(10.0)  # 100 steps in the first 10 s
    run.progress.step = 400
    assert run.recent_rate() == pytest.approx(30.0)  # 300 steps in the next 10 s
    assert run.rate() == pytest.approx(20.0)  # 400 steps in 20 s


@pytest.mark.slow  # ~25 s: an IQL run and its resumption
def test_an_offline_run_with_a_relative_dataset_resumes_from_another_folder(tmp_path,
                                                                            monkeypatch):
    from eqxrl.algorithms import iql

    from .conftest import pendulum_dataset_file

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir(), elsewhere.mkdir()
    pendulum_dataset_file(start / "data.hdf5")
    monkeypatch.chdir(start)
    iql.main(iql.Config(hidden_dims=(8,), run=eqxrl.OfflineRun(
        dataset="data.hdf5", total_updates=20, updates_per_call=10, batch_size=8,
        eval_interval=20, eval_episodes=1, run_dir="run", progress=False, tensorboard=False)))
    monkeypatch.chdir(elsewhere)  # "data.hdf5" names nothing here; config.json says where it was
    summary = iql.main(iql.Config(run=eqxrl.OfflineRun(resume=str(start / "run"),
                                                       total_updates=40)))
    assert summary["steps"] == 40 and summary["status"] == "done"
    record = read_json(str(start / "run"), "config.json")
    assert record["config"]["run"]["dataset"] == "data.hdf5"  # as given; found from its "cwd"
    assert record["cwd"] == str(start)
    (start / "data.hdf5").rename(start / "gone.hdf5")  # then nowhere: one clear error
    with pytest.raises(eqxrl.core.ConfigError, match=r"its --dataset 'data.hdf5' is found "
                                                     r"neither from here"):
        iql.main(iql.Config(run=eqxrl.OfflineRun(resume=str(start / "run"), total_updates=60)))

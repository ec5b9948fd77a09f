"""Runs across processes with `jax.distributed`: 2 CPU processes on localhost train, checkpoint
with orbax, lose a process to SIGKILL and resume; the result equals an uninterrupted run."""

import os
import signal
import socket
import subprocess
import sys
import time

import equinox as eqx
import jax
import numpy as np
import pytest

import eqxrl

from .conftest import pendulum_dataset_file

pytest.importorskip("orbax.checkpoint")
pytestmark = pytest.mark.slow  # each case starts processes that compile SAC or IQL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAC = ["algorithms/sac.py", "--env-id", "Pendulum-v1", "--num-seeds", "2", "--total-steps",
       "600", "--start-steps", "100", "--batch-size", "32", "--buffer-size", "1000",
       "--eval-interval", "300", "--eval-episodes", "1", "--log-interval", "50",
       "--checkpoint-interval", "100", "--hidden-dims", "16", "16", "--no-progress"]


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(args, processes=2):
    """Start the processes of one multi-process run (the command the README documents)."""
    port = free_port()
    return [subprocess.Popen(
        [sys.executable, *args, "--num-processes", str(processes), "--process-id", str(i),
         "--coordinator", f"localhost:{port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(processes)]


def finish(procs, timeout=600):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return outs


def states(run_dir):
    found = []
    for agent in range(2):
        run = eqxrl.load_run(str(run_dir), agent=agent, buffer=True)
        found.append([np.asarray(x) for x in jax.tree.leaves(
            (eqx.filter(run.state, eqx.is_inexact_array), run.buffer.data))])
    return found


def test_two_processes_train_survive_a_killed_process_and_resume_exactly(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    outs = finish(launch([*SAC, "--run-dir", str(straight)]))
    assert "sac on Pendulum-v1 (2 agents, seeds 0 1" in outs[0] and "agents" not in outs[1]

    procs = launch([*SAC, "--run-dir", str(broken)])
    deadline = time.time() + 300
    while not (broken / "checkpoints" / "300").is_dir():
        assert time.time() < deadline and procs[0].poll() is None, procs[0].communicate()[0]
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGKILL)
    procs[0].communicate(timeout=300)  # the job goes down with its process
    assert procs[0].returncode != 0
    saved = sorted(int(n) for n in os.listdir(broken / "checkpoints") if n.isdigit())
    assert 300 in saved and max(saved) < 600

    finish(launch(["algorithms/sac.py", "--resume", str(broken)]))
    for a, b in zip(states(straight), states(broken), strict=True):  # every agent
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)  # bit-exact on CPU

    # The same run goes on in one process: its agents' state is resharded onto one device.
    summary = eqxrl.train_online(
        eqxrl.load_run(str(straight), agent=0).algorithm.Config(run=eqxrl.OnlineRun(
            resume=str(straight), total_steps=700, num_processes=1, progress=False)),
        eqxrl.load_run(str(straight), agent=0).algorithm)
    assert summary["steps"] == 700 and len(summary["agents"]) == 2


@pytest.mark.parametrize("seeds", [2, 1])  # agents split over processes; one agent's batch
def test_two_processes_offline_equal_one(tmp_path, seeds):
    data = pendulum_dataset_file(tmp_path / "data.hdf5")
    args = ["algorithms/iql.py", "--dataset", data, "--num-seeds", str(seeds), "--total-updates",
            "200", "--updates-per-call", "100", "--eval-interval", "200", "--eval-episodes",
            "1", "--hidden-dims", "16", "16", "--batch-size", "32", "--no-progress"]
    finish(launch([*args, "--run-dir", str(tmp_path / "two")]))
    one = subprocess.run([sys.executable, *args, "--run-dir", str(tmp_path / "one")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    for agent in range(seeds):
        a, b = (eqxrl.load_run(str(tmp_path / name), agent=agent if seeds > 1 else None).state
                for name in ("two", "one"))
        for x, y in zip(jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array)),
                        jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array)), strict=True):
            # Float tolerance: each process runs its agent as a vmap of one (other kernels),
            # or one agent's gradient is summed over two halves of its batch.
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=2e-4)

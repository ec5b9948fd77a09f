"""benchmarks/offline_table.py: its commands, resumption and table, without training."""

import json
import os
import sys

import jax.numpy as jnp
import pytest

from benchmarks import offline_table as ot
from eqxrl import Dataset, Transition
from eqxrl.datasets.files import save_dataset
from eqxrl.datasets.info import DatasetInfo


def tiny_dataset(path):
    # Two 2-step episodes with returns 2 and 6; references (0, 10) make them 20 and 60.
    reward = jnp.array([1.0, 1.0, 3.0, 3.0])
    ends = jnp.array([False, True, False, True])
    data = Dataset(
        Transition(
            obs=jnp.zeros((4, 3)),
            action=jnp.zeros((4, 1)),
            reward=reward,
            next_obs=jnp.zeros((4, 3)),
            terminated=jnp.zeros(4, bool),
            truncated=ends,
        )
    )
    info = DatasetInfo(env_id="Pendulum-v1", ref_min_score=0.0, ref_max_score=10.0)
    save_dataset(path, data, info)


def fake_run(args, path, algo, seed, score, interrupted=False):
    directory = ot.run_dir(args, path, algo, seed)
    os.makedirs(directory)
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump({"final_normalized_score": score, "interrupted": interrupted}, f)


def test_commands_table_and_skipping_finished_runs(tmp_path):
    path = str(tmp_path / "pendulum-mixed.hdf5")
    tiny_dataset(path)
    args = ot.Args(
        datasets=(path,), algos=("bc", "cql"), seeds=(0, 1), total_updates=3000,
        updates=("cql=500",), out_dir=str(tmp_path / "out"),
    )  # fmt: skip
    cmd = ot.command(args, path, "cql", 1)
    assert cmd[0] == sys.executable and cmd[1].endswith(os.path.join("algorithms", "cql.py"))
    flags = dict(zip(cmd[2::2], cmd[3::2], strict=False))
    assert flags["--total-updates"] == "500" and flags["--eval-interval"] == "500"
    assert flags["--seed"] == "1" and flags["--dataset"] == path
    assert ot.command(args, path, "bc", 0)[6:8] == ["--total-updates", "3000"]

    fake_run(args, path, "bc", 0, 50.0)
    fake_run(args, path, "bc", 1, 70.0)
    fake_run(args, path, "cql", 0, 40.0, interrupted=True)  # not finished: not counted
    assert ot.train(args, path, "bc", 0) == ("pendulum-mixed bc s0", 0.0, 0)  # not rerun
    lines = ot.table(args).splitlines()
    assert lines[0] == "| dataset | transitions | data | bc (3k) | cql (0.5k) |"
    assert lines[2] == "| pendulum-mixed | 4 | 40.0 (2 ep.) | 60.0 ± 10.0 (n=2) | – |"


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"updates": ("iql=10",)}, r"--updates: expected ALGO=N .* got 'iql=10'"),
        ({"updates": ("bc=ten",)}, r"got 'bc=ten'"),
        ({"jobs": 0}, r"--jobs must be >= 1, got 0"),
        ({"datasets": ("missing.hdf5",)}, r"--datasets: no file 'missing.hdf5'"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kw, match):
    path = str(tmp_path / "d.hdf5")
    tiny_dataset(path)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        ot.Args(**({"datasets": (path,), "algos": ("bc",)} | kw))


def test_num_seeds_is_one_vmapped_run_whose_agents_and_curve_are_read(tmp_path):
    path = str(tmp_path / "pendulum-mixed.hdf5")
    tiny_dataset(path)
    args = ot.Args(datasets=(path,), algos=("rebrac",), num_seeds=3, total_updates=2000,
                   eval_interval=1000, out_dir=str(tmp_path / "out"))
    cmd = ot.command(args, path, "rebrac", -1)
    assert cmd[1].endswith("rebrac.py") and cmd[4:6] == ["--num-seeds", "3"]
    directory = ot.run_dir(args, path, "rebrac", -1)
    assert directory.endswith(os.path.join("pendulum-mixed", "rebrac__n3"))
    os.makedirs(directory)
    agents = [{"final_normalized_score": v} for v in (10.0, 20.0, 30.0)]
    with open(os.path.join(directory, "summary.json"), "w") as f:
        json.dump({"final_normalized_score": 20.0, "interrupted": False, "agents": agents,
                   "wall_time_s": 120.0}, f)
    with open(os.path.join(directory, "eval.csv"), "w") as f:
        f.write("step,agent,seed,normalized_score_mean\n1000,0,0,4\n1000,1,1,6\n1000,2,2,8\n"
                "2000,0,0,10\n2000,1,1,20\n2000,2,2,30\n")
    assert ot.table(args).splitlines()[2].endswith("| 20.0 ± 8.2 (n=3, 2 min) |")
    assert ot.curves(args) == "- pendulum-mixed rebrac: 1k: 6.0, 2k: 20.0"
    with pytest.raises(ValueError, match=r"--num-seeds 3 trains seeds 0..2 in one run; drop "
                                         r"--seeds 1 2"):
        ot.Args(datasets=(path,), num_seeds=3, seeds=(1, 2))

"""benchmarks/offline_to_online.py: its commands, curves and table, without training."""

import os
import sys

import pytest

from benchmarks import offline_to_online as o2o

from .conftest import pendulum_dataset_file


def write_eval(directory, rows):
    """An eval.csv whose returns are the given normalised scores under references (−1200,
    −150) (those of `pendulum_dataset_file`)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "eval.csv"), "w") as f:
        f.write("step,return_mean\n" + "".join(f"{s},{-1200 + 10.5 * v}\n" for s, v in rows))


def test_commands_curves_and_table(tmp_path):
    path = pendulum_dataset_file(tmp_path / "pendulum-mixed.hdf5")
    args = o2o.Args(dataset=path, online_steps=2000, eval_interval=1000, start_steps=500,
                    num_seeds=3, iql_offline_updates=4000, rebrac_offline_updates=3000,
                    rebrac_actor_bc=0.1, out_dir=str(tmp_path / "out"))
    rlpd = o2o.command(args, "rlpd")
    assert rlpd[0] == sys.executable and rlpd[1].endswith("rlpd.py")
    flags = dict(zip(rlpd[2::2], rlpd[3::2], strict=False))
    assert flags["--offline-data"] == path and flags["--env-id"] == "Pendulum-v1"
    assert flags["--utd"] == "20" and flags["--num-seeds"] == "3"
    iql = dict(zip(o2o.command(args, "iql")[2::2], o2o.command(args, "iql")[3::2], strict=False))
    assert iql["--total-updates"] == "4000" and iql["--finetune-steps"] == "2000"
    rebrac = o2o.command(args, "rebrac")
    assert rebrac[1].endswith("rebrac.py")
    flags = dict(zip(rebrac[2::2], rebrac[3::2], strict=False))
    assert (flags["--total-updates"], flags["--finetune-steps"], flags["--actor-bc"]) == (
        "3000", "2000", "0.1")
    assert "--offline-data" not in dict(zip(o2o.command(args, "sac")[2::2],
                                            o2o.command(args, "sac")[3::2], strict=False))
    write_eval(o2o.run_dir(args, "sac"), [(1000, 10), (2000, 30)])
    write_eval(o2o.run_dir(args, "rlpd"), [(1000, 40), (2000, 20)])
    write_eval(o2o.run_dir(args, "iql"), [(2000, 5), (4000, 50)])  # offline: updates
    write_eval(os.path.join(o2o.run_dir(args, "iql"), "finetune"), [(1000, 55), (2000, 60)])
    write_eval(o2o.run_dir(args, "rebrac"), [(3000, 45)])
    write_eval(os.path.join(o2o.run_dir(args, "rebrac"), "finetune"), [(1000, 47), (2000, 52)])
    lines = o2o.curves(args)
    assert lines["iql"] == pytest.approx({0: 50.0, 1000: 55.0, 2000: 60.0})  # its offline end
    assert lines["rebrac"] == pytest.approx({0: 45.0, 1000: 47.0, 2000: 52.0})
    text = o2o.table(args, lines)
    assert "| 1,000 | 10.0 | 40.0 | 55.0 | 47.0 |" in text
    assert "RLPD ahead of SAC at 1 of 2 evaluation steps (not at [2000])." in text


@pytest.mark.parametrize("kw, match", [
    ({"online_steps": 0}, r"--online-steps must be >= 1, got 0"),
    ({"start_steps": 5000, "online_steps": 5000}, r"--start-steps \(5000\) must be < "
                                                  r"--online-steps \(5000\)"),
    ({"dataset": "missing.hdf5"}, r"--dataset: no file 'missing.hdf5'"),
])
def test_bad_arguments_are_named(tmp_path, kw, match):
    path = pendulum_dataset_file(tmp_path / "d.hdf5")
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        o2o.Args(**({"dataset": path} | kw))

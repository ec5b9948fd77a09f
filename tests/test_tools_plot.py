import json
import subprocess
import sys

import pytest

from eqxrl.run.logging import Logger
from eqxrl.tools.plot import PlotArgs, group_runs, legend_labels, plot


def write_curve(path, returns):
    logger = Logger(str(path), tensorboard=False)
    for step, r in zip((1000, 2000, 3000), returns, strict=True):
        logger.log({"return_mean": r}, step, group="eval")
    logger.close()
    return str(path)


def fake_run(path, seed, returns, lr=3e-4, algorithm="sac", env_id="Pendulum-v1", **run):
    """A run folder whose config.json has the harness's layout."""
    path.mkdir()
    run = {
        "env_id": env_id,
        "seed": seed,
        "run_dir": str(path),
        "total_steps": 15_000,
        "eval_interval": 1000,
        "checkpoint_interval": 50_000,
        "keep_checkpoints": 2,
        "log_interval": 1000,
        "resume": None,
        "progress": True,
        "tensorboard": True,
        "wandb": False,
        "wandb_project": "eqxrl",
        "wandb_group": None,
        **run,
    }
    config = {"run": run, "hidden_dims": [256, 256], "actor_lr": lr}
    record = {"algorithm": algorithm, "module": f"eqxrl.algorithms.{algorithm}", "config": config}
    (path / "config.json").write_text(json.dumps(record))
    return write_curve(path, returns)


def test_groups_seeds_and_writes_png(tmp_path):
    # Seed 2 checkpointed more often and logged to another W&B group: still the same curve;
    # only lr makes another one.
    runs = [
        fake_run(
            tmp_path / f"s{i}",
            i,
            [i, 10 + i, 20 + i],
            checkpoint_interval=10_000 * i + 1,
            wandb_group=f"g{i}",
        )
        for i in range(3)
    ]
    runs.append(fake_run(tmp_path / "other", 0, [0, 1, 2], lr=1e-3))
    groups = group_runs(runs)
    assert sorted(len(g) for g in groups.values()) == [1, 3]
    assert sorted(legend_labels(groups).values()) == [
        "sac, actor_lr=0.0003 (3 seeds)",
        "sac, actor_lr=0.001 (1 seed)",
    ]
    out = plot(PlotArgs(runs=tuple(runs), out=str(tmp_path / "curve.png")))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_labels_name_the_algorithm_first(tmp_path):
    runs = [fake_run(tmp_path / f"sac{i}", i, [1, 2, 3]) for i in range(3)]
    assert list(legend_labels(group_runs(runs)).values()) == ["sac, env_id=Pendulum-v1 (3 seeds)"]
    # Another algorithm's hyperparameters are not "varying": its name tells the curves apart.
    runs.append(fake_run(tmp_path / "td3", 0, [1, 2, 3], algorithm="td3", lr=1e-3))
    assert sorted(legend_labels(group_runs(runs)).values()) == [
        "sac, env_id=Pendulum-v1 (3 seeds)",
        "td3, env_id=Pendulum-v1 (1 seed)",
    ]
    # Run settings are compared across algorithms, hyperparameters within one.
    runs.append(
        fake_run(tmp_path / "td3_hopper", 0, [1, 2, 3], algorithm="td3", env_id="Hopper-v5")
    )
    assert sorted(legend_labels(group_runs(runs)).values()) == [
        "sac, env_id=Pendulum-v1 (3 seeds)",
        "td3, env_id=Hopper-v5, actor_lr=0.0003 (1 seed)",
        "td3, env_id=Pendulum-v1, actor_lr=0.001 (1 seed)",
    ]


def test_old_flat_config_takes_the_algorithm_from_the_folder_name(tmp_path):
    def old_run(name, seed, lr=3e-4):
        path = tmp_path / name
        path.mkdir()
        config = {"env_id": "Hopper-v5", "seed": seed, "actor_lr": lr, "run_dir": str(path)}
        (path / "config.json").write_text(json.dumps(config))
        return write_curve(path, [1, 2, 3])

    runs = [old_run(f"sac__Hopper-v5__s{i}__0101", i) for i in range(2)]
    runs.append(old_run("sac__Hopper-v5__s0__0102", 0, lr=1e-3))
    assert sorted(legend_labels(group_runs(runs)).values()) == [
        "sac, actor_lr=0.0003 (2 seeds)",
        "sac, actor_lr=0.001 (1 seed)",
    ]
    # A folder name without "__" does not name the algorithm: the label has only the fields.
    runs = [old_run(f"s{i}", i) for i in range(2)]
    assert list(legend_labels(group_runs(runs)).values()) == ["env_id=Hopper-v5 (2 seeds)"]


def test_missing_metric_is_named(tmp_path):
    run = fake_run(tmp_path / "a", 0, [1, 2, 3])
    with pytest.raises(KeyError, match="no column 'nope'"):
        plot(PlotArgs(runs=(run,), metric="nope", out=str(tmp_path / "x.png")))


def test_command_line_takes_run_folders_as_positional_arguments(tmp_path):
    runs = [fake_run(tmp_path / f"s{i}", i, [i, 2 * i, 3 * i]) for i in range(2)]
    out = tmp_path / "curve.png"
    subprocess.run(
        [sys.executable, "-m", "eqxrl.tools.plot", *runs, "--out", str(out)], check=True,
        timeout=300)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

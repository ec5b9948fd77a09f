import json
import subprocess
import sys

import pytest

from eqxrl.logging import Logger
from eqxrl.plot import PlotArgs, group_runs, plot


def fake_run(path, seed, returns, lr=3e-4, checkpoint_interval=50_000):
    path.mkdir()
    config = {"env_id": "Hopper-v5", "seed": seed, "actor_lr": lr, "run_dir": str(path)}
    config["checkpoint_interval"] = checkpoint_interval
    (path / "config.json").write_text(json.dumps(config))
    logger = Logger(str(path), tensorboard=False)
    for step, r in zip((1000, 2000, 3000), returns, strict=True):
        logger.log({"return_mean": r}, step, group="eval")
    logger.close()
    return str(path)


def test_groups_seeds_and_writes_png(tmp_path):
    # Seed 2 checkpointed more often: still the same curve, only lr makes another one.
    runs = [
        fake_run(tmp_path / f"s{i}", i, [i, 10 + i, 20 + i], checkpoint_interval=10_000 * i + 1)
        for i in range(3)
    ]
    runs.append(fake_run(tmp_path / "other", 0, [0, 1, 2], lr=1e-3))
    groups = group_runs(runs)
    assert sorted(len(g) for g in groups.values()) == [1, 3]
    out = plot(PlotArgs(runs=tuple(runs), out=str(tmp_path / "curve.png")))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_missing_metric_is_named(tmp_path):
    run = fake_run(tmp_path / "a", 0, [1, 2, 3])
    with pytest.raises(KeyError, match="no column 'nope'"):
        plot(PlotArgs(runs=(run,), metric="nope", out=str(tmp_path / "x.png")))


def test_command_line_takes_run_folders_as_positional_arguments(tmp_path):
    runs = [fake_run(tmp_path / f"s{i}", i, [i, 2 * i, 3 * i]) for i in range(2)]
    out = tmp_path / "curve.png"
    subprocess.run(
        [sys.executable, "-m", "eqxrl.plot", *runs, "--out", str(out)], check=True, timeout=300
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

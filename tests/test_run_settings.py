"""Run settings and config checks: flat flags, errors that name the flag, JSON round trips."""

import dataclasses
import math
from typing import Annotated

import pytest
import tyro

import eqxrl
from eqxrl import core as checks
from eqxrl import run as cfg


@dataclasses.dataclass(frozen=True)
class Toy:
    """A toy algorithm config."""

    run: Annotated[eqxrl.OfflineRun, tyro.conf.arg(name="")] = eqxrl.OfflineRun(preset="antmaze")
    lr: float = 1e-3
    """learning rate"""
    sizes: tuple[int, ...] = (4, 4)
    """layer sizes"""

    def __post_init__(self):
        checks.positive(self, "lr")
        checks.layer_sizes(self, "sizes")


def test_run_settings_are_flat_flags():
    config = tyro.cli(Toy, args=["--dataset", "d.hdf5", "--seed", "3", "--lr", "0.5",
                                 "--sizes", "8", "8"])
    assert config.run.dataset == "d.hdf5" and config.run.seed == 3
    assert config.run.preset == "antmaze"  # the algorithm's own default for a run setting
    assert config.lr == 0.5 and config.sizes == (8, 8)


def test_json_round_trip_of_a_nested_config():
    config = Toy(run=eqxrl.OfflineRun(dataset="d.hdf5", seed=2), sizes=(16, 16, 16))
    values = cfg.to_dict(config)
    assert values["run"]["seed"] == 2 and values["sizes"] == [16, 16, 16]
    assert cfg.from_dict(Toy, values) == config
    with pytest.raises(ValueError, match=r"config has fields \['nope'\] that Toy does not know"):
        cfg.from_dict(Toy, values | {"nope": 1})


def test_identity_leaves_out_what_a_resumed_run_may_change():
    a = Toy(run=eqxrl.OfflineRun(dataset="d.hdf5", run_dir="x", total_updates=10))
    b = Toy(run=eqxrl.OfflineRun(dataset="d.hdf5", run_dir="y", total_updates=20,
                                 progress=False, resume="y"))
    assert cfg.identity(a) == cfg.identity(b)
    assert cfg.identity(a) != cfg.identity(dataclasses.replace(a, lr=0.5))


@pytest.mark.parametrize(
    "check, message",
    [
        (lambda: Toy(lr=0.0), r"--lr must be a finite number > 0, got 0.0"),
        (lambda: Toy(lr=math.inf), r"--lr must be a finite number > 0, got inf"),
        (lambda: Toy(sizes=()), r"--sizes must be one or more positive layer sizes, got \(\)"),
        (lambda: eqxrl.OfflineRun(updates_per_call=0), r"--updates-per-call must be >= 1, got 0"),
        (lambda: eqxrl.OnlineRun(env_id=""), r"--env-id must be a gymnasium environment id"),
        (lambda: eqxrl.OnlineRun(eval_episodes=0), r"--eval-episodes must be >= 1, got 0"),
    ],
)
def test_bad_values_name_the_flag(check, message):
    with pytest.raises(ValueError, match=message):
        check()


def test_budget_and_unit_of_each_loop():
    assert eqxrl.OnlineRun(total_steps=500, start_steps=10).budget == 500
    assert eqxrl.OfflineRun(total_updates=70).budget == 70

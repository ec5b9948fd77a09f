"""RLPD (Ball, Smith, Kostrikov and Levine, 2023): "Efficient Online Reinforcement Learning with
Offline Data", SAC trained online with half of every batch taken from a dataset.

Run:   python algorithms/rlpd.py --env-id Hopper-v5 --offline-data data/hopper-medium.hdf5
Help:  python algorithms/rlpd.py --help
Resume an interrupted run:  python algorithms/rlpd.py --resume runs/<name>

RLPD is SAC (`algorithms/sac.py`) with three design choices and no new loss:
- symmetric sampling: each batch is half offline data, half online replay
  (`--offline-fraction 0.5`; the online loop mixes them, `eqxrl.loops.offline_mix`);
- LayerNorm in the critics, which keeps their values on offline actions bounded;
- an ensemble of 10 critics whose target takes the minimum of 2 drawn at random per update,
  trained at a high update-to-data ratio (`--utd 20`).
Defaults are the paper's locomotion settings: three hidden layers of 256, no entropy term in
the target, target entropy −|A|/2, learning rates 3e-4, batch 256, 5,000 random steps first.
Everything else (seeds, grids, devices, exact resume, `load_policy`) is SAC's, and so is the
State: a run of this file loads like a SAC run.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated

import tyro

import eqxrl
from eqxrl.algorithms import sac

# RLPD's state, init, update and act are SAC's: only its settings and its batches differ.
State, init, update, act = sac.State, sac.init, sac.update, sac.act


# ---------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Config(sac.Config):
    """RLPD: SAC online on a gymnasium env, with an offline dataset in every batch."""

    run: Annotated[eqxrl.OnlineRun, tyro.conf.arg(name="")] = eqxrl.OnlineRun(
        utd=20, start_steps=5_000)
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    """hidden layer sizes of actor and critics (--network mlp)"""
    num_critics: int = 10
    """critics in the ensemble"""
    num_min_critics: int | None = 2
    """critics drawn at random for the target minimum; None uses all of them"""
    critic_layer_norm: bool = True
    """LayerNorm in the critics"""
    backup_entropy: bool = False
    """subtract α·log π(a'|s') in the critic target"""
    target_entropy_per_dim: eqxrl.Swept[float] = -0.5
    """target entropy per action dimension (−0.5: −|A|/2, as RLPD)"""


# ---------------------------------------------------------------------------- main
def main(config: Config) -> dict:
    """Train RLPD online and return the run's summary.

    Raises:
        ValueError: without --offline-data (RLPD without data is SAC with an ensemble).
    """
    if not config.run.offline_data and config.run.resume is None:
        raise ValueError(
            "RLPD needs --offline-data PATH (a D4RL-style HDF5 file or a Minari dataset of the "
            "env). Without data it is SAC with a LayerNorm ensemble: run algorithms/sac.py "
            "--num-critics 10 --num-min-critics 2 --critic-layer-norm --utd 20 instead.")
    return eqxrl.train_online(config, sys.modules[__name__])


if __name__ == "__main__":
    eqxrl.cli(main, Config)

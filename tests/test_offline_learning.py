"""Offline learning runs on a small Pendulum-v1 dataset made here (slow: `pytest -m slow`).

The fixture trains SAC briefly (about −200 return), then writes two D4RL-style files with
`eqxrl.tools.collect`: "expert" (the SAC policy, sampled) and "mixed" (the SAC policy with heavy
noise, joined with uniformly random episodes). Both carry reference returns: the random
policy's (score 0) and the SAC policy's deterministic return (score 100).

Pendulum returns are negative, so criteria are stated on the normalised score
100·(return − random) / (expert − random), where "≥ 90% of the expert" means score ≥ 90.
"""

import json

import pytest

from eqxrl import OfflineRun, OnlineRun
from eqxrl.algorithms import bc, cql, iql, rebrac, sac, td3_bc
from eqxrl.tools import collect

pytestmark = pytest.mark.slow

UPDATES = 10_000
HIDDEN = (64, 64)


def run_settings(tmp, name, dataset, **run):
    """The run settings of every offline run here; `run` adds to them (IQL's preset)."""
    return OfflineRun(
        dataset=str(dataset),
        seed=0,
        total_updates=UPDATES,
        batch_size=256,
        updates_per_call=1_000,
        eval_interval=UPDATES,
        eval_episodes=10,
        log_interval=1_000,
        checkpoint_interval=UPDATES,
        run_dir=str(tmp / name),
        tensorboard=False,
        progress=False,
        **run,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    sac_dir = tmp / "sac"
    summary = sac.main(
        sac.Config(
            run=OnlineRun(
                env_id="Pendulum-v1",
                total_steps=8_000,
                start_steps=1_000,
                eval_interval=8_000,
                eval_episodes=10,
                progress=False,
                tensorboard=False,
                run_dir=str(sac_dir),
            )
        )
    )
    assert summary["final_eval_return"] > -400, summary  # the "expert" must be competent
    common = dict(run_dir=str(sac_dir), ref_episodes=10, progress=False)
    expert = collect.main(
        collect.Policy(output=str(tmp / "expert.hdf5"), num_steps=10_000, **common)
    )
    collect.main(
        collect.Policy(
            output=str(tmp / "noisy.hdf5"),
            num_steps=10_000,
            noise_std=1.0,
            epsilon=0.3,
            seed=1,
            **common,
        )
    )
    collect.main(
        collect.Random(
            env_id="Pendulum-v1",
            output=str(tmp / "random.hdf5"),
            num_steps=10_000,
            seed=2,
            ref_min_score=expert.ref_min_score,
            ref_max_score=expert.ref_max_score,
            progress=False,
        )
    )
    collect.main(
        collect.Concat(
            inputs=(str(tmp / "noisy.hdf5"), str(tmp / "random.hdf5")),
            output=str(tmp / "mixed.hdf5"),
            ref_min_score=expert.ref_min_score,
            ref_max_score=expert.ref_max_score,
        )
    )
    print(
        f"\nSAC eval return {summary['final_eval_return']:.1f}; references (random, expert) "
        f"= ({expert.ref_min_score:.1f}, {expert.ref_max_score:.1f})"
    )
    return tmp


def record(tmp, name, summary):
    """Print and keep the numbers (pytest -s shows them; results.json collects them)."""
    line = {k: summary[k] for k in ("final_eval_return", "final_normalized_score", "seed")}
    print(f"{name}: {json.dumps(line)}")
    path = tmp / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(results | {name: line}, indent=2))
    return summary["final_normalized_score"]


@pytest.fixture(scope="module")
def bc_on_mixed(data):
    config = bc.Config(run=run_settings(data, "bc_mixed", data / "mixed.hdf5"), hidden_dims=HIDDEN)
    return record(data, "bc_mixed", bc.main(config))


def test_bc_on_expert_data_reaches_90_percent_of_the_expert(data):
    config = bc.Config(run=run_settings(data, "bc_expert", data / "expert.hdf5"),
                       hidden_dims=HIDDEN)
    assert record(data, "bc_expert", bc.main(config)) >= 90.0


def test_iql_beats_bc_on_mixed_data(data, bc_on_mixed):
    # IQL's actor learning rate decays to 0 over the run, and its Q and V must propagate
    # 200-step returns first, so 10k updates at the default 3e-4 is too short here (seen:
    # score 19.4 vs BC's 30.9; with 30k updates at 3e-4 it scored 96.6). With lr 1e-3 for all
    # three networks, 10k updates gave 96.2 (seed 0) and 99.9 (seed 1) on this data.
    config = iql.Config(
        run=run_settings(data, "iql_mixed", data / "mixed.hdf5", preset="locomotion"),
        hidden_dims=HIDDEN,
        actor_lr=1e-3,
        critic_lr=1e-3,
        value_lr=1e-3,
    )
    assert record(data, "iql_mixed", iql.main(config)) > bc_on_mixed


def test_cql_beats_bc_on_mixed_data(data, bc_on_mixed):
    config = cql.Config(run=run_settings(data, "cql_mixed", data / "mixed.hdf5"),
                        hidden_dims=HIDDEN)
    assert record(data, "cql_mixed", cql.main(config)) > bc_on_mixed


def test_td3_bc_beats_bc_on_mixed_data(data, bc_on_mixed):
    config = td3_bc.Config(run=run_settings(data, "td3_bc_mixed", data / "mixed.hdf5"),
                           hidden_dims=HIDDEN)
    assert record(data, "td3_bc_mixed", td3_bc.main(config)) > bc_on_mixed


def test_rebrac_beats_bc_on_mixed_data(data, bc_on_mixed):
    # The paper's recipe (3×256 LayerNorm critics, lr 1e-3) at this file's batch size and
    # budget; its halfcheetah-medium penalties (the defaults).
    config = rebrac.Config(run=run_settings(data, "rebrac_mixed", data / "mixed.hdf5"))
    assert record(data, "rebrac_mixed", rebrac.main(config)) > bc_on_mixed

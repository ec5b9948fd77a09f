"""A run's bookkeeping (`eqxrl.run.progress`): what a checkpoint's metadata holds and reads back."""

import json

import pytest

from eqxrl.run.progress import AgentProgress, Progress


def test_progress_round_trips_through_json_metadata():
    progress = Progress.fresh(2, envs=3)
    progress.step, progress.buffer_sizes = 500, {"buffer_rows": 500, "buffer_frames": 503}
    agent = progress.agents[1]
    agent.episode_actions[2] += [[0.5], [-0.25]]
    agent.end_episode(0, -120.5)
    agent.record_eval({"return_mean": -150.0, "return_std": 3.0})
    meta = json.loads(json.dumps(progress.to_meta()))
    assert meta["buffer_rows"] == 500  # where eqxrl.data.saved.buffer_saved_like reads it
    back = Progress.from_meta(meta)
    assert back == progress
    assert back.agents[1].episode == [1, 0, 0] and back.agents[1].episodes_done == 1


def test_eval_bookkeeping_keeps_the_best_and_the_newest():
    agent = AgentProgress.fresh(1)
    for mean, score in [(-300.0, 10.0), (-100.0, 40.0), (-200.0, 25.0)]:
        agent.record_eval({"return_mean": mean, "normalized_score_mean": score})
    assert (agent.last_eval, agent.best_eval, agent.last_score) == (-200.0, -100.0, 25.0)


def test_log_rows_take_the_returns_finished_since_the_last_row():
    agent = AgentProgress.fresh(2)
    assert agent.take_returns() == {}
    agent.end_episode(0, 10.0)
    agent.end_episode(1, 20.0)
    assert agent.take_returns() == {"episode_return": 15.0}
    assert agent.take_returns() == {}
    assert agent.episodes_done == 2 and agent.episode == [1, 1]


def test_metadata_of_checkpoints_before_the_typed_progress_reads_back():
    # The host loop kept one env's episode as an int and its actions as one list (the fixture
    # tests/data/sac_run_v0_1 has such checkpoints; tests/test_run_load.py resumes it).
    old = {"step": 300, "wall_time": 9.2, "wandb_id": "a55cabf70b7a", "buffer_rows": 300,
           "agents": [{"last_eval": -1470.1, "best_eval": -1470.1, "last_score": None,
                       "episode": 1, "episode_actions": [[0.84], [-0.16]], "episodes_done": 1,
                       "episode_returns": []}]}
    progress = Progress.from_meta(old)
    assert progress.agents[0].episode == [1]
    assert progress.agents[0].episode_actions == [[[0.84], [-0.16]]]
    assert progress.buffer_sizes == {"buffer_rows": 300}


def test_foreign_metadata_is_refused_with_what_is_missing():
    with pytest.raises(ValueError, match=r"no \['wall_time', 'wandb_id', 'agents'\]"):
        Progress.from_meta({"step": 3})
    meta = Progress.fresh(1, 0).to_meta()
    meta["agents"][0]["mystery"] = 1
    with pytest.raises(ValueError, match=r"unknown per-agent entries \['mystery'\]"):
        Progress.from_meta(meta)

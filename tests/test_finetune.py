"""Offline → online fine-tuning (`--finetune-steps`, IQL); the reward presets of mixed batches."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import Dataset, Finetune, OfflineRun, ReplayBuffer, Transition
from eqxrl.algorithms import iql, sac
from eqxrl.datasets import preprocess, preset_rewards
from eqxrl.loops.offline_mix import mixed_sampler
from eqxrl.run.config_io import to_dict
from eqxrl.tools.plot import load_curve

from .conftest import assert_trees_equal, pendulum_dataset_file


def small(tmp_path, name="run", **finetune):
    path = pendulum_dataset_file(tmp_path / "d.hdf5")
    run = OfflineRun(dataset=path, total_updates=40, updates_per_call=20, batch_size=16,
                     eval_interval=20, eval_episodes=1, log_interval=20, checkpoint_interval=20,
                     run_dir=str(tmp_path / name), tensorboard=False, progress=False)
    return iql.Config(run=run, hidden_dims=(16, 16), finetune=Finetune(**finetune))


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("kwargs, message", [
    (dict(finetune_steps=-1), r"--finetune-steps must be >= 0, got -1"),
    (dict(finetune_steps=10, finetune_fraction=1.5),
     r"--finetune-fraction must be .*in \[0, 1\], got 1.5"),
    (dict(finetune_fraction=0.2), r"--finetune-fraction take\(s\) effect only with "
                                  r"--finetune-steps N"),
])
def test_bad_finetune_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Finetune(**kwargs)


# ---------------------------------------------------------------- rewards of both halves
@pytest.mark.parametrize("preset", ["none", "locomotion", "antmaze"])
def test_online_rows_get_the_reward_transform_of_the_dataset_preset(tmp_path, preset):
    data = eqxrl.load_dataset(pendulum_dataset_file(tmp_path / "d.hdf5"))[0]
    scale, shift = preset_rewards(data, preset)
    np.testing.assert_allclose(preprocess(data, preset).data.reward,
                               data.data.reward * scale + shift, rtol=1e-6)
    example = jax.tree.map(lambda x: x[0], data.data)
    buffer = ReplayBuffer.create(example, capacity=8)
    for i in range(8):
        buffer = buffer.add(dataclasses.replace(example, reward=jnp.float32(i)))
    batch = mixed_sampler(0.5, 8, (scale, shift))(buffer, data, jax.random.key(0))
    online = np.asarray(batch.reward[4:])
    raw = (online - shift) / scale
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-4)  # r·scale + shift of r in 0..7
    with pytest.raises(ValueError, match=r"preset='walker' is not known"):
        preset_rewards(data, "walker")


# ---------------------------------------------------------------- the two phases
@pytest.mark.slow  # ~20 s: two phases and a resume; the default run stays within ~6 minutes
def test_finetuning_continues_the_offline_agent_online_and_resumes_across_the_switch(tmp_path):
    config = small(tmp_path, "whole", finetune_steps=60)
    summary = iql.main(dataclasses.replace(config, run=dataclasses.replace(
        config.run, checkpoint_interval=20)))
    assert summary["status"] == "done" and summary["offline"]["steps"] == 40
    whole = str(tmp_path / "whole")
    offline = eqxrl.load_run(whole)
    online = eqxrl.load_run(os.path.join(whole, "finetune"))
    assert isinstance(online.config, iql.FinetuneConfig)
    assert online.config.run.offline_data == os.path.abspath(config.run.dataset)
    assert int(offline.state.actor.step) == 40
    assert int(online.state.actor.step) == 40 + 60  # the same optimiser, one update per step
    # The actor's cosine decay spans both phases.
    assert float(offline.state.actor.opt_state.hyperparams["decay_steps"]) == 100.0
    # One curve across the switch: the online rows follow the offline ones.
    rows = eqxrl.loops.joined_evals(whole)
    assert [(r["step"], r["phase"]) for r in rows] == [
        (20, 0), (40, 0), (60, 1), (80, 1), (100, 1)]
    steps, values = load_curve(whole)  # eqxrl-plot draws the same one curve
    assert list(steps) == [20, 40, 60, 80, 100]
    np.testing.assert_allclose(values, [r["return_mean"] for r in rows])
    # Interrupted in the online phase (its newest checkpoint lost), the run resumes exactly.
    part = str(tmp_path / "part")
    shutil.copytree(whole, part)
    os.remove(os.path.join(part, "finetune", "summary.json"))
    os.remove(os.path.join(part, "finetune", "checkpoints", "step_0000000060.ckpt"))
    iql.main(iql.Config(run=OfflineRun(resume=part, progress=False)))
    assert_trees_equal(eqxrl.load_run(os.path.join(part, "finetune")).state, online.state)
    # The phase's own folder is resumed through its run, with a pointer there.
    with pytest.raises(ValueError, match=r"fine-tuning phase of the run in .*part.*--resume"):
        iql.main(iql.Config(run=OfflineRun(resume=os.path.join(part, "finetune"))))
    policy, _ = eqxrl.load_policy(os.path.join(whole, "finetune"))
    assert policy(np.zeros(3, np.float32)).shape == (1,)


def test_finetuning_from_a_run_of_another_algorithm_is_refused(tmp_path):
    run = eqxrl.OnlineRun(env_id="Pendulum-v1", total_steps=30, start_steps=10, batch_size=8,
                          eval_interval=30, eval_episodes=1, log_interval=10,
                          run_dir=str(tmp_path / "sac"), tensorboard=False, progress=False)
    os.makedirs(tmp_path / "sac")  # what a SAC run's config.json says (no need to train one)
    with open(tmp_path / "sac" / "config.json", "w") as f:
        json.dump({"algorithm": "sac", "module": "eqxrl.algorithms.sac",
                   "config": to_dict(sac.Config(run=run))}, f)
    online = iql.FinetuneConfig(run=dataclasses.replace(run, run_dir=str(tmp_path / "iql")),
                                hidden_dims=(8, 8))
    with pytest.raises(ValueError, match=r"Fine-tuning cannot start from .*sac.*trained by 'sac'"):
        eqxrl.train_online(online, iql, eqxrl.OffPolicyHooks(start_from=str(tmp_path / "sac")))
    assert not (tmp_path / "iql").exists()


def test_no_finetune_is_the_offline_run_alone(tmp_path):
    summary = iql.main(small(tmp_path))
    assert "offline" not in summary and not (tmp_path / "run" / "finetune").exists()
    assert [r["phase"] for r in eqxrl.loops.joined_evals(str(tmp_path / "run"))] == [0, 0]


def test_mixed_batches_keep_the_offline_rows_of_a_finetune(tmp_path):
    data = Dataset(Transition(obs=jnp.zeros((5, 3)), action=jnp.zeros((5, 1)),
                              reward=jnp.full(5, 9.0), next_obs=jnp.zeros((5, 3)),
                              terminated=jnp.zeros(5, bool), truncated=jnp.zeros(5, bool)))
    example = jax.tree.map(lambda x: x[0], data.data)
    buffer = ReplayBuffer.create(example, capacity=4).add(
        dataclasses.replace(example, reward=jnp.float32(1.0)))
    batch = mixed_sampler(0.75, 4, (2.0, -1.0))(buffer, data, jax.random.key(0))
    np.testing.assert_array_equal(batch.reward, [9.0, 9.0, 9.0, 1.0])  # 1·2 − 1 online

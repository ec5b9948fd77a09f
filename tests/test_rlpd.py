import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import Dataset, OnlineRun, ReplayBuffer, Transition
from eqxrl.algorithms import rlpd, sac
from eqxrl.loops.offline_mix import mixed_sampler

from .conftest import assert_trees_equal, pendulum_dataset_file, whole_and_resumed


def rows(n, reward):
    """`n` Pendulum-shaped transitions whose rewards say where they came from."""
    return Transition(obs=jnp.zeros((n, 3)), action=jnp.zeros((n, 1)),
                      reward=jnp.full((n,), reward, jnp.float32), next_obs=jnp.zeros((n, 3)),
                      terminated=jnp.zeros(n, bool), truncated=jnp.zeros(n, bool))


# ---------------------------------------------------------------- the mixed batch
@pytest.mark.parametrize("fraction, offline_rows", [(0.5, 5), (0.25, 2), (0.0, 0), (1.0, 10)])
def test_mixed_batches_take_the_offline_share_first(fraction, offline_rows):
    buffer = ReplayBuffer.create(jax.tree.map(lambda x: x[0], rows(1, 0.0)), capacity=64)
    for _ in range(20):
        buffer = buffer.add(jax.tree.map(lambda x: x[0], rows(1, -1.0)))
    offline = Dataset(rows(50, 7.0))
    batch = mixed_sampler(fraction, 10)(buffer, offline, jax.random.key(0))
    assert isinstance(batch, Transition) and batch.reward.shape == (10,)
    expected = [7.0] * offline_rows + [-1.0] * (10 - offline_rows)
    np.testing.assert_array_equal(batch.reward, expected)


# ---------------------------------------------------------------- config and bad input
@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_offline_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match=rf"--offline-fraction must be .*in \[0, 1\], got "
                                         rf"{fraction}"):
        OnlineRun(offline_data="d.hdf5", offline_fraction=fraction)


def test_offline_fraction_without_offline_data_is_refused():
    with pytest.raises(ValueError, match=r"--offline-fraction take\(s\) effect only with "
                                         r"--offline-data PATH"):
        OnlineRun(offline_fraction=0.3)


def test_defaults_are_the_papers():
    c = rlpd.Config()
    assert (c.run.utd, c.run.start_steps, c.run.offline_fraction, c.run.batch_size) == (
        20, 5_000, 0.5, 256)
    assert (c.num_critics, c.num_min_critics, c.critic_layer_norm, c.backup_entropy) == (
        10, 2, True, False)
    assert c.hidden_dims == (256, 256, 256) and c.target_entropy_per_dim == -0.5


def tiny(tmp_path, name="run", dataset="", **kw):
    run = dict(env_id="Pendulum-v1", total_steps=200, start_steps=100, batch_size=16,
               buffer_size=1000, utd=2, eval_interval=100, eval_episodes=1, log_interval=50,
               checkpoint_interval=60, run_dir=str(tmp_path / name), progress=False,
               tensorboard=False, offline_data=dataset)
    return rlpd.Config(run=OnlineRun(**(run | kw)), hidden_dims=(16, 16), num_critics=4)


def test_rlpd_needs_offline_data(tmp_path):
    with pytest.raises(ValueError, match=r"RLPD needs --offline-data PATH"):
        rlpd.main(tiny(tmp_path))


def test_a_dataset_of_another_env_is_refused_before_training(tmp_path):
    path = pendulum_dataset_file(tmp_path / "pendulum.hdf5")  # 3-dim observations
    config = tiny(tmp_path, dataset=path, env_id="MountainCarContinuous-v0")
    with pytest.raises(ValueError, match=r"--offline-data .*pendulum.hdf5 does not fit --env-id "
                                         r"MountainCarContinuous-v0: .*obs"):
        rlpd.main(config)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_a_compiled_env_is_refused(tmp_path):
    config = tiny(tmp_path, dataset="d.hdf5", env_id="gymnax:Pendulum-v1")
    with pytest.raises(ValueError, match=r"--env-id gymnax:Pendulum-v1 is trained by the "
                                         r"compiled loop"):
        rlpd.main(config)


# ---------------------------------------------------------------- a short run
def test_a_short_run_resumes_bit_exactly_and_loads_as_a_policy(tmp_path):
    path = pendulum_dataset_file(tmp_path / "d.hdf5")
    whole, part = whole_and_resumed(
        rlpd, lambda tmp, name, **kw: tiny(tmp, name, dataset=path, **kw), tmp_path,
        part_steps=130)
    assert_trees_equal(whole.state, part.state)  # the offline draws repeat exactly too
    assert isinstance(whole.state, sac.State) and whole.state.critic.model.num == 4
    policy, _ = eqxrl.load_policy(str(tmp_path / "whole"))
    assert policy(np.zeros(3, np.float32)).shape == (1,)


# ---------------------------------------------------------------- pixel data
PIXELS = eqxrl.EnvSpec(jax.ShapeDtypeStruct((8, 8, 6), np.dtype("uint8")), (1,),
                       action_low=(-1.0,), action_high=(1.0,), frame_stack=2)


def pixel_rows(n, reward, key=0):
    """`n` transitions of stacked 8×8 frames (2 × 3 channels) whose rewards say where they came
    from; each row's next frames follow its frames, as an env's do."""
    frames = jax.random.randint(jax.random.key(key), (n + 2, 8, 8, 3), 0, 256).astype(jnp.uint8)
    stack = jnp.concatenate([frames[:-1], frames[1:]], axis=-1)  # (n + 1, 8, 8, 6)
    return Transition(obs=stack[:-1], action=jnp.zeros((n, 1)),
                      reward=jnp.full((n,), reward, jnp.float32), next_obs=stack[1:],
                      terminated=jnp.zeros(n, bool), truncated=jnp.zeros(n, bool))


def test_a_pixel_dataset_is_counted_before_its_images_are_read_and_mixes_with_frames(tmp_path):
    from eqxrl.data.frames import FrameReplayBuffer
    from eqxrl.loops.offline_mix import load_offline_data

    path = str(tmp_path / "pixels.hdf5")
    data = pixel_rows(40, 7.0)
    eqxrl.save_dataset(path, Dataset(data), eqxrl.DatasetInfo(env_id="pixels:Pendulum-v1"))
    config = tiny(tmp_path, dataset=path)
    seen = []
    offline, _ = load_offline_data(config, PIXELS, fits=seen.append)
    assert seen == [40 * (2 * 8 * 8 * 6 + 4 + 4 + 2)]  # obs, next_obs, action, reward, flags
    np.testing.assert_array_equal(offline.data.obs, data.obs)
    assert offline.data.obs.dtype == jnp.uint8 and offline.images is None

    class TooBig(Exception):
        pass

    def too_big(nbytes):
        raise TooBig(nbytes)

    with pytest.raises(TooBig, match=r"^31120$"):  # raised before the images are read
        load_offline_data(config, PIXELS, fits=too_big)
    wrong = dataclasses.replace(PIXELS, observation=jax.ShapeDtypeStruct((8, 8, 9), np.uint8),
                                frame_stack=3)
    with pytest.raises(ValueError, match=r"does not fit --env-id Pendulum-v1: .*obs has shape "
                                         r"\(40, 8, 8, 6\), expected \(\.\.\., 8, 8, 9\)"):
        load_offline_data(config, wrong)

    buffer = FrameReplayBuffer.create(PIXELS, capacity=16)
    online = pixel_rows(6, -1.0, key=1)
    for i in range(6):
        buffer = buffer.add(jax.tree.map(lambda x, i=i: x[i], online))
    batch = mixed_sampler(0.5, 8)(buffer, offline, jax.random.key(0))
    np.testing.assert_array_equal(batch.reward, [7.0] * 4 + [-1.0] * 4)
    assert batch.obs.shape == (8, 8, 8, 6) and batch.obs.dtype == jnp.uint8
    for obs, next_obs in zip(batch.obs[4:], batch.next_obs[4:], strict=True):  # rebuilt stacks
        i = [j for j in range(6) if np.array_equal(online.obs[j], obs)]
        assert len(i) == 1 and np.array_equal(online.next_obs[i[0]], next_obs)



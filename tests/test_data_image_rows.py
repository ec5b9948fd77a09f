"""Pixel datasets larger than memory: images left in the HDF5 file (`lazy_images`) read back
exactly, and an offline run that reads its batches from the file equals the in-memory run."""

import csv
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import datasets as ds
from eqxrl.algorithms import bc
from eqxrl.run.agents import tree_bytes

from .test_data_frames import transitions  # registers eqxrl-test/CountingFrames-v0 (6x6 frames)


@pytest.fixture(scope="module")
def pixel_file(tmp_path_factory):
    """400 transitions of the stacked counting env (image + state, several episodes), saved
    with next_observations, and the same rows D4RL-style without them."""
    spec, rows = transitions(400, seed=3)
    rows = [r if i % 3 else eqxrl.Transition(r.obs, jnp.int32(1), r.reward, r.next_obs,
                                              r.terminated, r.truncated)
            for i, r in enumerate(rows)]  # both actions, so BC has something to fit
    data = jax.tree.map(lambda *xs: jnp.stack(xs), *rows)
    info = eqxrl.DatasetInfo(env_id="eqxrl-test/CountingFrames-v0")
    folder = tmp_path_factory.mktemp("pixels")
    stored = folder / "stored.hdf5"
    ds.save_hdf5(stored, eqxrl.Dataset(data), info)
    shifted = folder / "d4rl.hdf5"  # observations only: next_obs is the following row
    with h5py.File(stored) as f, h5py.File(shifted, "w") as g:
        for key in ("actions", "rewards", "terminals", "timeouts"):
            g[key] = f[key][()]
        g["observations/pixels"] = f["observations/pixels"][()]
        g["observations/state"] = f["observations/state"][()]
        g.attrs["env_id"] = f.attrs["env_id"]
    return spec, stored, shifted


@pytest.mark.parametrize("which", ["stored", "shifted"])
def test_lazy_images_read_back_exactly(pixel_file, which):
    _, stored, shifted = pixel_file
    path = stored if which == "stored" else shifted
    eager, _ = ds.load_hdf5(path)
    lazy, info = ds.load_hdf5(path, lazy_images=True)
    assert lazy.size == eager.size and info.env_id == "eqxrl-test/CountingFrames-v0"
    # Only pointers are in memory: 4 bytes a row per image leaf instead of 6*6*3.
    assert lazy.data.obs["pixels"].shape == (lazy.size, 1)
    assert tree_bytes(lazy.data) < tree_bytes(eager.data)
    assert set(lazy.images.sources) == {".obs['pixels']", ".next_obs['pixels']"}
    np.testing.assert_array_equal(lazy.data.truncated, eager.data.truncated)
    np.testing.assert_array_equal(lazy.data.terminated, eager.data.terminated)
    every_row = lazy.images.fetch(jax.device_get(lazy.data))
    for a, b in zip(jax.tree.leaves(every_row), jax.tree.leaves(eager.data), strict=True):
        np.testing.assert_array_equal(a, b)
    # A sampled batch (with repeated rows, any leading axes) reads the same rows.
    idx = np.array([[5, 5, 0], [len(eager) - 1, 7, 5]])
    batch = lazy.images.fetch(jax.device_get(lazy[idx]))
    np.testing.assert_array_equal(batch.next_obs["pixels"], eager.data.next_obs["pixels"][idx])
    assert lazy.images.like(lazy.data).obs["pixels"].shape == (lazy.size, 6, 6, 3)
    lazy.images.close()
    with h5py.File(path) as f:  # save_hdf5 gzips image rows; the copy holds them raw
        assert f["observations/pixels"].compression == ("gzip" if which == "stored" else None)
        assert f["observations/pixels"].chunks in ((1, 6, 6, 3), None)
        assert f["actions"].compression is None


def bc_run(path, tmp_path, name, lazy):
    run = eqxrl.OfflineRun(dataset=str(path), total_updates=8, updates_per_call=4,
                           batch_size=6, log_interval=4, eval_interval=8, eval_episodes=1,
                           checkpoint_interval=8, lazy_images=lazy, progress=False,
                           tensorboard=False, run_dir=str(tmp_path / name))
    summary = bc.main(bc.Config(run=run, hidden_dims=(8,)))
    with open(tmp_path / name / "train.csv") as f:
        rows = [{k: v for k, v in r.items() if not k.endswith("per_second")}
                for r in csv.DictReader(f)]
    return summary, rows


@pytest.mark.slow  # 14 s: two short runs; the default suite is ~10 min
def test_a_run_reading_batches_from_the_file_equals_the_in_memory_run(pixel_file, tmp_path):
    _, stored, _ = pixel_file
    eager, eager_rows = bc_run(stored, tmp_path, "memory", lazy=False)
    lazy, lazy_rows = bc_run(stored, tmp_path, "lazy", lazy=True)
    assert len(eager_rows) == 2 and lazy_rows == eager_rows  # losses equal to the last bit
    assert lazy["final_eval_return"] == eager["final_eval_return"]


DEVICES_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import eqxrl
    from eqxrl.algorithms import bc
    from tests import test_data_frames  # noqa: F401 (it registers the 6x6 counting env)
    from tests.conftest import state_gap
    assert len(jax.devices()) == 2, jax.devices()
    out, path = sys.argv[1], sys.argv[2]

    def run(name, **kw):
        settings = eqxrl.OfflineRun(dataset=path, total_updates=4, updates_per_call=2,
                                    batch_size=6, eval_interval=4, eval_episodes=1,
                                    lazy_images=True, progress=False, tensorboard=False,
                                    run_dir=f"{out}/{name}", **kw)
        return bc.main(bc.Config(run=settings, hidden_dims=(8,)))["run_dir"]

    # Relative gaps: Adam's second moments on this toy env reach 1e9.
    seeds = state_gap(run("seeds2", num_seeds=2), run("seeds1", num_seeds=2, devices=1),
                      range(2), relative=True)
    batch = state_gap(run("batch2"), run("batch1", devices=1), [None], relative=True)
    print("RESULT", json.dumps({"seeds": seeds, "batch": batch}))
""")


@pytest.mark.slow  # ~1 min: four short runs in a subprocess with 2 CPU devices
def test_lazy_images_on_two_devices_give_the_result_of_one(pixel_file, tmp_path):
    _, stored, _ = pixel_file
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=root)
    done = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT, str(tmp_path), str(stored)],
                          env=env, capture_output=True, text=True, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ")[1])
    # Agents split over devices compute what one device computes; one agent's batch split
    # over devices sums its gradients in another order (float tolerance).
    assert result["seeds"] < 1e-5 and result["batch"] < 1e-5, result


def test_lazy_images_are_refused_where_they_cannot_work(pixel_file, tmp_path):
    _, stored, _ = pixel_file
    vector = tmp_path / "vector.hdf5"
    n = 10
    with h5py.File(vector, "w") as f:
        f["observations"] = np.zeros((n, 3), np.float32)
        f["actions"] = np.zeros((n, 1), np.float32)
        f["rewards"] = np.zeros(n, np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = np.zeros(n, bool)
    with pytest.raises(eqxrl.DatasetError, match="has no image observations .* to leave on disk"):
        ds.load_hdf5(vector, lazy_images=True)
    lazy, _ = ds.load_hdf5(stored, lazy_images=True)
    with pytest.raises(eqxrl.DatasetError, match="keeps its images in its file"):
        ds.concatenate([lazy, lazy])
    with pytest.raises(eqxrl.DatasetError, match="compares observations, but this dataset's "
                                                 "images are still in"):
        ds.with_episode_cuts(lazy)


@pytest.mark.slow  # 40 s: three more short runs
def test_reading_in_small_parts_changes_nothing(pixel_file, tmp_path, monkeypatch):
    # Images are read in parts of at most LAZY_BYTES_PER_CALL; the updates and their samples
    # do not depend on the part size (here 1 or 3 updates per part, against 4 at once).
    _, stored, _ = pixel_file
    _, whole = bc_run(stored, tmp_path, "whole", lazy=True)
    row = 2 * 6 * 6 * 3  # obs and next_obs images
    fetch = eqxrl.data.ImageRows.fetch
    reads = []
    monkeypatch.setattr(eqxrl.data.ImageRows, "fetch",
                        lambda self, batch: reads.append(1) or fetch(self, batch))
    for updates, name in ((1, "ones"), (3, "threes")):
        monkeypatch.setattr(eqxrl.loops.offline, "LAZY_BYTES_PER_CALL", updates * 6 * row)
        reads.clear()
        _, rows = bc_run(stored, tmp_path, name, lazy=True)
        assert len(reads) == 1 + 2 * -(-4 // updates)  # the first-row check, then the parts
        for a, b in zip(rows, whole, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-6), k


# ---------------------------------------------------------------------------- Minari datasets
@pytest.fixture(scope="module")
def minari_folder(pixel_file, tmp_path_factory):
    """The pixel file's rows as a Minari dataset (hdf5 format, images stored raw)."""
    pytest.importorskip("minari")
    _, stored, _ = pixel_file
    data, info = ds.load_hdf5(stored)
    folder = tmp_path_factory.mktemp("minari") / "pixels"
    ds.save_minari(folder, data, info)
    return folder


def test_lazy_minari_images_read_back_exactly(minari_folder):
    eager, _ = ds.load_dataset(minari_folder)
    lazy, info = ds.load_dataset(minari_folder, lazy_images=True)
    assert isinstance(lazy.images, eqxrl.data.EpisodeImageRows)
    assert info.num_episodes > 3 and lazy.size == eager.size
    # The test env is registered with a lambda, which Minari cannot store in its env spec;
    # its id is kept in the metadata instead, so evaluation still finds the env.
    assert info.env_id == "eqxrl-test/CountingFrames-v0"
    assert lazy.data.obs["pixels"].shape == (lazy.size, 1)
    assert tree_bytes(lazy.data) < tree_bytes(eager.data)
    np.testing.assert_array_equal(lazy.data.obs["state"], eager.data.obs["state"])
    np.testing.assert_array_equal(lazy.data.truncated, eager.data.truncated)
    np.testing.assert_array_equal(lazy.data.terminated, eager.data.terminated)
    every_row = lazy.images.fetch(jax.device_get(lazy.data))
    for a, b in zip(jax.tree.leaves(every_row), jax.tree.leaves(eager.data), strict=True):
        np.testing.assert_array_equal(a, b)
    # Rows from several episodes, repeated, in any order (the last row ends the last episode).
    idx = np.array([[len(eager) - 1, 3, 3], [0, 200, len(eager) - 1]])
    batch = lazy.images.fetch(jax.device_get(lazy[idx]))
    np.testing.assert_array_equal(batch.obs["pixels"], eager.data.obs["pixels"][idx])
    np.testing.assert_array_equal(batch.next_obs["pixels"], eager.data.next_obs["pixels"][idx])
    lazy.images.close()


@pytest.mark.slow  # 14 s: two short runs
def test_a_run_reading_batches_from_minari_equals_the_in_memory_run(minari_folder, tmp_path):
    eager, eager_rows = bc_run(minari_folder, tmp_path, "memory", lazy=False)
    lazy, lazy_rows = bc_run(minari_folder, tmp_path, "lazy", lazy=True)
    assert len(eager_rows) == 2 and lazy_rows == eager_rows  # losses equal to the last bit
    assert lazy["final_eval_return"] == eager["final_eval_return"]


def write_minari(folder, episodes, **storage_kwargs):
    """A Minari dataset of `episodes` (lists of (T + 1, 32, 32, 3) frames) written by Minari
    itself, with its default JPEG encoding of image observations unless told otherwise."""
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    (folder / "data").mkdir(parents=True)
    storage = MinariStorage.new(folder / "data", observation_space=space,
                                action_space=gym.spaces.Discrete(2), **storage_kwargs)
    storage.update_metadata({"dataset_id": "eqxrl/jpeg-test-v0",
                             "minari_version": importlib.metadata.version("minari")})
    storage.update_episodes([EpisodeBuffer(
        observations={"image": frames,
                      "state": np.full((len(frames), 2), i, np.float32)},
        actions=np.arange(len(frames) - 1) % 2, rewards=np.ones(len(frames) - 1),
        terminations=np.arange(len(frames) - 1) == len(frames) - 2,
        truncations=np.zeros(len(frames) - 1, bool)) for i, frames in enumerate(episodes)])


def smooth_frames(rng, n):
    """Frames JPEG keeps nearly intact: smooth gradients with a moving offset."""
    y, x = np.mgrid[:32, :32]
    return np.stack([np.stack([(4 * x + 7 * t) % 256, (4 * y + 3 * t) % 256,
                               np.full_like(x, rng.integers(256))], -1) for t in range(n)]
                    ).astype(np.uint8)


def test_lazy_minari_decodes_jpeg_images_as_minari_does(tmp_path):
    pytest.importorskip("minari")
    rng = np.random.default_rng(0)
    write_minari(tmp_path / "jpeg", [smooth_frames(rng, n) for n in (5, 9, 4)],
                 data_format="hdf5")
    eager, _ = ds.load_dataset(tmp_path / "jpeg")
    lazy, _ = ds.load_dataset(tmp_path / "jpeg", lazy_images=True)
    assert lazy.images.jpeg == {"observations/image"}
    assert lazy.size == eager.size == 15
    every_row = lazy.images.fetch(jax.device_get(lazy.data))
    for a, b in zip(jax.tree.leaves(every_row), jax.tree.leaves(eager.data), strict=True):
        np.testing.assert_array_equal(a, b)  # the same decoder: bit-exact
    assert every_row.obs["image"].shape == (15, 32, 32, 3)


def test_lazy_minari_is_refused_where_it_cannot_work(tmp_path):
    pytest.importorskip("minari")
    import types

    # Minari's arrow format keeps episodes in parquet files, which are not read lazily (a
    # stand-in source: reading a real arrow dataset needs pyarrow).
    arrow = types.SimpleNamespace(storage=types.SimpleNamespace(
        data_path=tmp_path, metadata={"data_format": "arrow"}))
    with pytest.raises(eqxrl.DatasetError, match=r"'arrow' data format\. Load it into memory "
                                                 r"\(drop --lazy-images\) or convert it once"):
        eqxrl.datasets.minari._episodes_from_file(arrow, "some/arrow-v0")
    n = 6
    vector = eqxrl.Dataset(eqxrl.Transition(
        jnp.zeros((n, 3)), jnp.zeros((n, 1)), jnp.zeros(n), jnp.ones((n, 3)),
        jnp.arange(n) == n - 1, jnp.zeros(n, bool)))
    ds.save_minari(tmp_path / "vector", vector, eqxrl.DatasetInfo())
    with pytest.raises(eqxrl.DatasetError, match="has no image observations .* to leave on disk"):
        ds.load_dataset(tmp_path / "vector", lazy_images=True)

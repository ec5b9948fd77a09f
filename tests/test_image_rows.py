"""Pixel datasets larger than memory: images left in the HDF5 file (`lazy_images`) read back
exactly, and an offline run that reads its batches from the file equals the in-memory run."""

import csv

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from algorithms import bc
from eqxrl import datasets as ds
from eqxrl.agents import tree_bytes

from .test_frames import transitions  # registers eqxrl-test/CountingFrames-v0 (6x6 frames)


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
    with pytest.raises(eqxrl.DatasetError, match="is a Minari dataset; convert it once"):
        ds.load_dataset(tmp_path / "some-minari-folder", lazy_images=True)
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
    fetch = eqxrl.image_rows.ImageRows.fetch
    reads = []
    monkeypatch.setattr(eqxrl.image_rows.ImageRows, "fetch",
                        lambda self, batch: reads.append(1) or fetch(self, batch))
    for updates, name in ((1, "ones"), (3, "threes")):
        monkeypatch.setattr(eqxrl.offline, "LAZY_BYTES_PER_CALL", updates * 6 * row)
        reads.clear()
        _, rows = bc_run(stored, tmp_path, name, lazy=True)
        assert len(reads) == 1 + 2 * -(-4 // updates)  # the first-row check, then the parts
        for a, b in zip(rows, whole, strict=True):
            assert a.keys() == b.keys()
            for k in a:
                assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-6), k

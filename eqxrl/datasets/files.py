"""Offline datasets: load and save any supported format.

Every reader returns a `Dataset` whose `data` is a batched `Transition` (float32 observations
or a dict of them, float32 actions, float32 rewards, bool `terminated` and `truncated`), plus a
`DatasetInfo` with the env id and the reference returns of the D4RL normalised score.

  eqxrl.datasets.info       DatasetInfo, DatasetError
  eqxrl.datasets.episodes   episode ends and returns, concatenation, preprocessing, action range
  eqxrl.datasets.d4rl       D4RL-style arrays (episode boundaries are told there)
  eqxrl.datasets.hdf5       D4RL-style HDF5 files
  eqxrl.datasets.minari     Minari datasets (an optional extra: `pip install minari`)

An output or input ending in .hdf5/.h5 is a D4RL-style file; anything else is a Minari dataset.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

from eqxrl.data.dataset import Dataset
from eqxrl.datasets.hdf5 import load_hdf5, save_hdf5
from eqxrl.datasets.info import DatasetError, DatasetInfo
from eqxrl.datasets.minari import load_minari
from eqxrl.datasets.minari_save import save_minari


def _is_hdf5(path: str) -> bool:
    return path.endswith((".hdf5", ".h5"))


def load_dataset(path: str | os.PathLike, lazy_images: bool = False
                 ) -> tuple[Dataset, DatasetInfo]:
    """Load a `.hdf5`/`.h5` file, a Minari dataset folder, or a local Minari dataset id.

    `lazy_images=True` leaves image observations on disk (`eqxrl.data.image_rows`): in a `.hdf5`
    file, or in a Minari dataset stored in Minari's `hdf5` data format."""
    text = os.fspath(path)
    if _is_hdf5(text):
        return load_hdf5(text, lazy_images=lazy_images)
    if os.path.isdir(text):
        return load_minari(text, lazy_images=lazy_images)
    if os.path.exists(text):
        raise DatasetError(f"{text!r} is neither a .hdf5/.h5 file nor a Minari dataset folder.")
    try:
        return load_minari(text, lazy_images=lazy_images)
    except ImportError:
        raise FileNotFoundError(
            f"No dataset at {text!r}: not a file or folder (and Minari, which could resolve a "
            "dataset id, is not installed)."
        ) from None


def save_dataset(path: str | os.PathLike, dataset: Dataset, info: DatasetInfo) -> None:
    """Write a `.hdf5`/`.h5` file, or else a Minari dataset folder, by the path's ending."""
    if _is_hdf5(os.fspath(path)):
        save_hdf5(path, dataset, info)
    else:
        save_minari(path, dataset, info)


def check_writable(path: str | os.PathLike, name: str = "path") -> None:
    """Raise `ValueError` unless `save_dataset(path, ...)` could write there; call it early.

    It creates the parent folder, and a temporary file beside the target which it removes.
    `name` is what the message calls the path, for example '--output'.
    """
    text = os.fspath(path)
    target = os.path.abspath(text)
    parent = os.path.dirname(target)

    def fail(reason: str, fix: str) -> ValueError:
        return ValueError(f"{name} {text!r} cannot be written: {reason}. Fix: {fix}.")

    if _is_hdf5(text):
        if os.path.isdir(target):
            raise fail(
                "it is an existing directory, but a .hdf5/.h5 output is a file",
                "choose another file name, or remove that directory",
            )
    elif os.path.lexists(target):
        raise fail(
            "it already exists, and a Minari dataset (any output not ending in .hdf5/.h5) is "
            "written to a new folder",
            "choose a new folder name, remove the existing one, or end the name in .hdf5 for a "
            "D4RL-style file",
        )
    elif importlib.util.find_spec("minari") is None:
        raise fail(
            "an output not ending in .hdf5/.h5 is a Minari dataset, and Minari is not installed",
            "pip install minari, or end the name in .hdf5 for a D4RL-style file",
        )
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        blocker = parent  # the deepest existing path above the target
        while not os.path.exists(blocker) and os.path.dirname(blocker) != blocker:
            blocker = os.path.dirname(blocker)
        if os.path.exists(blocker) and not os.path.isdir(blocker):
            reason = f"its folder {parent!r} cannot be created: {blocker!r} is a file, not a folder"
            fix = "choose a path under a folder, or move that file away"
        else:
            reason = f"its folder {parent!r} cannot be created ({err.strerror or err})"
            fix = "choose a path under a folder you can write to"
        raise fail(reason, fix) from None
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=parent)
    except OSError as err:
        raise fail(
            f"no file can be created in its folder {parent!r} ({err.strerror or err})",
            "choose a folder you can write to, or give yourself write permission on this one",
        ) from None
    os.close(handle)
    os.remove(tmp)

"""Image observations left in their HDF5 file: pixel datasets larger than memory.

`load_hdf5(path, lazy_images=True)` reads every small array (actions, rewards, flags, vector
observations) but leaves each uint8 image leaf `(N, height, width, channels)` on disk. In the
returned `Dataset`, such a leaf holds `(N, 1)` int32 row pointers into the file instead, so
episode bookkeeping, filtering and sampling work unchanged on a few bytes per row; the
dataset's `images` (an `ImageRows`) reads the rows a batch points at:

    dataset, info = eqxrl.datasets.load_hdf5("pixels.hdf5", lazy_images=True)
    pointers = dataset.sample(key, 256)          # image leaves: (256, 1) row pointers
    batch = dataset.images.fetch(pointers)       # image leaves: (256, 84, 84, 9) uint8

The offline loop does this with `--lazy-images`, reading each chunk of updates' batches
between compiled calls. `load_minari(folder, lazy_images=True)` does the same for a Minari
dataset in Minari's hdf5 format, whose images stay in their episodes' groups
(`EpisodeImageRows`; JPEG-encoded rows are decoded as they are read).
"""

from __future__ import annotations

import io
from typing import Any

import h5py
import jax
import numpy as np

__all__ = ["EpisodeImageRows", "ImageRows", "is_image_node"]


def is_image_node(node: Any) -> bool:
    """Whether an HDF5 dataset (or an array about to become one) holds rows of uint8 images
    `(N, height, width, channels)`; groups are not."""
    return getattr(node, "dtype", None) == np.uint8 and getattr(node, "ndim", 0) == 4


class ImageRows:
    """Where the image leaves of a lazily loaded dataset live, and how to read them.

    `sources` maps each image leaf of the `Transition` (its `jax.tree_util.keystr`, e.g.
    `".obs['pixels']"`) to the HDF5 key its pointers index (e.g. `"observations/pixels"`).
    The file is opened read-only on first use and stays open.
    """

    def __init__(self, path: str, sources: dict[str, str], shapes: dict[str, tuple[int, ...]]):
        self.path, self.sources, self.shapes = path, dict(sources), dict(shapes)
        self._file: h5py.File | None = None

    def __repr__(self) -> str:
        return f"ImageRows({self.path!r}, {self.sources})"

    @property
    def bytes_per_row(self) -> int:
        """Bytes read per sampled row (every image leaf, obs and next_obs)."""
        return int(sum(np.prod(s) for s in self.shapes.values()))

    def _h5(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def close(self) -> None:
        """Close the HDF5 file if it is open; the next read opens it again."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _map(self, tree: Any, fn) -> Any:
        def one(path, leaf):
            name = jax.tree_util.keystr(path)
            return fn(name, leaf) if name in self.sources else leaf
        return jax.tree_util.tree_map_with_path(one, tree)

    def like(self, data: Any) -> Any:
        """`data` (arrays or shape structs, any leading axes) with each pointer leaf
        replaced by the structure of the images it points at."""
        def image(name, leaf):
            return jax.ShapeDtypeStruct((*leaf.shape[:-1], *self.shapes[name]), np.dtype("uint8"))
        return self._map(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), data),
                         image)

    def fetch(self, batch: Any) -> Any:
        """`batch` with each pointer leaf `(..., 1)` replaced by its images `(..., h, w, c)`
        read from the file (each distinct row read once, in file order)."""
        def read(name, pointers):
            rows = np.asarray(pointers)[..., 0]
            unique, inverse = np.unique(rows.reshape(-1), return_inverse=True)
            images = self._read(self.sources[name], unique)
            return images[inverse].reshape(*rows.shape, *self.shapes[name])
        return self._map(batch, read)

    def _read(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (sorted, distinct) of the images at HDF5 key `key`."""
        return self._h5()[key][rows]


class EpisodeImageRows(ImageRows):
    """Image leaves stored per episode, as Minari's HDF5 files keep them: episode `i`'s
    observations (one more row than its steps) are at `episode_<id>/<key>`. A pointer indexes
    the episodes' rows laid end to end: episode `i` starts at row `starts[i]`. Keys in `jpeg`
    hold one JPEG per row (Minari's default image encoding) and are decoded as they are read.
    """

    def __init__(self, path: str, sources: dict[str, str], shapes: dict[str, tuple[int, ...]],
                 groups: list[str], starts: np.ndarray, jpeg: frozenset[str] = frozenset()):
        super().__init__(path, sources, shapes)
        self.groups, self.starts, self.jpeg = list(groups), np.asarray(starts), jpeg

    def _read(self, key: str, rows: np.ndarray) -> np.ndarray:
        episode = np.searchsorted(self.starts, rows, side="right") - 1
        parts = []
        for i in np.unique(episode):  # rows are sorted, so the parts come out in order
            images = self._h5()[f"{self.groups[i]}/{key}"][rows[episode == i] - self.starts[i]]
            parts.append(decode_jpeg(images) if key in self.jpeg else images)
        return np.concatenate(parts)


def decode_jpeg(encoded: np.ndarray) -> np.ndarray:
    """Decode JPEG bytes (one uint8 array per row, as Minari writes them) into uint8 images."""
    from PIL import Image  # Minari's own image dependency

    return np.stack([np.asarray(Image.open(io.BytesIO(row.tobytes())), np.uint8)
                     for row in encoded])

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
between compiled calls.
"""

from __future__ import annotations

from typing import Any

import h5py
import jax
import numpy as np

__all__ = ["ImageRows", "is_image_node"]


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
        f = self._h5()

        def read(name, pointers):
            rows = np.asarray(pointers)[..., 0]
            unique, inverse = np.unique(rows.reshape(-1), return_inverse=True)
            images = f[self.sources[name]][unique]
            return images[inverse].reshape(*rows.shape, *self.shapes[name])
        return self._map(batch, read)

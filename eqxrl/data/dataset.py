"""The offline `Dataset` (a PyTree of rows sampled with an explicit key) and `Normalizer`."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray, PyTree


def leading_size(tree: PyTree, what: str) -> int:
    """The shared leading-axis size of every leaf of `tree`; a clear error if they differ."""
    sizes = {
        jax.tree_util.keystr(path): (jnp.shape(leaf)[0] if jnp.ndim(leaf) else None)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }
    if not sizes:
        raise ValueError(f"{what} has no arrays.")
    distinct = set(sizes.values())
    if len(distinct) != 1 or None in distinct:
        raise ValueError(
            f"Every array of {what} needs the same leading axis (one row per transition); "
            f"got leading sizes {sizes}."
        )
    return distinct.pop()


class Dataset(eqx.Module):
    """A PyTree of arrays (usually a `Transition`) with a shared leading axis.

    Sampling takes an explicit key, so runs are reproducible. A dataset loaded with
    `lazy_images=True` keeps its images in the file: `images` (an `eqxrl.data.image_rows.ImageRows`)
    says where, its image leaves hold row pointers, and `images.fetch(batch)` reads them.
    """

    data: PyTree
    images: Any = eqx.field(static=True, default=None)

    def __check_init__(self):
        leading_size(self.data, "Dataset.data")

    @property
    def size(self) -> int:
        """Number of rows."""
        return leading_size(self.data, "Dataset.data")

    def __len__(self) -> int:
        return self.size

    def sample(self, key: PRNGKeyArray, batch_size: int) -> PyTree:
        """Sample `batch_size` rows uniformly, with replacement; an empty dataset is an error."""
        if not batch_size >= 1:
            raise ValueError(f"Dataset.sample: batch_size must be >= 1, got {batch_size}.")
        if self.size == 0:
            raise ValueError(
                "Dataset.sample: the dataset is empty (0 rows), so it cannot give "
                f"batch_size={batch_size} rows; load or build a dataset with at least one row."
            )
        idx = jax.random.randint(key, (batch_size,), 0, self.size)
        return self[idx]

    def __getitem__(self, idx) -> PyTree:
        """Rows at `idx` (an int, slice or index array), as the same PyTree."""
        return jax.tree.map(lambda x: x[idx], self.data)


class Normalizer(eqx.Module):
    """Observation normalisation `(obs - mean) / std` whose statistics live in the state.

    Keep it as a field of an algorithm's `State` and apply it in both `update` and `act`, so
    the statistics of the training data travel with checkpoints and are used at evaluation.
    Works on one observation or a batch (leading axes), and on nested observations.
    """

    mean: PyTree
    std: PyTree

    @classmethod
    def identity(cls, example_obs: PyTree) -> Normalizer:
        """A normaliser that changes nothing, laid out like one observation."""
        return cls(
            jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), example_obs),
            jax.tree.map(lambda x: jnp.ones(jnp.shape(x), jnp.float32), example_obs),
        )

    @classmethod
    def from_data(cls, obs: PyTree, eps: float = 1e-3) -> Normalizer:
        """Statistics over the leading axis of a batch of observations; std floored at `eps`."""
        mean = jax.tree.map(lambda x: jnp.mean(x.astype(jnp.float32), axis=0), obs)
        std = jax.tree.map(lambda x: jnp.maximum(jnp.std(x.astype(jnp.float32), axis=0), eps), obs)
        return cls(mean, std)

    def __call__(self, obs: PyTree) -> PyTree:
        """`(obs - mean) / std`, leaf by leaf, for one observation or a batch (leading axes).

        Raises:
            ValueError: if a leaf's shape does not end in the shape of its statistics.
        """

        def norm(x, mean, std):
            if jnp.ndim(x) < jnp.ndim(mean) or jnp.shape(x)[jnp.ndim(x) - jnp.ndim(mean):] != (
                    jnp.shape(mean)):
                raise ValueError(
                    f"Normalizer: observations of shape {jnp.shape(x)} do not end in the shape "
                    f"{jnp.shape(mean)} of its statistics (one observation, or a batch with "
                    "leading axes); build it from observations of this env "
                    "(Normalizer.from_data / identity).")
            lead = (1,) * (jnp.ndim(x) - jnp.ndim(mean))  # explicit: no implicit rank promotion
            return (x - mean.reshape(lead + mean.shape)) / std.reshape(lead + std.shape)

        return jax.tree.map(norm, obs, self.mean, self.std)

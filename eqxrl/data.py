"""Offline `Dataset` and the fixed-capacity, jittable `ReplayBuffer`."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, PRNGKeyArray, PyTree

from .types import NStepTransition, Transition


def _leading_size(tree: PyTree, what: str) -> int:
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
    `lazy_images=True` keeps its images in the file: `images` (an `eqxrl.image_rows.ImageRows`)
    says where, its image leaves hold row pointers, and `images.fetch(batch)` reads them.
    """

    data: PyTree
    images: Any = eqx.field(static=True, default=None)

    def __check_init__(self):
        _leading_size(self.data, "Dataset.data")

    @property
    def size(self) -> int:
        """Number of rows."""
        return _leading_size(self.data, "Dataset.data")

    def __len__(self) -> int:
        return self.size

    def sample(self, key: PRNGKeyArray, batch_size: int) -> PyTree:
        """Sample `batch_size` rows uniformly, with replacement; an empty dataset is an error."""
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


def n_step_windows(
    start: Int[Array, " batch"], terminated: Array, truncated: Array, position: Int[Array, ""],
    capacity: int, n: int,
) -> tuple[Int[Array, "batch n"], Array, Int[Array, " batch"], Int[Array, " batch"]]:
    """The rows of ring-buffer windows of up to `n` steps from each `start` row: `(rows, inside,
    steps, last)`. A window stops after the first step that ends an episode (`terminated` or
    `truncated`, per row) and at the newest row (`position − 1`); `inside` marks its steps."""
    rows = (start[:, None] + jnp.arange(n)[None, :]) % capacity  # (batch, n)
    newest = (position - 1) % capacity
    ahead = (newest - start) % capacity  # steps from the start to the newest row
    ends = terminated[rows] | truncated[rows]
    # A step is in the window if no earlier step of it ended the episode and it is stored.
    ended_before = (jnp.cumsum(ends, axis=1) - ends) > 0
    inside = (~ended_before) & (jnp.arange(n)[None, :] <= ahead[:, None])
    steps = jnp.sum(inside, axis=1).astype(jnp.int32)
    return rows, inside, steps, (start + steps - 1) % capacity


class ReplayBuffer(eqx.Module):
    """A preallocated ring buffer whose `add` and `sample` are pure and jittable.

    `size` grows to `capacity` and stays there; new rows then overwrite the oldest ones.
    """

    data: PyTree
    position: Int[Array, ""]
    size: Int[Array, ""]
    capacity: int = eqx.field(static=True)

    @classmethod
    def create(cls, example: PyTree, capacity: int) -> ReplayBuffer:
        """An empty buffer laid out like one `example` row (for example a `Transition`)."""
        if capacity < 1:
            raise ValueError(f"ReplayBuffer capacity must be >= 1, got {capacity}.")
        data = jax.tree.map(
            lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x)), example
        )
        zero = jnp.zeros((), jnp.int32)
        return cls(data=data, position=zero, size=zero, capacity=capacity)

    @classmethod
    def from_dataset(cls, dataset: Dataset, capacity: int | None = None) -> ReplayBuffer:
        """A buffer holding the rows of `dataset`, with room for `capacity` rows in all.

        If the dataset is larger than the capacity, its last `capacity` rows are kept.
        """
        n = dataset.size
        capacity = n if capacity is None else capacity
        first = jax.tree.map(lambda x: x[0], dataset.data)
        buffer = cls.create(first, capacity)
        keep = min(n, capacity)
        rows = jax.tree.map(lambda x: jnp.asarray(x[n - keep :]), dataset.data)
        data = jax.tree.map(lambda buf, x: buf.at[:keep].set(x), buffer.data, rows)
        count = jnp.asarray(keep, jnp.int32)
        return cls(data=data, position=count % capacity, size=count, capacity=capacity)

    def add(self, row: PyTree) -> ReplayBuffer:
        """Write one row at the current position."""
        self._check_row(row, batched=False)
        data = jax.tree.map(lambda buf, x: buf.at[self.position].set(x), self.data, row)
        return ReplayBuffer(
            data=data,
            position=(self.position + 1) % self.capacity,
            size=jnp.minimum(self.size + 1, self.capacity),
            capacity=self.capacity,
        )

    def add_batch(self, rows: PyTree) -> ReplayBuffer:
        """Write a batch of rows (leading axis) in order, wrapping around the ring."""
        self._check_row(rows, batched=True)
        n = _leading_size(rows, "rows")
        if n > self.capacity:
            raise ValueError(f"add_batch got {n} rows, more than the capacity {self.capacity}.")
        idx = (self.position + jnp.arange(n)) % self.capacity
        data = jax.tree.map(lambda buf, x: buf.at[idx].set(x), self.data, rows)
        return ReplayBuffer(
            data=data,
            position=(self.position + n) % self.capacity,
            size=jnp.minimum(self.size + n, self.capacity),
            capacity=self.capacity,
        )

    def sample(self, key: PRNGKeyArray, batch_size: int) -> PyTree:
        """Sample `batch_size` filled rows uniformly, with replacement.

        Outside `jit`/`vmap` an empty buffer is a ValueError. Under a transformation `size`
        is traced and not checked (a runtime check would cost a device-to-host sync on every
        update): the caller must add rows first, as the online loop does with its random
        `--start-steps`. An empty buffer there silently gives the all-zero row 0.
        """
        if not isinstance(self.size, jax.core.Tracer) and int(self.size) == 0:
            raise ValueError(
                "ReplayBuffer.sample: the buffer is empty (size 0), so it cannot give "
                f"batch_size={batch_size} rows; add transitions first (for example, collect "
                "--start-steps random steps before the first update)."
            )
        idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        return jax.tree.map(lambda x: x[idx], self.data)

    def sample_n_step(self, key: PRNGKeyArray, batch_size: int, n: int) -> NStepTransition:
        """Sample `batch_size` windows of up to `n` consecutive transitions (n-step returns).

        The rows must be `Transition`s stored in env order, one env per buffer (as the online
        loops store them). A window starts at a filled row drawn uniformly and stops after `n`
        steps, at the first step that ends an episode (terminated or truncated), or at the
        newest row, so it never crosses an episode boundary or the ring's write position.
        `n=1` gives ordinary one-step transitions. Like `sample`, an empty buffer is an error
        outside `jit` and is not checked under it.
        """
        if not isinstance(self.data, Transition):
            raise TypeError(
                f"ReplayBuffer.sample_n_step needs rows of eqxrl.Transition, got "
                f"{type(self.data).__name__}; build the buffer with ReplayBuffer.create("
                "spec.example_transition(), capacity)."
            )
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"ReplayBuffer.sample_n_step: n must be an int >= 1, got {n!r}.")
        if not isinstance(self.size, jax.core.Tracer) and int(self.size) == 0:
            raise ValueError(
                "ReplayBuffer.sample_n_step: the buffer is empty (size 0); add transitions first."
            )
        data: Transition = self.data
        start = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        rows, inside, steps, last = n_step_windows(
            start, data.terminated, data.truncated, self.position, self.capacity, n)
        return NStepTransition(
            obs=jax.tree.map(lambda x: x[start], data.obs),
            action=data.action[start],
            rewards=jnp.where(inside, data.reward[rows], 0.0),
            next_obs=jax.tree.map(lambda x: x[last], data.next_obs),
            terminated=data.terminated[last],
            steps=steps,
        )

    def to_dataset(self) -> Dataset:
        """The filled rows, oldest first, as a `Dataset` (host-side; not jittable)."""
        size, pos = int(self.size), int(self.position)
        order = np.arange(size) if size < self.capacity else (np.arange(size) + pos) % size
        return Dataset(jax.tree.map(lambda x: x[order], self.data))

    def _check_row(self, row: PyTree, batched: bool) -> None:
        if jax.tree.structure(row) != jax.tree.structure(self.data):
            raise ValueError(
                f"ReplayBuffer rows must have structure {jax.tree.structure(self.data)}, got "
                f"{jax.tree.structure(row)}."
            )
        for (path, x), buf in zip(
            jax.tree_util.tree_leaves_with_path(row), jax.tree.leaves(self.data), strict=True
        ):
            shape = jnp.shape(x)[1:] if batched else jnp.shape(x)
            if shape != buf.shape[1:] or jnp.result_type(x) != buf.dtype:
                raise ValueError(
                    f"ReplayBuffer row{jax.tree_util.keystr(path)} has shape {shape} and dtype "
                    f"{jnp.result_type(x)}; the buffer stores {buf.shape[1:]} {buf.dtype}."
                )


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
        def norm(x, mean, std):
            lead = (1,) * (jnp.ndim(x) - jnp.ndim(mean))  # explicit: no implicit rank promotion
            return (x - mean.reshape(lead + mean.shape)) / std.reshape(lead + std.shape)

        return jax.tree.map(norm, obs, self.mean, self.std)

"""The fixed-capacity, jittable `ReplayBuffer` (uniform and n-step sampling)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, PRNGKeyArray, PyTree

from eqxrl.core.types import NStepTransition, Transition
from eqxrl.data.dataset import Dataset, leading_size


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
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ValueError(
                f"ReplayBuffer capacity must be an integer >= 1 (rows), got {capacity!r}.")
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
        n = leading_size(rows, "rows")
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
        if batch_size < 1:
            raise ValueError(f"ReplayBuffer.sample: batch_size must be >= 1, got {batch_size}.")
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

        Args:
            key: the PRNG key that draws the windows' first rows.
            batch_size: how many windows.
            n: the most env steps in a window (its `rewards` columns).

        Returns:
            An `NStepTransition` whose leaves have `batch_size` rows: `obs` and `next_obs`
                `(batch_size, *obs_shape)` (each leaf of a dict observation alike), `action`
                `(batch_size, *action_shape)`, `rewards` `(batch_size, n)` (zero after a
                window's last step), `terminated` `(batch_size,)` bool and `steps`
                `(batch_size,)` int32, 1 to `n`. `next_obs` is where step `steps` went;
                `returns(discount)` gives the n-step return and the bootstrap factor, both
                `(batch_size,)`.

        Example:
            ```python
            batch = buffer.sample_n_step(key, 32, 3)  # DQN's 3-step windows
            ret, factor = batch.returns(0.99)
            target = ret + factor * jnp.max(q_target(batch.next_obs), axis=-1)
            ```
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

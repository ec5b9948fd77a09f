"""Stack and unstack PyTrees along a new leading axis (seeds, sweeps, ensembles); cut an
array's first rows for a checkpoint (`head_rows`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree


def tree_stack(trees: Sequence[PyTree]) -> PyTree:
    """Stack the array leaves of equally structured trees along a new leading axis.

    This is how a hyperparameter sweep becomes one program: build one `State` per setting
    (their swept values are array leaves), stack them, and `jax.vmap` the update over them.
    Static parts (optimisers, specs) must be identical across the trees.
    """
    if not trees:
        raise ValueError("tree_stack needs at least one tree.")
    arrays, static = zip(*(eqx.partition(t, eqx.is_array) for t in trees), strict=True)
    if any(jax.tree.structure(s) != jax.tree.structure(static[0]) for s in static[1:]):
        raise ValueError(
            "tree_stack: the trees differ in their static parts (structure, "
            "optimiser or spec); only array values may differ."
        )
    return eqx.combine(jax.tree.map(lambda *xs: jnp.stack(xs), *arrays), static[0])


def tree_unstack(tree: PyTree) -> list[PyTree]:
    """Split a stacked tree back into a list along the leading axis."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    n = jax.tree.leaves(arrays)[0].shape[0]
    return [eqx.combine(jax.tree.map(lambda x, i=i: x[i], arrays), static) for i in range(n)]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _first(x: jax.Array, size: int, axis: int) -> jax.Array:
    return jax.lax.slice_in_dim(x, 0, size, axis=axis)


def rounded_rows(rows: int, limit: int) -> int:
    """The smallest power of two ≥ `rows`, at most `limit`: how many entries `head_rows` and
    `FrameReplayBuffer`'s checkpoint copy from the device, so that one compiled program serves
    every size up to it."""
    return min(limit, 1 << max(rows - 1, 0).bit_length())


def head_rows(x: Any, axis: int, rows: int) -> Any:
    """The first `rows` entries of `x` along `axis`, for a checkpoint.

    An array on this process comes back as numpy, copied from the device in a power-of-two
    number of rows and cut on the host: slicing a JAX array at a new size compiles a new program
    and keeps it (about 1.5 MB each on CPU), and every checkpoint of a filling buffer has a new
    size, so a long run's memory grew at each checkpoint. Rounding up bounds the programs at
    one per power of two. A global array spread over processes stays a JAX array, cut exactly.
    """
    cut = (slice(None),) * axis + (slice(0, rows),)
    if not (isinstance(x, jax.Array) and x.is_fully_addressable):
        return x[cut]
    return np.asarray(_first(x, rounded_rows(rows, x.shape[axis]), axis))[cut]

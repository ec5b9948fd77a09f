"""Stack and unstack PyTrees along a new leading axis (seeds, sweeps, ensembles)."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
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

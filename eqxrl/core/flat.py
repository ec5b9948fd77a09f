"""A PyTree as a flat list of arrays and a static part, and the splits of modules kept.

`split` and `merge` are the array/static partition used here, public so that a caller can
keep a PyTree as a flat list of arrays between compiled calls (as the online loop does) and
skip flattening an Equinox module on every call.

`eqxrl.jit` keeps the split of each Equinox module it is given or returns (the output itself,
or each item of an output tuple), for as long as that module lives. Passed to a compiled
function again (`state, metrics = step(state, batch, key)`, or `act(state, obs, key)` in a
loop), the module is not flattened again: flattening Equinox modules in Python is most of a
call's overhead (~120 of ~200 µs on SAC's state). A module is immutable, but a dict or list
inside it is not: each one is checked on reuse, and a module whose tree holds a node type that
could change in place is never kept.
"""

from __future__ import annotations

import functools
import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax

# `eqx.is_array` by leaf type: the isinstance test against `jax.Array` (an ABC) costs ~0.3 µs a
# leaf, a fifth of what flattening SAC's state costs; a dict lookup by type ~0.05 µs.
_IS_ARRAY: dict[type, bool] = {}

# Marks an array's place among the static leaves. `None` is never a leaf (JAX flattens it to
# an empty subtree), so it cannot be confused with a static value.
_ARRAY = None


def split(tree: Any) -> tuple[list, tuple]:
    """Split `tree` into `(dynamic, static)`: its array leaves, and everything else.

    `dynamic` is the list of the array leaves (JAX and NumPy arrays, and tracers) in
    flattening order. `static` is `(treedef, leaves)`, where `leaves` holds every non-array
    leaf in place and `None` where an array was; it is hashable when those leaves are, and
    compared by value (two trees with the same structure and equal non-array leaves have
    equal static parts; as for `jax.jit`'s static arguments, `1`, `1.0` and `True` are
    equal). `merge(dynamic, static)` gives the tree back, also from other arrays in the
    same places (for instance the outputs of a compiled call).
    """
    leaves, treedef = jax.tree.flatten(tree)
    kinds, dynamic, static = _IS_ARRAY, [], []
    for x in leaves:
        kind = kinds.get(type(x))
        if kind is None:  # `eqx.is_array` is an isinstance test: a leaf's type decides it
            kind = kinds.setdefault(type(x), eqx.is_array(x))
        if kind:
            dynamic.append(x)
            static.append(_ARRAY)
        else:
            static.append(x)
    return dynamic, (treedef, tuple(static))


def merge(dynamic: Sequence, static: tuple) -> Any:
    """Inverse of `split`: rebuild the tree from its array leaves and its static part."""
    treedef, leaves = static
    if len(dynamic) == len(leaves) == leaves.count(_ARRAY):  # only arrays (a model's state)
        return jax.tree.unflatten(treedef, dynamic)
    arrays = iter(dynamic)
    try:
        leaves = [next(arrays) if s is _ARRAY else s for s in leaves]
    except StopIteration:
        raise ValueError("merge: fewer arrays than the static part has places for.") from None
    if next(arrays, _ARRAY) is not _ARRAY:
        raise ValueError("merge: more arrays than the static part has places for.")
    return jax.tree.unflatten(treedef, leaves)


# ------------------------------------------------------------------------- modules' splits
# id(module) -> (weak reference, its arrays, its static part, the checks of its dicts/lists).
# An entry goes when its module does (the reference's callback), so an id is never reused
# while it is here.
_KEPT: dict[int, tuple] = {}
_MUTABLE = (dict, list)


def _field(name: str) -> Callable[[Any], Any]:
    get = object.__getattribute__
    return lambda obj: get(obj, name)


def _is_mutable(x: Any) -> bool:
    return isinstance(x, _MUTABLE)


def _forget(key: int, ref: weakref.ref) -> None:
    if _KEPT.get(key, (None,))[0] is ref:
        del _KEPT[key]


def _keep(module: Any, dynamic: list, static: tuple, checks: tuple) -> None:
    key = id(module)
    try:
        ref = weakref.ref(module, functools.partial(_forget, key))
    except TypeError:  # a module class with __slots__ and no __weakref__: not kept
        return
    _KEPT[key] = (ref, dynamic, static, checks)


def keep_output(out: Any, dynamic: list, plan: tuple) -> None:
    """Keep the split of each module of `out`, a compiled call's output, where `plan` says."""
    for index, lo, hi, part_static, checks in plan:
        _keep(out if index is None else out[index], dynamic[lo:hi], part_static, checks)


# The checks of an argument's module by its static part (a module passed in many times, such
# as the state given to `act` in a loop, is flattened once). Cleared when it grows past 256.
_ARG_CHECKS: dict[tuple, tuple | None] = {}


def split_argument(x: Any) -> tuple[list, tuple]:
    """`split(x)`, recalled if `x` was split before; a module's split is kept for next time."""
    kept = _recall(x)
    if kept is not None:
        return kept
    dynamic, static = split(x)
    if isinstance(x, eqx.Module):
        try:
            checks = _ARG_CHECKS[static]
        except KeyError:
            if len(_ARG_CHECKS) > 256:
                _ARG_CHECKS.clear()
            checks = _ARG_CHECKS[static] = _checks(x, *static)
        except TypeError:  # an unhashable static leaf: not worth a plan
            checks = None
        if checks is not None:
            _keep(x, dynamic, static, checks)
    return dynamic, static


def _recall(x: Any) -> tuple[list, tuple] | None:
    """`split(x)`, if `x` is a module kept by `_keep` and its dicts and lists are unchanged."""
    entry = _KEPT.get(id(x))
    if entry is None or entry[0]() is not x:
        return None
    _, dynamic, static, checks = entry
    for getters, treedef, start, stop, first in checks:
        container = x
        for get in getters:
            container = get(container)
        found, found_treedef = jax.tree.flatten(container)
        if found_treedef != treedef:
            return None
        arrays = iter(dynamic[first:])
        for leaf, s in zip(found, static[1][start:stop], strict=True):
            if leaf is not (next(arrays) if s is _ARRAY else s):
                return None
    return dynamic, static


def output_plan(out: Any, static: tuple) -> tuple:
    """Where the modules of an output lie in its split, and how to check their dicts/lists.

    One entry per module to remember: `(index in the output tuple, or None for the output
    itself, first array, end of its arrays, its static part, checks)`; a check is `(getters
    from the module to a dict or list, its treedef, its first and end leaf, its first array)`.
    """
    treedef, leaves = static
    node = treedef.node_data()
    if node is not None and issubclass(node[0], eqx.Module):
        spans = [(None, treedef, 0)]
    elif node is not None and issubclass(node[0], tuple):
        spans, start = [], 0
        for i, child in enumerate(treedef.children()):
            child_node = child.node_data()
            if child_node is not None and issubclass(child_node[0], eqx.Module):
                spans.append((i, child, start))
            start += child.num_leaves
    else:
        return ()
    plan = []
    for index, part_treedef, start in spans:
        stop = start + part_treedef.num_leaves
        part_leaves = leaves[start:stop]
        checks = _checks(out if index is None else out[index], part_treedef, part_leaves)
        if checks is not None:
            lo = sum(s is _ARRAY for s in leaves[:start])
            hi = lo + sum(s is _ARRAY for s in part_leaves)
            plan.append((index, lo, hi, (part_treedef, part_leaves), checks))
    return tuple(plan)


def _checks(part: Any, treedef: Any, leaves: tuple) -> tuple | None:
    """How to find and check each outermost dict or list in `part`; None if it cannot be kept.

    Modules, tuples (named ones too) and None cannot change in place; dicts and lists are
    checked on reuse; any other node type (a registered class) could change unseen.
    """
    nodes = [treedef]
    while nodes:
        node = nodes.pop()
        data = node.node_data()
        if data is not None:
            if not issubclass(data[0], (eqx.Module, tuple, type(None), *_MUTABLE)):
                return None
            nodes.extend(node.children())
    checks, start = [], 0
    for path, sub in jax.tree_util.tree_flatten_with_path(part, is_leaf=_is_mutable)[0]:
        if not _is_mutable(sub):
            start += 1
            continue
        getters = []
        for key in path:
            if isinstance(key, jax.tree_util.GetAttrKey):  # a module's field: skip its
                getters.append(_field(key.name))  # Python __getattribute__
            elif isinstance(key, jax.tree_util.SequenceKey):
                getters.append(operator.itemgetter(key.idx))
            else:
                return None
        sub_leaves, sub_treedef = jax.tree.flatten(sub)
        first = sum(s is _ARRAY for s in leaves[:start])
        checks.append((tuple(getters), sub_treedef, start, start + len(sub_leaves), first))
        start += len(sub_leaves)
    return tuple(checks)

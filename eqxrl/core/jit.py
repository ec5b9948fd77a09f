"""`eqxrl.jit`: filtered jit with asynchronous dispatch, for hot paths.

`eqx.filter_jit` blocks until every call has finished (it waits on a marker array to report
Equinox runtime errors), so Python work can never overlap device work. `eqxrl.jit` keeps the
filtered semantics (any PyTree argument; arrays are traced, everything else is static and
must be hashable) but calls `jax.jit` directly, so calls return at once like plain JAX.
Runtime errors from `eqx.error_if` still surface, as a JaxRuntimeError when results are read.

The non-array part of the output is returned through the compiled function, as a PyTree node
with no children whose aux data is that static part: JAX keeps the output structure of each
compiled signature (static arguments, shapes, dtypes, ...), so it is always the one that the
trace for these inputs produced.

`split` and `merge` are the array/static partition used here, public so that a caller can
keep a PyTree as a flat list of arrays between compiled calls (as the online loop does) and
skip flattening an Equinox module on every call.
"""

from __future__ import annotations

import functools
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


class _Static:
    """Value-compared holder of a static part, and a PyTree node with no children.

    As an input it is the hashable `static_argnums` argument of `jax.jit`; as an output it
    carries the static part of the result in the output structure that JAX stores per
    compiled signature. Its hash is computed on first use, so an unhashable static output is
    allowed (JAX compares output structures, but does not hash them).
    """

    __slots__ = ("value", "_hash")

    def __init__(self, value: Any):
        self.value = value
        self._hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.value)
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Static) and self.value == other.value)

    def __repr__(self) -> str:
        return f"_Static({self.value!r})"


jax.tree_util.register_pytree_node(_Static, lambda s: ((), s), lambda s, _: s)


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
    arrays = iter(dynamic)
    try:
        leaves = [next(arrays) if s is _ARRAY else s for s in leaves]
    except StopIteration:
        raise ValueError("merge: fewer arrays than the static part has places for.") from None
    if next(arrays, _ARRAY) is not _ARRAY:
        raise ValueError("merge: more arrays than the static part has places for.")
    return jax.tree.unflatten(treedef, leaves)


def jit(fn: Callable | None = None, *, donate: Sequence[int] = ()) -> Callable:
    """Compile `fn` once per static structure; donate the positional arguments in `donate`.

    Use it like `eqx.filter_jit` on functions of Equinox modules. Donated arguments must not be
    used after the call (their buffers are reused for the outputs).

    As with `eqx.filter_jit`, only arrays are traced: a Python `float`, `int` or `bool`
    argument is static, so each new value compiles a new program. Pass values that change
    from call to call (an env's reward, a step count) as arrays: `jnp.float32(reward)`.

    Args:
        fn: the function; any PyTree arguments and outputs (Equinox modules included).
        donate: positions of the arguments whose buffers the outputs may reuse.

    Returns:
        The compiled function, which returns as soon as the work is dispatched.

    Example:
        ```python
        step = eqxrl.jit(lambda state, batch, key: sac.update(state, batch, key, config))
        state, metrics = step(state, batch, key)  # config is closed over, so static
        ```
    """
    if fn is None:
        return functools.partial(jit, donate=donate)

    def traced(static: _Static, *dynamic):
        arg_statics, kw_static = static.value
        args = [merge(d, s) for d, s in zip(dynamic[:-1], arg_statics, strict=True)]
        out_dynamic, out_static = split(fn(*args, **merge(dynamic[-1], kw_static)))
        return out_dynamic, _Static(out_static)

    compiled = jax.jit(traced, static_argnums=0, donate_argnums=tuple(i + 1 for i in donate))

    def prepare(args: tuple, kwargs: dict) -> tuple:
        parts = [split(a) for a in args]
        kw_dynamic, kw_static = split(kwargs)
        static = _Static((tuple(s for _, s in parts), kw_static))
        return (static, *(d for d, _ in parts), kw_dynamic)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        out_dynamic, out_static = compiled(*prepare(args, kwargs))
        return merge(out_dynamic, out_static.value)

    call.lower = lambda *args, **kwargs: compiled.lower(*prepare(args, kwargs))  # type: ignore[attr-defined]
    return call

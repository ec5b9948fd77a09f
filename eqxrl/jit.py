"""`eqxrl.jit`: filtered jit with asynchronous dispatch, for hot paths.

`eqx.filter_jit` blocks until every call has finished (it waits on a marker array to report
Equinox runtime errors), so Python work can never overlap device work. `eqxrl.jit` keeps the
filtered semantics (any PyTree argument; arrays are traced, everything else is static and
must be hashable) but calls `jax.jit` directly, so calls return at once like plain JAX.
Runtime errors from `eqx.error_if` still surface, as a JaxRuntimeError when results are read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax


class _Static:
    """Hashable holder of the non-array part of the arguments (compared by value)."""

    __slots__ = ("value", "_hash")

    def __init__(self, value: Any):
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and self.value == other.value


def _split(tree: Any) -> tuple[Any, Any]:
    leaves, treedef = jax.tree.flatten(tree)
    dynamic = [x if eqx.is_array(x) else None for x in leaves]
    static = tuple(None if eqx.is_array(x) else x for x in leaves)
    return dynamic, (treedef, static)


def _merge(dynamic: list, static: tuple) -> Any:
    treedef, leaves = static
    return jax.tree.unflatten(
        treedef, [d if s is None else s for d, s in zip(dynamic, leaves, strict=True)]
    )


def jit(fn: Callable | None = None, *, donate: Sequence[int] = ()) -> Callable:
    """Compile `fn` once per static structure; donate the positional arguments in `donate`.

    Use it like `eqx.filter_jit` on functions of Equinox modules. Donated arguments must not be
    used after the call (their buffers are reused for the outputs).
    """
    if fn is None:
        return functools.partial(jit, donate=donate)
    out_static: dict[_Static, Any] = {}

    def traced(static: _Static, *dynamic):
        arg_statics, kw_static = static.value
        args = [_merge(d, s) for d, s in zip(dynamic[:-1], arg_statics, strict=True)]
        out = fn(*args, **_merge(dynamic[-1], kw_static))
        out_dynamic, out_static[static] = _split(out)
        return out_dynamic

    compiled = jax.jit(traced, static_argnums=0, donate_argnums=tuple(i + 1 for i in donate))

    @functools.wraps(fn)
    def call(*args, **kwargs):
        parts = [_split(a) for a in args]
        kw_dynamic, kw_static = _split(kwargs)
        static = _Static((tuple(s for _, s in parts), kw_static))
        out_dynamic = compiled(static, *(d for d, _ in parts), kw_dynamic)
        return _merge(out_dynamic, out_static[static])

    call.lower = lambda *args, **kwargs: compiled.lower(  # type: ignore[attr-defined]
        _Static((tuple(_split(a)[1] for a in args), _split(kwargs)[1])),
        *(_split(a)[0] for a in args),
        _split(kwargs)[0],
    )
    return call

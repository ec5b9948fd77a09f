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

Arguments are split with `eqxrl.core.flat`, which remembers the split of each Equinox module
a call is given or returns: passed in again (`state, metrics = step(state, batch, key)`, or
`act(state, obs, key)` in a loop), a module is not flattened again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from .flat import keep_output, merge, output_plan, split, split_argument

__all__ = ["jit", "merge", "split"]


class _Static:
    """Value-compared holder of a static part, and a PyTree node with no children.

    As an input it is the hashable `static_argnums` argument of `jax.jit`; as an output it
    carries the static part of the result in the output structure that JAX stores per
    compiled signature. Its hash is computed on first use, so an unhashable static output is
    allowed (JAX compares output structures, but does not hash them).
    """

    __slots__ = ("value", "_hash", "plan")

    def __init__(self, value: Any):
        self.value = value
        self._hash: int | None = None
        self.plan: tuple | None = None  # as an output: which of its modules to keep

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.value)
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Static) and self.value == other.value)

    def __repr__(self) -> str:
        return f"_Static({self.value!r})"


jax.tree_util.register_pytree_node(_Static, lambda s: ((), s), lambda s, _: s)


def jit(fn: Callable | None = None, *, donate: Sequence[int] = ()) -> Callable:
    """Compile `fn` once per static structure; donate the positional arguments in `donate`.

    Use it like `eqx.filter_jit` on functions of Equinox modules. Donated arguments must not be
    used after the call (their buffers are reused for the outputs).

    As with `eqx.filter_jit`, only arrays are traced: a Python `float`, `int` or `bool`
    argument is static, so each new value compiles a new program. Pass values that change
    from call to call (an env's reward, a step count) as arrays: `jnp.float32(reward)`.

    An Equinox module given to or returned by a call is flattened once: passed again (the
    state of `state = step(state, ...)`, or of `act` in a loop), its kept split is reused
    (~100 µs a call on SAC's state). Dicts and lists inside it are checked each time, so
    changing one in place (as optax's `inject_hyperparams` invites) is seen; a module changed
    behind Equinox's back (`object.__setattr__`) is not.

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
        parts = [split_argument(a) for a in args]
        kw_dynamic, kw_static = split(kwargs)
        static = _Static((tuple(s for _, s in parts), kw_static))
        return (static, *(d for d, _ in parts), kw_dynamic)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        out_dynamic, out_static = compiled(*prepare(args, kwargs))
        out = merge(out_dynamic, out_static.value)
        if out_static.plan is None:
            out_static.plan = output_plan(out, out_static.value)
        keep_output(out, out_dynamic, out_static.plan)
        return out

    call.lower = lambda *args, **kwargs: compiled.lower(*prepare(args, kwargs))  # type: ignore[attr-defined]
    return call

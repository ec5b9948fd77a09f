import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl.core.jit import merge, split


class Model(eqx.Module):
    w: jax.Array
    activation: object  # a non-array leaf: must be treated as static


def test_filtered_semantics_and_single_compile():
    traces = []

    @eqxrl.jit
    def f(model, x, scale=2.0):
        traces.append(1)
        return Model(model.activation(model.w * x) * scale, model.activation)

    m = Model(jnp.ones(3), jax.nn.relu)
    out = f(m, jnp.ones(3))
    assert out.activation is jax.nn.relu and float(out.w[0]) == 2.0
    for _ in range(5):
        out = f(out, jnp.ones(3))
    assert len(traces) == 1
    f(m, jnp.ones(3), scale=3.0)  # a new static value compiles again
    assert len(traces) == 2


def test_donation_consumes_the_argument():
    f = eqxrl.jit(lambda x, y: x + y, donate=(0,))
    x = jnp.ones(4)
    f(x, jnp.ones(4)).block_until_ready()
    assert x.is_deleted()
    with pytest.raises(RuntimeError):
        x + 1


# ---------------------------------------------------------------- static outputs
def test_static_output_follows_the_input_shape():
    f = eqxrl.jit(lambda x: (x.sum(), x.shape[0]))
    assert f(jnp.ones(3)) == (3.0, 3)
    total, n = f(jnp.ones(2))  # same static input, different shape: a new trace
    assert n == 2 and float(total) == 2.0
    assert f(jnp.ones(3))[1] == 3  # and back to the first compiled signature


def test_static_output_follows_the_input_dtype():
    f = eqxrl.jit(lambda x: (x + 1, x.dtype))
    out, dtype = f(jnp.ones(2, jnp.float32))
    assert dtype == jnp.float32 and out.dtype == jnp.float32
    out, dtype = f(jnp.ones(2, jnp.int32))
    assert dtype == jnp.int32 and out.dtype == jnp.int32
    out, dtype = f(jnp.ones(2, jnp.float32))  # the first compiled signature again
    assert dtype == jnp.float32 and out.dtype == jnp.float32


def test_static_output_follows_a_static_input():
    f = eqxrl.jit(lambda x, name: {"name": name.upper(), "x": x, "n": len(name)})
    a = f(jnp.ones(2), "ab")
    b = f(jnp.ones(2), "xyz")
    assert (a["name"], a["n"]) == ("AB", 2) and (b["name"], b["n"]) == ("XYZ", 3)
    assert f(jnp.ones(3), "ab")["n"] == 2 and f(jnp.ones(2), "ab")["name"] == "AB"
    m = Model(jnp.ones(2), jax.nn.relu)
    out = eqxrl.jit(lambda m, act: Model(m.w, act))(m, jax.nn.gelu)
    assert out.activation is jax.nn.gelu


def test_unhashable_static_output_is_returned():
    f = eqxrl.jit(lambda x: (x, {"tags": {1, 2}}))
    assert f(jnp.ones(2))[1] == {"tags": {1, 2}}
    assert f(jnp.ones(2))[1] == {"tags": {1, 2}}


def test_one_compile_per_structure():
    @eqxrl.jit
    @eqx.debug.assert_max_traces(max_traces=3)
    def f(x, n):
        return x * n, x.shape

    for _ in range(3):
        assert f(jnp.ones(2), 2)[1] == (2,)
        assert f(jnp.ones(3), 2)[1] == (3,)
        assert f(jnp.ones(3), 4)[1] == (3,)
    assert eqx.debug.get_num_traces(f.__wrapped__) == 3  # type: ignore[attr-defined]


def test_donation_with_a_static_output():
    f = eqxrl.jit(lambda m, x: (Model(m.w + x, m.activation), x.shape), donate=(0,))
    m = Model(jnp.ones(4), jax.nn.relu)
    w = m.w
    out, shape = f(m, jnp.ones(4))
    assert w.is_deleted() and shape == (4,) and out.activation is jax.nn.relu
    assert float(out.w[0]) == 2.0


def test_runtime_error_surfaces():
    f = eqxrl.jit(lambda x: (eqx.error_if(x, x < 0, "negative input"), "ok"))
    out, tag = f(jnp.ones(2))
    assert tag == "ok" and float(out[0]) == 1.0
    with pytest.raises(Exception, match="negative input"):
        jax.block_until_ready(f(-jnp.ones(2)))


def test_lower_and_wraps():
    def fn(x, scale=2.0):
        """doc"""
        return x * scale

    f = eqxrl.jit(fn)
    assert f.__name__ == "fn" and f.__doc__ == "doc" and f.__wrapped__ is fn
    compiled = f.lower(jnp.ones(3), scale=3.0).compile()
    assert compiled is not None
    assert float(f(jnp.ones(3), scale=3.0)[0]) == 3.0


# ---------------------------------------------------------------- split / merge
def test_split_merge_round_trip():
    tree = {"m": Model(jnp.arange(3.0), jax.nn.relu), "n": 3, "k": jax.random.key(0), "z": None}
    dynamic, static = split(tree)
    assert all(eqx.is_array(x) for x in dynamic) and len(dynamic) == 2
    back = merge(dynamic, static)
    assert back["n"] == 3 and back["m"].activation is jax.nn.relu and back["z"] is None
    assert back["m"].w is tree["m"].w
    assert hash(static) == hash(split(tree)[1]) and static == split(tree)[1]
    assert static != split({**tree, "n": 4})[1]
    # NumPy arrays and scalars are arrays, Python numbers are not; a tracer is an array too
    # (split decides by the leaf's type, remembered across calls)
    mixed, mixed_static = split([np.zeros(2), np.float32(1.0), 1.0, True])
    assert len(mixed) == 2 and mixed_static[1][2:] == (1.0, True)
    assert int(jax.jit(lambda x: jnp.int32(len(split([x, 2.0])[0])))(jnp.ones(2))) == 1
    # the flat list goes through jax.jit, and comes back as the same tree
    out = merge(jax.jit(lambda d: [x for x in d])(dynamic), static)
    assert out["m"].activation is jax.nn.relu
    with pytest.raises(ValueError, match="fewer arrays"):
        merge(dynamic[:1], static)
    with pytest.raises(ValueError, match="more arrays"):
        merge([*dynamic, jnp.ones(1)], static)


# ---------------------------------------------------------------- kept splits
class Holder(eqx.Module):
    w: jax.Array
    opt: dict  # may change in place: checked whenever the holder's split is reused
    items: list


class Box:
    """A registered node type that can change in place unseen: never kept."""

    def __init__(self, x):
        self.x = x


jax.tree_util.register_pytree_node(Box, lambda b: ((b.x,), None), lambda _, c: Box(c[0]))


def _count_splits(monkeypatch) -> list:
    """Patch `flat.split` to record the type of every argument it flattens."""
    from eqxrl.core import flat

    seen, real = [], flat.split
    monkeypatch.setattr(flat, "split", lambda tree: (seen.append(type(tree)), real(tree))[1])
    return seen


def test_a_module_given_or_returned_is_not_flattened_again(monkeypatch):
    seen = _count_splits(monkeypatch)
    step = eqxrl.jit(lambda h, x: (Holder(h.w + x, h.opt, h.items), h.w.sum()))
    h = Holder(jnp.zeros(2), {"lr": jnp.float32(1.0)}, [jnp.ones(1)])
    h, _ = step(h, jnp.ones(2))
    assert seen.count(Holder) == 1
    for _ in range(3):
        h, total = step(h, jnp.ones(2))  # the returned holder: its split is kept
    assert seen.count(Holder) == 1 and float(total) == 6.0  # w was [3, 3]
    read = eqxrl.jit(lambda h, x: h.w * x)
    for _ in range(3):
        read(h, jnp.ones(2))  # given again and again: the same split
    assert seen.count(Holder) == 1
    # the kept split is the one `split` gives
    from eqxrl.core.flat import _recall

    dynamic, static = _recall(h)
    assert static == split(h)[1] and all(a is b for a, b in zip(dynamic, split(h)[0], strict=True))


def test_a_dict_or_list_changed_in_place_is_seen():
    step = eqxrl.jit(lambda h: Holder(h.w * h.opt["lr"] + sum(h.items), h.opt, h.items))
    h = step(Holder(jnp.ones(2), {"lr": jnp.float32(2.0)}, [jnp.zeros(2)]))
    h.opt["lr"] = jnp.float32(0.5)  # as with optax's inject_hyperparams, in place
    h = step(h)
    assert float(h.w[0]) == 1.0
    h.items.append(jnp.full(2, 3.0))  # a new leaf: a new structure
    h = step(h)
    assert float(h.w[0]) == 3.5
    h.opt["lr"], h.items[1] = jnp.float32(1.0), jnp.full(2, 1.0)
    assert float(step(h).w[0]) == 4.5


def test_optax_hyperparameters_changed_in_place_are_used():
    import optax

    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)

    class State(eqx.Module):
        w: jax.Array
        opt_state: optax.OptState

    @eqxrl.jit
    def step(s):
        updates, opt_state = opt.update(jnp.ones_like(s.w), s.opt_state)
        return State(optax.apply_updates(s.w, updates), opt_state)

    s = step(State(jnp.zeros(2), opt.init(jnp.zeros(2))))
    s.opt_state.hyperparams["learning_rate"] = jnp.float32(0.0)
    w = s.w
    s = step(s)
    np.testing.assert_array_equal(s.w, w)


def test_a_module_holding_another_node_type_is_not_kept(monkeypatch):
    seen = _count_splits(monkeypatch)

    class WithBox(eqx.Module):
        box: Box

    step = eqxrl.jit(lambda m: WithBox(Box(m.box.x + 1)))
    m = step(step(WithBox(Box(jnp.zeros(())))))
    assert seen.count(WithBox) == 2
    m.box.x = jnp.float32(10.0)  # changed unseen by any check: so never kept
    assert float(step(m).box.x) == 11.0


def test_kept_splits_go_with_their_modules():
    import gc

    from eqxrl.core import flat

    step = eqxrl.jit(lambda h: Holder(h.w + 1, h.opt, h.items))
    h = step(Holder(jnp.zeros(2), {}, []))
    key = id(h)
    assert key in flat._KEPT
    del h
    gc.collect()
    assert key not in flat._KEPT

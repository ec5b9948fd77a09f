import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import eqxrl


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

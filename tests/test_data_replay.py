import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import Dataset, ReplayBuffer


def row(i):
    return {"x": jnp.full((2,), i, jnp.float32), "i": jnp.asarray(i, jnp.int32)}


def test_ring_buffer_wraps_and_reaches_capacity():
    buf = ReplayBuffer.create(row(0), capacity=4)
    for i in range(1, 4):
        buf = buf.add(row(i))
    assert int(buf.size) == 3 and int(buf.position) == 3
    buf = buf.add(row(4))  # the last slot is used (jaxrl_m never filled it)
    assert int(buf.size) == 4 and int(buf.position) == 0
    np.testing.assert_array_equal(buf.data["i"], [1, 2, 3, 4])
    buf = buf.add(row(5)).add(row(6))  # overwrite the oldest
    assert int(buf.size) == 4 and int(buf.position) == 2
    np.testing.assert_array_equal(buf.data["i"], [5, 6, 3, 4])
    np.testing.assert_array_equal(buf.to_dataset().data["i"], [3, 4, 5, 6])


def test_sampling_only_touches_filled_slots():
    buf = ReplayBuffer.create(row(0), capacity=100)
    for i in range(1, 6):
        buf = buf.add(row(i))
    sample = buf.sample(jax.random.key(0), 1000)
    assert set(np.asarray(sample["i"]).tolist()) == {1, 2, 3, 4, 5}


def test_add_and_sample_are_jittable_and_pure():
    buf = ReplayBuffer.create(row(0), capacity=8)

    @eqxrl.jit
    def step(buf, r, key):
        buf = buf.add(r)
        return buf, buf.sample(key, 3)

    new, batch = step(buf, row(7), jax.random.key(0))
    assert int(new.size) == 1 and int(buf.size) == 0  # the input is unchanged
    np.testing.assert_array_equal(batch["i"], [7, 7, 7])


def test_add_batch_wraps_around():
    buf = ReplayBuffer.create(row(0), capacity=5)
    rows = jax.tree.map(lambda *x: jnp.stack(x), *[row(i) for i in range(1, 8)][:4])
    buf = buf.add_batch(rows)
    rows = jax.tree.map(lambda *x: jnp.stack(x), *[row(i) for i in range(5, 8)])
    buf = buf.add_batch(rows)
    assert int(buf.size) == 5 and int(buf.position) == 2
    np.testing.assert_array_equal(buf.data["i"], [6, 7, 3, 4, 5])


def test_from_dataset_that_fills_the_buffer():
    data = Dataset({"x": jnp.arange(6.0), "i": jnp.arange(6)})
    buf = ReplayBuffer.from_dataset(data, capacity=6)
    assert int(buf.size) == 6 and int(buf.position) == 0
    buf = ReplayBuffer.from_dataset(data, capacity=4)  # keeps the newest rows
    np.testing.assert_array_equal(buf.data["i"], [2, 3, 4, 5])
    buf = ReplayBuffer.from_dataset(data, capacity=10)
    assert int(buf.size) == 6 and int(buf.position) == 6


def test_row_mismatch_is_named():
    buf = ReplayBuffer.create(row(0), capacity=4)
    bad = {"x": jnp.zeros(3), "i": jnp.asarray(0, jnp.int32)}
    with pytest.raises(ValueError, match=r"row\['x'\] has shape \(3,\).*stores \(2,\)"):
        buf.add(bad)
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        ReplayBuffer.create(row(0), 0)


def test_dataset_checks_and_samples_reproducibly():
    data = Dataset({"obs": {"a": jnp.zeros((10, 2))}, "r": jnp.arange(10.0)})
    assert len(data) == 10
    a = data.sample(jax.random.key(0), 4)
    b = data.sample(jax.random.key(0), 4)
    np.testing.assert_array_equal(a["r"], b["r"])
    with pytest.raises(ValueError, match="same leading axis"):
        Dataset({"obs": jnp.zeros((10, 2)), "r": jnp.zeros(9)})


def test_sampling_an_empty_buffer_or_dataset_is_named():
    buf = ReplayBuffer.create(row(0), capacity=4)
    with pytest.raises(
        ValueError, match=r"buffer is empty \(size 0\).*batch_size=3.*add transitions"
    ):
        buf.sample(jax.random.key(0), 3)
    empty = Dataset({"x": jnp.zeros((0, 2)), "i": jnp.zeros((0,), jnp.int32)})
    with pytest.raises(ValueError, match=r"dataset is empty \(0 rows\).*batch_size=5"):
        empty.sample(jax.random.key(0), 5)
    # Under jit the size is traced and unchecked: the caller fills the buffer first.
    batch = eqxrl.jit(lambda b, k: b.sample(k, 2))(buf, jax.random.key(0))
    np.testing.assert_array_equal(batch["i"], [0, 0])


def test_normalizer_on_single_batched_and_nested_obs():
    from eqxrl import Normalizer

    obs = {"a": jnp.array([[1.0, 10.0], [3.0, 30.0]]), "b": jnp.array([[5.0], [5.0]])}
    norm = Normalizer.from_data(obs)
    out = norm(obs)
    np.testing.assert_allclose(out["a"], [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(out["b"], [[0.0], [0.0]])  # std floored, no division by zero
    single = norm({"a": jnp.array([2.0, 20.0]), "b": jnp.array([5.0])})
    np.testing.assert_allclose(single["a"], [0.0, 0.0], atol=1e-6)
    ident = Normalizer.identity({"a": jnp.zeros(2), "b": jnp.zeros(1)})
    np.testing.assert_allclose(ident(obs)["a"], obs["a"])

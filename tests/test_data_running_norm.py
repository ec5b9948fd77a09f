"""RunningNormalizer: exact running moments (batches merged by hand), nested observations and
agents."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl


def test_identity_before_anything_is_seen():
    norm = eqxrl.RunningNormalizer.create(jnp.zeros(3))
    x = jnp.array([[1.0, -2.0, 3.0]])
    np.testing.assert_allclose(norm(x), x, rtol=1e-6)


def test_batches_merge_to_the_moments_of_everything_seen():
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 3.0, (5, 2)).astype(np.float32)
    b = rng.normal(-1.0, 0.5, (11, 2)).astype(np.float32)
    norm = eqxrl.RunningNormalizer.create(jnp.zeros(2)).observe(a).observe(b)
    both = np.concatenate([a, b]).astype(np.float64)
    assert float(norm.count) == 16
    np.testing.assert_allclose(norm.mean, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.var, both.var(0), rtol=1e-5)
    x = np.array([[0.5, 0.5]], np.float32)  # one row of a batch, or one observation
    np.testing.assert_allclose(norm(x), (x - both.mean(0)) / np.sqrt(both.var(0) + 1e-8),
                               rtol=1e-5)
    np.testing.assert_allclose(norm(x[0]), norm(x)[0])


def test_nested_observations_and_one_set_of_statistics_per_agent():
    example = {"pos": jnp.zeros(2), "vel": jnp.zeros(1)}
    norm = eqxrl.RunningNormalizer.create(example)
    batches = {"pos": jnp.arange(12.0).reshape(2, 3, 2), "vel": jnp.ones((2, 3, 1))}
    agents = jax.vmap(lambda o: norm.observe(o))(batches)  # 2 agents, 3 rows each
    np.testing.assert_allclose(agents.mean["pos"], [[2.0, 3.0], [8.0, 9.0]])
    np.testing.assert_allclose(agents.var["vel"], [[0.0], [0.0]])


def test_a_batch_of_the_wrong_shape_names_both_shapes():
    norm = eqxrl.RunningNormalizer.create(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(batch, 3\), got \(4, 2\)"):
        norm.observe(jnp.zeros((4, 2)))

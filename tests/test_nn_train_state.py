import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eqxrl import MLP, TrainState, polyak

ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)


def quadratic(model, x):
    y = jax.vmap(model)(x)
    return jnp.mean(y**2), {"y_mean": jnp.mean(y)}


def test_apply_gradients_matches_optax():
    model = MLP(3, 2, (8,), key=jax.random.key(0))
    state = TrainState.create(model, optax.sgd(0.1))
    x = jnp.ones((4, 3))
    grads = eqx.filter_grad(lambda m: quadratic(m, x)[0])(model)
    new = state.apply_gradients(grads)
    expect = jax.tree.map(lambda p, g: p - 0.1 * g, eqx.filter(model, eqx.is_array), grads)
    assert eqx.tree_equal(eqx.filter(new.model, eqx.is_array), expect, rtol=1e-6, atol=1e-6)
    assert int(new.step) == 1


def test_hyperparams_live_in_the_state():
    model = MLP(3, 2, (8,), key=jax.random.key(0))
    state = TrainState.create(model, ADAM, learning_rate=0.5)
    assert float(state.opt_state.hyperparams["learning_rate"]) == 0.5
    # Different learning rates share one static optimiser, so they vmap.
    lrs = jnp.array([1e-3, 1e-2])
    states = jax.vmap(lambda lr: TrainState.create(model, ADAM, learning_rate=lr))(lrs)
    assert states.opt_state.hyperparams["learning_rate"].shape == (2,)
    with pytest.raises(ValueError, match="inject_hyperparams"):
        TrainState.create(model, optax.adam(1e-3), learning_rate=0.1)


def test_apply_loss_fn_reports_loss_grad_norm_and_aux():
    model = MLP(3, 2, (8,), key=jax.random.key(0))
    state = TrainState.create(model, ADAM, learning_rate=1e-2)
    x = jnp.ones((4, 3))
    new, metrics = state.apply_loss_fn(quadratic, x)
    assert set(metrics) == {"loss", "grad_norm", "y_mean"}
    assert float(quadratic(new.model, x)[0]) < float(metrics["loss"])


def test_weight_decay_sees_params():
    model = MLP(3, 2, (8,), key=jax.random.key(0))
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, weight_decay=1.0)
    state = TrainState.create(model, tx)
    zero = jax.tree.map(jnp.zeros_like, eqx.filter(model, eqx.is_array))
    new = state.apply_gradients(zero)  # only decay moves the weights
    w0, w1 = model.layers[0].weight, new.model.layers[0].weight
    np.testing.assert_allclose(w1, w0 * (1 - 0.1 * 1.0), rtol=1e-6)


def test_polyak_matches_formula_and_keeps_integers():
    online = {"w": jnp.array([1.0, 2.0]), "n": jnp.array(7)}
    target = {"w": jnp.array([3.0, 5.0]), "n": jnp.array(1)}
    out = polyak(online, target, 0.25)
    np.testing.assert_allclose(out["w"], 0.25 * online["w"] + 0.75 * target["w"])
    assert int(out["n"]) == 1
    out = polyak(online, target, jnp.asarray(1.0, jnp.float32))
    np.testing.assert_allclose(out["w"], online["w"])


def test_polyak_refuses_a_concrete_tau_outside_the_unit_interval():
    online, target = {"w": jnp.ones(2)}, {"w": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\], got 1.5"):
        polyak(online, target, 1.5)
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\], got -0.1\. "):
        polyak(online, target, jnp.asarray(-0.1, jnp.float32))
    # Traced taus are not checked (the config validates them); valid ones work under vmap.
    taus = jnp.array([0.0, 0.5], jnp.float32)
    out = jax.vmap(lambda t: polyak(online, target, t))(taus)
    np.testing.assert_allclose(out["w"], [[0.0, 0.0], [0.5, 0.5]])
    out = jax.jit(lambda t: polyak(online, target, t))(jnp.asarray(2.0, jnp.float32))
    np.testing.assert_allclose(out["w"], [2.0, 2.0])

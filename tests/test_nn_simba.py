"""SimbaMLP against a hand computation; its trunk form; its BatchRenorm form in training mode."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl.nn import SimbaMLP


def layer_norm(x, eps=1e-5):
    x = np.asarray(x, np.float64)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def linear(layer, x):
    return np.asarray(x, np.float64) @ np.asarray(layer.weight, np.float64).T + np.asarray(
        layer.bias, np.float64)


def test_simba_mlp_by_hand():
    net = SimbaMLP(3, 2, (4, 4), key=jax.random.key(0))
    net = jax.tree.map(  # non-zero biases, so the hand computation checks them too
        lambda x: x + 0.1 if eqx.is_inexact_array(x) and x.ndim == 1 else x, net)
    x = np.array([0.5, -1.0, 2.0])
    h = linear(net.embed, x)
    for block in net.blocks:  # pre-LayerNorm residual feedforward, 4× wide inside
        inner = np.maximum(linear(block.up, layer_norm(h) * np.asarray(block.norm.layer.weight)
                                  + np.asarray(block.norm.layer.bias)), 0.0)
        assert inner.shape == (16,)
        h = h + linear(block.down, inner)
    final = net.final_norm.layer
    h = layer_norm(h) * np.asarray(final.weight) + np.asarray(final.bias)  # post-LayerNorm
    expected = linear(net.out, h)
    np.testing.assert_allclose(net(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-6)
    ys, same = net.train_batch(jnp.stack([jnp.asarray(x)] * 3))  # LayerNorm: nothing moves
    np.testing.assert_allclose(ys[1], expected, rtol=1e-5, atol=1e-6)
    assert eqx.tree_equal(same, net)


def test_a_trunk_ends_at_the_blocks_width_and_heads_go_on_it():
    policy = eqxrl.GaussianPolicy(5, 2, (8, 8), key=jax.random.key(0), mlp=SimbaMLP)
    trunk = policy.trunk
    assert trunk.out is None and len(trunk.blocks) == 1 and trunk.embed.weight.shape == (8, 5)
    mean, std = policy.params(jnp.ones(5))
    assert mean.shape == std.shape == (2,)
    actor = eqxrl.DeterministicPolicy(5, 2, (8, 8), key=jax.random.key(0), mlp=SimbaMLP)
    assert len(actor.net.blocks) == 2 and actor(jnp.ones(5)).shape == (2,)


@pytest.mark.parametrize("hidden, says", [((8, 16), "must be equal"), ((), "not empty")])
def test_unequal_or_missing_blocks_are_refused(hidden, says):
    with pytest.raises(ValueError, match=says):
        SimbaMLP(3, 1, hidden, key=jax.random.key(0))


def test_renorm_options_without_batch_renorm_are_refused():
    with pytest.raises(ValueError, match="norm='batch_renorm' only"):
        SimbaMLP(3, 1, (4,), momentum=0.9, key=jax.random.key(0))


def test_batch_renorm_form_moves_every_norm_in_training_mode_only():
    net = SimbaMLP(3, 1, (8, 8), norm="batch_renorm", momentum=0.9, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (16, 3)) * 3.0 + 1.0
    ys, new = net.train_batch(xs)
    assert ys.shape == (16, 1)
    stats, _ = eqxrl.nn.split_stats(new)
    steps = [int(s) for s in jax.tree.leaves(stats) if s.dtype == jnp.int32]
    assert steps == [1] * 4  # input, two blocks, final norm
    # The input norm's running mean moved 10% of the way to the batch mean.
    np.testing.assert_allclose(new.input_norm.layer.stats.mean, 0.1 * np.mean(xs, 0), rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(net)(xs), jax.vmap(net)(xs))  # evaluation: pure
    assert eqx.tree_equal(net.train_batch(xs)[1], new)
    spec = eqxrl.EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,))
    critic = eqxrl.q_ensemble(spec, (8,), 2, key=jax.random.key(2), mlp=SimbaMLP,
                              norm="batch_renorm")
    q, after = critic.train_batch(xs, jnp.zeros((16, 2)))
    assert q.shape == (2, 16) and int(after.member(1).net.final_norm.layer.stats.steps) == 1

"""BatchRenorm and BatchRenormMLP against hand computations; running statistics in TrainState."""

import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eqxrl
from eqxrl.nn import BatchRenorm, BatchRenormMLP, RunningStats, split_stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = jnp.array([[0.0, 1.0], [2.0, 5.0], [4.0, 0.0]])
XN = np.asarray(X)  # for the hand computations


def with_running(layer, mean, var, steps):
    stats = RunningStats(jnp.asarray(mean), jnp.asarray(var), jnp.int32(steps))
    return eqx.tree_at(lambda m: m.stats, layer, stats)


def renorm_by_hand(x, mean, var, eps, r_max, d_max, warm):
    x = np.asarray(x, np.float64)
    mu, sigma_b = x.mean(0), np.sqrt(x.var(0) + eps)
    sigma = np.sqrt(np.asarray(var) + eps)
    r = np.clip(sigma_b / sigma, 1 / r_max, r_max) if warm else 1.0
    d = np.clip((mu - np.asarray(mean)) / sigma, -d_max, d_max) if warm else 0.0
    return (x - mu) / sigma_b * r + d


@pytest.mark.parametrize("warm", [True, False])
def test_batch_renorm_training_mode_by_hand(warm):
    layer = with_running(BatchRenorm(2, warmup_steps=10), [1.0, -3.0], [4.0, 0.01],
                         10 if warm else 9)
    y, new = layer.train_batch(X)
    expected = renorm_by_hand(X, [1.0, -3.0], [4.0, 0.01], 1e-3, 3.0, 5.0, warm)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    if warm:  # column 2: sigma_b / sigma = 2.05 / 0.105 clips to r_max = 3, d to d_max = 5
        sigma_b = np.sqrt(XN[:, 1].var() + 1e-3)
        np.testing.assert_allclose(y[:, 1], (XN[:, 1] - 2.0) / sigma_b * 3 + 5, rtol=1e-5)
    # Running statistics: m·old + (1 − m)·batch, with the batch's (biased) variance.
    np.testing.assert_allclose(new.stats.mean, 0.99 * np.array([1.0, -3.0]) + 0.01 * XN.mean(0),
                               rtol=1e-6)
    np.testing.assert_allclose(new.stats.var, 0.99 * np.array([4.0, 0.01]) + 0.01 * XN.var(0),
                               rtol=1e-6)
    assert int(new.stats.steps) == int(layer.stats.steps) + 1


def test_plain_batch_norm_and_learned_affine():
    layer = BatchRenorm(2, r_max=1.0, d_max=0.0, warmup_steps=0)
    layer = eqx.tree_at(lambda m: (m.scale, m.bias), layer, (jnp.array([2.0, 1.0]),
                                                            jnp.array([0.0, -1.0])))
    y, _ = layer.train_batch(X)
    x_hat = (XN - XN.mean(0)) / np.sqrt(XN.var(0) + 1e-3)
    np.testing.assert_allclose(y, x_hat * np.array([2.0, 1.0]) + np.array([0.0, -1.0]),
                               rtol=1e-5, atol=1e-6)


def test_evaluation_mode_uses_the_running_statistics_and_changes_nothing():
    layer = with_running(BatchRenorm(2), [1.0, 2.0], [4.0, 9.0], 3)
    y = jax.vmap(layer)(X)
    np.testing.assert_allclose(y, (XN - np.array([1.0, 2.0])) / np.sqrt([4.001, 9.001]), rtol=1e-5)
    # The gradient of an evaluation-mode output never reaches the statistics.
    grads = eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(X)))(layer)
    np.testing.assert_array_equal(grads.stats.mean, 0.0)


def test_batch_of_one_is_refused():
    with pytest.raises(ValueError, match=r"at least 2 examples along axis 0, got shape \(1, 2\)"):
        BatchRenorm(2).train_batch(X[:1])


@pytest.mark.parametrize(
    "kwargs, message",
    [({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
     ({"r_max": 0.5}, r"need r_max >= 1 and d_max >= 0, got r_max=0.5"),
     ({"eps": 0.0}, "eps must be > 0")],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchRenorm(2, **kwargs)


def test_mlp_layer_order_by_hand():
    # BRN(x) -> Linear -> relu -> BRN -> Linear, every BRN with the batch's statistics.
    mlp = BatchRenormMLP(2, 1, (3,), warmup_steps=0, key=jax.random.key(0))
    y, new = mlp.train_batch(X)
    # Each layer's own train_batch is checked above; here they compose in the documented order.
    h, _ = mlp.norms[0].train_batch(X)
    h = jax.nn.relu(h @ mlp.layers[0].weight.T + mlp.layers[0].bias[None])
    h, _ = mlp.norms[1].train_batch(h)
    expected = h @ mlp.layers[1].weight.T + mlp.layers[1].bias[None]
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    assert len(new.norms) == 2 and all(int(n.stats.steps) == 1 for n in new.norms)
    # Evaluation mode on one example uses the new running statistics.
    one = new(X[0])
    h = new.norms[0](X[0])
    h = new.norms[1](jax.nn.relu(mlp.layers[0].weight @ h + mlp.layers[0].bias))
    np.testing.assert_allclose(one, mlp.layers[1].weight @ h + mlp.layers[1].bias, rtol=1e-5)


def test_agents_vmap_keeps_statistics_per_agent():
    mlp = BatchRenormMLP(2, 1, (4,), key=jax.random.key(0))
    xs = jnp.stack([X, 10.0 * X + 3.0])
    ys, news = jax.vmap(lambda x: mlp.train_batch(x))(xs)
    for i in range(2):
        y, new = mlp.train_batch(xs[i])
        np.testing.assert_allclose(ys[i], y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(news.norms[0].stats.mean[i], new.norms[0].stats.mean, rtol=1e-6)


@pytest.mark.parametrize("vectorise", [False, True])
def test_ensemble_train_batch_is_each_members(vectorise):
    make = lambda k: eqxrl.QFunction(2, 1, (4,), key=k, mlp=BatchRenormMLP)  # noqa: E731
    ensemble = eqxrl.Ensemble(make, 3, key=jax.random.key(1), vectorise=vectorise)
    obs, action = X, jnp.array([[0.1], [0.5], [-0.3]])
    q, new = ensemble.train_batch(obs, action)
    assert q.shape == (3, 3)
    for i in range(3):
        qi, member = ensemble.member(i).train_batch(obs, action)
        np.testing.assert_allclose(q[i], qi, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new.member(i).net.norms[1].stats.var,
                                   member.net.norms[1].stats.var, rtol=1e-6)


def test_train_state_keeps_statistics_out_of_the_optimiser():
    # AdamW would decay every leaf it is given: the statistics must not be among them.
    policy = eqxrl.GaussianPolicy(2, 1, (4, 4), mlp=BatchRenormMLP, key=jax.random.key(0))
    adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, weight_decay=0.5)
    state = eqxrl.TrainState.create(policy, adamw)
    stats_in_opt = [x for x in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(
        x, RunningStats)) if isinstance(x, RunningStats)]
    assert stats_in_opt == []

    def loss(p, obs, key):
        dist, after = p.train_batch(obs)
        return jnp.mean(dist.sample(seed=key) ** 2), ({}, after)

    new, metrics = state.apply_loss_fn_with_stats(loss, X, jax.random.key(1))
    stats_before, params_before = split_stats(state.model)
    stats_after, params_after = split_stats(new.model)
    # Statistics: exactly the training pass's, not decayed or stepped.
    _, expected = policy.train_batch(X)
    for a, b in zip(jax.tree.leaves(stats_after), jax.tree.leaves(split_stats(expected)[0]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    # Parameters: moved by the optimiser.
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(params_after), jax.tree.leaves(params_before), strict=True)]
    assert max(moved) > 0 and np.isfinite(float(metrics["grad_norm"]))
    # A model without statistics keeps the optimiser state it always had.
    plain = eqxrl.MLP(2, 1, (4,), key=jax.random.key(0))
    assert jax.tree.structure(eqxrl.TrainState.create(plain, adamw).opt_state) == \
        jax.tree.structure(adamw.init(eqx.filter(plain, eqx.is_inexact_array)))


BATCH_SPLIT_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from eqxrl.nn import BatchRenormMLP
mlp = BatchRenormMLP(3, 1, (8,), key=jax.random.key(0))
x = jax.random.normal(jax.random.key(1), (16, 3)) * jnp.arange(1.0, 17.0)[:, None]
mesh = Mesh(np.array(jax.devices()), ("devices",))
def split(x):
    return mlp.train_batch(jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, PartitionSpec("devices"))))
(y2, m2), (y1, m1) = jax.jit(split)(x), jax.jit(lambda x: mlp.train_batch(x))(x)
assert len(jax.devices()) == 2
print("GAP", float(jnp.max(jnp.abs(y2 - y1))),
      float(jnp.max(jnp.abs(m2.norms[1].stats.var - m1.norms[1].stats.var))))
"""


def test_batch_split_over_devices_reduces_statistics_over_the_whole_batch():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", BATCH_SPLIT_SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    gaps = [float(v) for v in done.stdout.split("GAP ")[1].split()]
    assert max(gaps) < 1e-4, gaps  # the same statistics as on one device, not per-device ones

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxrl import (
    MLP,
    CategoricalPolicy,
    DiscreteQFunction,
    Ensemble,
    GaussianPolicy,
    QFunction,
    ValueFunction,
    WithEncoder,
    flatten_obs,
)
from eqxrl.nn import linear_product

KEY = jax.random.key(0)


def test_mlp_shapes_layernorm_and_dropout():
    mlp = MLP(4, 2, (16, 16), layer_norm=True, dropout_rate=0.5, key=KEY)
    x = jnp.ones(4)
    assert mlp(x).shape == (2,)
    assert len(mlp.norms) == 2
    # No key: deterministic (inference). A key: dropout draws depend on it.
    np.testing.assert_array_equal(mlp(x), mlp(x))
    a, b = mlp(x, key=jax.random.key(1)), mlp(x, key=jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, mlp(x, key=jax.random.key(1)))
    with pytest.raises(ValueError, match="dropout_rate"):
        MLP(4, 2, dropout_rate=1.0, key=KEY)


@pytest.mark.parametrize("n_in, n_out", [(17, 256), (5, 20), (16, 16), (96, 512)])
def test_linear_product_is_x_times_w_transposed_in_every_derivative(n_in, n_out):
    """Values, gradients (under vmap and nested vmap), forward-mode and second derivatives
    equal those of the obvious `x @ W.T`; only layers with a short input that widen
    (in <= 64, out >= 4 * in) carry the barrier that lays their weight gradient out
    `(in, out)`."""
    w = jax.random.normal(KEY, (n_out, n_in)) / np.sqrt(n_in)
    x = jax.random.normal(jax.random.key(1), (3, 8, n_in))

    def loss(product, w, x):
        rows = jax.vmap(jax.vmap(lambda r: jnp.tanh(product(r, w))))(x)
        return jnp.sum(rows ** 2)

    def ours(w, x):
        return loss(linear_product, w, x)

    def obvious(w, x):
        return loss(lambda r, w: r @ w.T, w, x)

    np.testing.assert_allclose(ours(w, x), obvious(w, x), rtol=1e-6)
    for derivative in (jax.grad, jax.hessian) if w.size <= 400 else (jax.grad,):
        got, want = jax.jit(derivative(ours))(w, x), jax.jit(derivative(obvious))(w, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    tangent = jnp.ones_like(w)
    np.testing.assert_allclose(jax.jvp(lambda w: ours(w, x), (w,), (tangent,))[1],
                               jax.jvp(lambda w: obvious(w, x), (w,), (tangent,))[1], rtol=1e-5)
    barriers = str(jax.make_jaxpr(jax.grad(ours))(w, x)).count("optimization_barrier")
    assert barriers == (1 if n_in <= 64 and n_out >= 4 * n_in else 0)
    assert "optimization_barrier" not in str(jax.make_jaxpr(ours)(w, x))  # forward untouched
    for layout, expected in (("in_out", 1), ("out_in", 0)):  # the rule, overridden
        chosen = jax.grad(partial(loss, partial(linear_product, grad_layout=layout)))
        assert str(jax.make_jaxpr(chosen)(w, x)).count("optimization_barrier") == expected
        np.testing.assert_allclose(jax.jit(chosen)(w, x), jax.jit(jax.grad(obvious))(w, x),
                                   rtol=1e-5, atol=1e-6)


def test_linear_product_refuses_an_unknown_layout():
    # jaxtyping's check of the Literal answers first where it is on (the tests), our own
    # ValueError where it is not; both name the argument.
    with pytest.raises((ValueError, TypeError), match="grad_layout"):
        linear_product(jnp.ones(3), jnp.ones((4, 3)), grad_layout="in-out")


def test_mlp_init_is_xavier_uniform_with_zero_bias():
    mlp = MLP(300, 200, (), key=KEY)
    w = mlp.layers[0].weight
    bound = np.sqrt(6 / (300 + 200))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert not np.any(mlp.layers[0].bias)


@pytest.mark.parametrize("vectorise", [False, True])
def test_ensemble_members_differ_and_stack(vectorise):
    ens = Ensemble(lambda k: QFunction(3, 2, (8,), key=k), 4, key=KEY, vectorise=vectorise)
    q = ens(jnp.ones(3), jnp.ones(2))
    assert q.shape == (4,)
    assert len(set(np.round(np.asarray(q), 6))) == 4
    member = ens.member(2)
    np.testing.assert_allclose(member(jnp.ones(3), jnp.ones(2)), q[2], rtol=1e-6)
    batched = jax.vmap(ens, out_axes=1)(jnp.ones((5, 3)), jnp.ones((5, 2)))
    assert batched.shape == (4, 5)


def test_ensemble_layouts_agree():
    """Members as a tuple (default) and stacked under vmap: same members, outputs, gradients and
    dropout masks."""
    make = lambda k: QFunction(3, 2, (8,), dropout_rate=0.5, key=k)  # noqa: E731
    unrolled = Ensemble(make, 3, key=KEY)
    stacked = Ensemble(make, 3, key=KEY, vectorise=True)
    assert isinstance(unrolled.members, tuple) and len(unrolled.members) == 3
    assert stacked.members.net.layers[0].weight.shape == (3, 8, 5)
    for i in range(3):
        for a, b in zip(jax.tree.leaves(unrolled.member(i)), jax.tree.leaves(stacked.member(i)),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    obs, act = jnp.arange(3.0), jnp.ones(2)
    for key in (None, jax.random.key(3)):
        np.testing.assert_allclose(unrolled(obs, act, key=key), stacked(obs, act, key=key),
                                   rtol=1e-6)
    loss = lambda e: jnp.sum(e(obs, act) ** 2)  # noqa: E731
    g_u = eqx.filter_grad(loss)(unrolled)
    g_s = eqx.filter_grad(loss)(stacked)
    np.testing.assert_allclose(g_u.members[1].net.layers[0].weight,
                               g_s.members.net.layers[0].weight[1], rtol=1e-5)


def test_heads_shapes_on_dict_obs():
    obs = {"a": jnp.ones(2), "b": jnp.ones((2, 2))}
    assert flatten_obs(obs).shape == (6,)
    assert ValueFunction(6, (8,), key=KEY)(obs).shape == ()
    assert DiscreteQFunction(6, 5, (8,), key=KEY)(obs).shape == (5,)
    assert QFunction(6, 2, (8,), key=KEY)(obs, jnp.ones(2)).shape == ()


def test_tanh_gaussian_log_prob_matches_direct_computation():
    policy = GaussianPolicy(3, 2, (8, 8), key=KEY)
    obs = jnp.array([0.5, -1.0, 2.0])
    dist = policy(obs)
    action, log_prob = dist.sample_and_log_prob(seed=jax.random.key(3))
    # Direct: Gaussian density of u = atanh(a), minus log|d tanh/du| = log(1 - tanh(u)^2).
    h = policy.trunk(obs)
    mean = policy.mean_head(h)
    std = jnp.exp(jnp.clip(policy.log_std_head(h), -10.0, 2.0))
    u = jnp.arctanh(action)
    gauss = jnp.sum(-0.5 * ((u - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi))
    direct = gauss - jnp.sum(jnp.log(1 - jnp.tanh(u) ** 2))
    np.testing.assert_allclose(log_prob, direct, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dist.log_prob(action), log_prob, rtol=1e-4, atol=1e-4)
    assert np.all(np.abs(action) < 1)


def test_temperature_zero_gives_the_mode():
    policy = GaussianPolicy(3, 2, (8,), key=KEY)
    obs = jnp.ones(3)
    sample = policy(obs, temperature=0.0).sample(seed=jax.random.key(1))
    np.testing.assert_allclose(sample, policy(obs).mode(), rtol=1e-6)
    wide = policy(obs, temperature=2.0).distribution.stddev()
    np.testing.assert_allclose(wide, 2 * policy(obs).distribution.stddev(), rtol=1e-6)


def test_gaussian_policy_with_learned_std_and_no_tanh():
    policy = GaussianPolicy(
        3, 2, (8,), tanh_squash=False, state_dependent_std=False, log_std_min=-5.0, key=KEY
    )
    assert policy.log_std.shape == (2,)
    dist = policy(jnp.ones(3))
    np.testing.assert_allclose(dist.stddev(), jnp.ones(2), rtol=1e-6)  # exp(0)


def test_categorical_temperature():
    policy = CategoricalPolicy(3, 4, (8,), key=KEY)
    obs = jnp.ones(3)
    logits = policy.net(flatten_obs(obs))
    greedy = policy(obs, temperature=0.0).sample(seed=jax.random.key(0))
    assert int(greedy) == int(jnp.argmax(logits))
    np.testing.assert_allclose(
        policy(obs, temperature=0.5).probs, jax.nn.softmax(logits / 0.5), rtol=1e-5
    )


def test_with_encoder_and_grad():
    encoder = MLP(6, 4, (8,), key=KEY)
    head = ValueFunction(4, (8,), key=KEY)
    net = WithEncoder(encoder, head)
    assert net(jnp.ones(6)).shape == ()
    grads = eqx.filter_grad(lambda m: m(jnp.ones(6)))(net)
    assert jnp.any(grads.encoder.layers[0].weight != 0)

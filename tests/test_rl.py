"""The building blocks algorithms share, against hand-computed values, with and without jit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl

from .conftest import constant_critic

SPEC = eqxrl.EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,),
                     action_low=(-1.0, -1.0), action_high=(1.0, 1.0))


@pytest.mark.parametrize("jit", [False, True])
def test_critic_td_loss_by_hand(jit):
    critic = constant_critic([1.0, 3.0])
    obs, action = jnp.zeros((4, 3)), jnp.zeros((4, 2))
    loss_fn = eqx.filter_jit(eqxrl.critic_td_loss) if jit else eqxrl.critic_td_loss
    loss, aux = loss_fn(critic, obs, action, jnp.array([0.0, 1.0, 2.0, 3.0]))
    # critic 1: mean((1-y)^2) = (1+0+1+4)/4 = 1.5; critic 2: mean((3-y)^2) = (9+4+1+0)/4 = 3.5
    np.testing.assert_allclose(loss, 5.0, rtol=1e-6)
    np.testing.assert_allclose(aux["q_mean"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(aux["target_q_mean"], 1.5, rtol=1e-6)


def test_q_ensemble_members_differ_and_pass_options():
    critic = eqxrl.q_ensemble(SPEC, (8, 8), 3, layer_norm=True, key=jax.random.key(1))
    q = eqxrl.ensemble_q(critic, jnp.ones((5, 3)), jnp.zeros((5, 2)))
    assert q.shape == (3, 5) and len(set(np.asarray(q[:, 0]).round(6))) == 3


def test_temperature_loss_and_gradient_by_hand():
    temperature = eqxrl.LogScalar.create(2.0)
    loss, aux = eqxrl.temperature_loss(temperature, jnp.asarray(1.5), jnp.asarray(-1.0))
    np.testing.assert_allclose(loss, 5.0, rtol=1e-6)  # 2 * (1.5 - (-1))
    np.testing.assert_allclose(aux["value"], 2.0, rtol=1e-6)
    grad = eqx.filter_grad(
        lambda t: eqxrl.temperature_loss(t, jnp.asarray(1.5), jnp.asarray(-1.0))[0]
    )(temperature)
    np.testing.assert_allclose(grad.log_value, 5.0, rtol=1e-6)  # d/dlogα of α·2.5


def test_log_alpha_temperature_loss_and_gradient_by_hand():
    temperature = eqxrl.LogScalar.create(2.0)
    loss_fn = lambda t: eqxrl.temperature_loss(  # noqa: E731
        t, jnp.asarray(1.5), jnp.asarray(-1.0), form="log_alpha"
    )
    loss, aux = loss_fn(temperature)
    np.testing.assert_allclose(loss, np.log(2.0) * 2.5, rtol=1e-6)  # log 2 · (1.5 − (−1))
    np.testing.assert_allclose(aux["value"], 2.0, rtol=1e-6)
    grad = eqx.filter_grad(lambda t: loss_fn(t)[0])(temperature)
    np.testing.assert_allclose(grad.log_value, 2.5, rtol=1e-6)  # does not scale with α
    # The tests check annotations at run time (EQXRL_TYPECHECK=1): the Literal refuses it first.
    with pytest.raises((ValueError, TypeError), match="alpha"):
        eqxrl.temperature_loss(temperature, jnp.asarray(1.5), jnp.asarray(-1.0), form="log")


def test_policy_actions_mode_and_samples():
    policy = eqxrl.GaussianPolicy(3, 2, (8,), key=jax.random.key(0))
    obs = jnp.ones((4, 3))
    mode = eqxrl.policy_actions(policy, obs, jax.random.key(1), deterministic=True)
    np.testing.assert_allclose(mode, jax.vmap(lambda o: policy(o).mode())(obs), rtol=1e-6)
    samples = eqxrl.policy_actions(policy, obs, jax.random.key(1))
    assert samples.shape == (4, 2) and not np.allclose(samples, mode)


def test_prefixed_names_groups():
    one, two = jnp.float32(1), jnp.float32(2)
    assert eqxrl.prefixed(critic={"loss": one}, actor={"loss": two, "q": one}) == {
        "critic/loss": one, "actor/loss": two, "actor/q": one}


def test_every_runs_only_the_branch_taken():
    calls = []

    def expensive(x):
        jax.debug.callback(lambda: calls.append(1))
        return x + 1.0

    @jax.jit
    def step(x, count):
        return eqxrl.every(3, count, expensive, x, x)

    x = jnp.float32(0)
    results = [float(step(x, jnp.int32(c))) for c in range(1, 7)]
    jax.effects_barrier()
    assert results == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert len(calls) == 2  # computed on steps 3 and 6 only


def test_every_stays_a_cond_for_the_agents_of_a_run():
    from eqxrl.run.agents import Agents

    def update(x, count):
        return eqxrl.every(2, count, lambda v: jnp.sin(v) * 2.0, x, x)

    agents = Agents((0, 1, 2), ((),) * 3)
    x, counts = jnp.ones(3), jnp.full(3, 4, jnp.int32)
    text = str(jax.make_jaxpr(agents.over(update))(x, counts))
    assert "cond[" in text and "sin" in text  # one branch runs, not a select of both
    np.testing.assert_allclose(agents.over(update)(x, counts), jnp.sin(1.0) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(agents.over(update)(x, counts + 1), 1.0)
    # A plain vmap (no agents' axis) still works: both branches, then a select.
    np.testing.assert_allclose(jax.vmap(update)(x, counts + 1), 1.0)

"""eqxrl.Networks: the network family, AdamW and resets that SAC, TD3, CrossQ and TQC share."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl.algorithms import cql, crossq, sac, td3, td3_bc, tqc
from eqxrl.core import ConfigError
from eqxrl.core.spec import EnvSpec

from .conftest import assert_trees_equal, assert_vmap_equals_separate_runs, make_batch

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (2,), action_low=(-1.0, -1.0),
               action_high=(1.0, 1.0))


@pytest.mark.parametrize("options, says", [
    ({"reset_interval": 0}, "--reset-interval must be >= 1 update, got 0"),
    ({"reset_networks": ()}, "--reset-networks needs at least one"),
    ({"weight_decay": -1e-3}, "--weight-decay must be a finite number >= 0"),
    ({"simba_critic_blocks": 0}, "--simba-critic-blocks must be >= 1"),
    ({"simba_actor_width": 64}, r"--simba-actor-width size\(s\) SimBa networks, but --network"),
])
def test_bad_settings_name_the_flag(options, says):
    with pytest.raises(ConfigError, match=says):
        eqxrl.Networks(**options)


def test_simba_takes_the_papers_weight_decay_and_sizes():
    simba = eqxrl.Networks(network="simba")
    assert simba.decay == 1e-2 and eqxrl.Networks().decay == 0.0
    assert eqxrl.Networks(network="simba", weight_decay=0.0).decay == 0.0
    assert simba.critic((256, 256))[0] == (512, 512)
    assert simba.actor((256, 256), trunk=True)[0] == (128, 128)  # one block, then the heads
    assert simba.actor((256, 256), trunk=False)[0] == (128,)
    assert eqxrl.Networks().critic((64,), layer_norm=True) == ((64,), {"mlp": eqxrl.MLP,
                                                                      "layer_norm": True})


def test_weight_decay_is_decoupled_adamw():
    state = eqxrl.Networks(weight_decay=0.5).train_state({"w": jnp.ones(2)}, 0.1)
    stepped = state.apply_gradients({"w": jnp.zeros(2)})  # zero gradient: only the decay moves
    np.testing.assert_allclose(stepped.model["w"], 1.0 - 0.1 * 0.5 * 1.0, rtol=1e-6)


def test_a_reset_replaces_the_named_networks_and_keeps_counts_and_learning_rates():
    config = sac.Config(net=eqxrl.Networks(reset_interval=2, reset_networks=("critic",)))
    state = sac.init(jax.random.key(0), SPEC, config, eqxrl.hyper_of(config, {"critic_lr": 1e-3}))
    state = dataclasses.replace(state, critic=state.critic.apply_gradients(
        jax.tree.map(jnp.ones_like, eqx.filter(state.critic.model, eqx.is_inexact_array))))
    fresh = sac.init(jax.random.key(7), SPEC, config)
    after = eqxrl.reset_networks(state, fresh, ("critic",), reset_optimizer=True)
    assert eqx.tree_equal(after.critic.model, fresh.critic.model)
    assert eqx.tree_equal(after.target_critic, fresh.target_critic)  # the target follows
    assert eqx.tree_equal(after.actor, state.actor)  # not named: untouched
    assert int(after.critic.step) == 1
    assert float(after.critic.opt_state.hyperparams["learning_rate"]) == pytest.approx(1e-3)
    assert eqx.tree_equal(after.critic.opt_state.inner_state, fresh.critic.opt_state.inner_state)
    kept = eqxrl.reset_networks(state, fresh, ("critic",), reset_optimizer=False)
    assert eqx.tree_equal(kept.critic.opt_state, state.critic.opt_state)


def test_resets_happen_on_positive_multiples_of_the_interval_only():
    config = sac.Config(net=eqxrl.Networks(reset_interval=2))
    state = sac.init(jax.random.key(0), SPEC, config)
    make = lambda k: sac.init(k, SPEC, config)
    reset = jax.jit(lambda s, n: eqxrl.scheduled_reset(s, n, jax.random.key(3), config.net, make))
    assert eqx.tree_equal(reset(state, jnp.int32(0)), state)  # not at the start
    assert eqx.tree_equal(reset(state, jnp.int32(3)), state)
    moved = reset(state, jnp.int32(4))
    assert not eqx.tree_equal(moved.actor.model, state.actor.model)
    assert not eqx.tree_equal(moved.critic.model, state.critic.model)
    assert eqx.tree_equal(moved.temperature, state.temperature)


# ---------------------------------------------------------------- on the four algorithms
def simba_config(module):
    net = eqxrl.Networks(network="simba", simba_critic_width=16, simba_actor_width=8,
                         reset_interval=2)
    sizes = {}  # the --simba-* sizes replace hidden_dims (changing those too is refused)
    if module is tqc:
        sizes |= {"num_critics": 2, "num_quantiles": 3}
    if module is crossq:
        sizes |= {"policy_delay": 2}
    return module.Config(net=net, **sizes)


FOUR = pytest.mark.parametrize("module", [sac, td3, tqc, crossq],
                               ids=lambda m: m.__name__.split(".")[-1])


def scaled_batch():
    batch = make_batch(jax.random.key(1))
    return dataclasses.replace(batch, obs=3.0 + 2.0 * batch.obs)


@pytest.mark.slow  # ~20 s each (the default suite keeps the reset and norm unit tests)
@FOUR
def test_simba_with_resets_compiles_once_and_act_normalises(module):
    """SimBa networks, AdamW, running observation statistics and a reset at update 2."""
    batch, config = scaled_batch(), simba_config(module)
    state = module.init(jax.random.key(0), SPEC, config)
    update = eqx.debug.assert_max_traces(module.update, max_traces=1)
    step = eqxrl.jit(lambda s, k: update(s, batch, k, config))
    for i in range(3):
        state, metrics = step(state, jax.random.key(i))
    assert float(state.obs_norm.count) == 3 * 16
    np.testing.assert_allclose(state.obs_norm.mean, np.mean(batch.obs, 0), rtol=1e-5)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert state.critic.opt_state.hyperparams["weight_decay"] == pytest.approx(1e-2)  # AdamW
    action = module.act(state, batch.obs, jax.random.key(0), deterministic=True)
    raw = module.act(dataclasses.replace(state, obs_norm=None), batch.obs, jax.random.key(0),
                     deterministic=True)
    normalised = module.act(dataclasses.replace(state, obs_norm=None), state.obs_norm(batch.obs),
                            jax.random.key(0), deterministic=True)
    np.testing.assert_allclose(action, normalised, rtol=1e-5, atol=1e-6)  # act normalises
    assert not np.allclose(action, raw)


@pytest.mark.slow  # ~30 s each: three programs compiled per algorithm
@FOUR
def test_simba_with_resets_is_per_agent_under_vmap(module):
    """Running observation statistics, SimBa networks and a reset at update 2, for 2 agents
    as one vmapped program, equal 2 separate runs."""
    # SimBa-CrossQ's embedding bias feeds batch normalisation only, so its gradient is zero in
    # exact arithmetic, and Adam turns the float noise of a batched program into steps of ±lr.
    atol = 5e-3 if module is crossq else 1e-5
    assert_vmap_equals_separate_runs(module, SPEC, simba_config(module), scaled_batch(),
                                     updates=3, seeds=2, atol=atol)


def test_algorithms_built_on_sac_and_td3_refuse_the_options():
    with pytest.raises(ConfigError, match="CQL does not take --network"):
        cql.Config(net=eqxrl.Networks(network="simba"))
    with pytest.raises(ConfigError, match=r"TD3\+BC does not take --reset-interval"):
        td3_bc.Config(net=eqxrl.Networks(reset_interval=5))


@pytest.mark.slow  # ~35 s: three short SimBa runs
def test_a_simba_run_resumes_bit_exactly_and_loads_as_a_policy(tmp_path):
    def config(name, **run):
        settings = dict(env_id="Pendulum-v1", total_steps=300, start_steps=100, batch_size=16,
                        buffer_size=1000, eval_interval=300, eval_episodes=1,
                        checkpoint_interval=150, run_dir=str(tmp_path / name), progress=False,
                        tensorboard=False)
        net = eqxrl.Networks(network="simba", simba_critic_width=16, simba_actor_width=8,
                             reset_interval=80)
        return sac.Config(run=eqxrl.OnlineRun(**(settings | run)), net=net)

    sac.main(config("straight"))
    sac.main(config("broken", total_steps=150))  # stops at step 150, then resumed to 300
    sac.main(sac.Config(run=eqxrl.OnlineRun(resume=str(tmp_path / "broken"), total_steps=300)))
    a, b = (eqxrl.load_run(str(tmp_path / n)).state for n in ("straight", "broken"))
    assert_trees_equal(a, b)
    assert float(a.obs_norm.count) == int(a.critic.step) * 16 > 0
    policy, _ = eqxrl.load_policy(str(tmp_path / "straight"))
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    np.testing.assert_allclose(policy(obs), sac.act(a, obs, jax.random.key(0), True), rtol=1e-5)

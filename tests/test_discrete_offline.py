"""Discrete actions offline: discrete CQL's loss by hand, discrete BC's cross-entropy, pixel and
dict observations through the encoders of BC, CQL and DQN, the offline loop on a discrete
dataset, and (slow) discrete CQL against discrete BC on mixed-quality CartPole data."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import EnvSpec, Transition
from eqxrl.algorithms import bc, cql_discrete, dqn
from eqxrl.datasets.rollouts import add_noise, collect_episodes

from .conftest import assert_vmap_equals_separate_runs

SPEC = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (), discrete=True,
               num_actions=2)
SMALL = cql_discrete.Config(run=eqxrl.OfflineRun(dataset="unused.hdf5", batch_size=4),
                            hidden_dims=(8,))
IMAGE = jax.ShapeDtypeStruct((36, 36, 3), np.dtype("uint8"))
PIXELS = EnvSpec(IMAGE, (), discrete=True, num_actions=3)
PIXELS_AND_STATE = EnvSpec((("pixels", IMAGE), ("state", SPEC.observation)), (),
                           discrete=True, num_actions=3)


def linear_q(weights):
    """A Q-network whose output for obs o is o[0] * weights (one per action)."""
    q = eqxrl.DiscreteQFunction(3, 2, (), key=jax.random.key(0))
    weight = jnp.zeros((2, 3)).at[:, 0].set(jnp.asarray(weights, jnp.float32))
    return eqx.tree_at(lambda q: (q.net.layers[0].weight, q.net.layers[0].bias), q,
                       (weight, jnp.zeros(2)))


def discrete_batch(spec, n=4, key=0):
    keys = jax.random.split(jax.random.key(key), 4)

    def obs(k):
        def leaf(s, kk):
            if s.dtype == np.uint8:
                return jax.random.randint(kk, (n, *s.shape), 0, 256).astype(jnp.uint8)
            return jax.random.normal(kk, (n, *s.shape))
        leaves, tree = jax.tree.flatten(spec.obs_structure)
        return jax.tree.unflatten(tree, [leaf(s, kk) for s, kk in
                                         zip(leaves, jax.random.split(k, len(leaves)),
                                             strict=True)])

    return Transition(obs=obs(keys[0]),
                      action=jax.random.randint(keys[1], (n,), 0, spec.num_actions, jnp.int32),
                      reward=jax.random.normal(keys[2], (n,)), next_obs=obs(keys[3]),
                      terminated=jnp.arange(n) == 1, truncated=jnp.zeros(n, bool))


# ---------------------------------------------------------------- discrete CQL
def test_cql_loss_and_target_by_hand():
    config = dataclasses.replace(SMALL, discount=0.5, cql_alpha=2.0)
    state = cql_discrete.init(jax.random.key(0), SPEC, config)
    state = dataclasses.replace(state, q=dataclasses.replace(state.q, model=linear_q([1, 3])),
                                target_q=linear_q([5, 2]))
    batch = Transition(obs=jnp.ones((2, 3)), action=jnp.array([0, 1], jnp.int32),
                       reward=jnp.array([1.0, 2.0]),
                       next_obs=jnp.zeros((2, 3)).at[:, 0].set(jnp.array([2.0, 1.0])),
                       terminated=jnp.array([False, True]), truncated=jnp.zeros(2, bool))
    # targets: 1 + 0.5·max(10, 4) = 6, and 2 (terminated)
    # Q(s, ·) = [1, 3]: TD errors 1 − 6 = −5 and 3 − 2 = 1 → mean 13
    # logsumexp [1, 3] = 3 + log(1 + e^−2); gaps lse − 1 and lse − 3 → mean lse − 2
    lse = 3 + np.log1p(np.exp(-2.0))
    loss, info = cql_discrete.cql_loss(state.q.model, batch, jnp.array([6.0, 2.0]),
                                       jnp.float32(2.0))
    np.testing.assert_allclose(info["td_loss"], 13.0, rtol=1e-6)
    np.testing.assert_allclose(info["cql_gap"], lse - 2, rtol=1e-6)
    np.testing.assert_allclose(loss, 13 + 2 * (lse - 2), rtol=1e-6)
    np.testing.assert_allclose(info["accuracy"], 0.5)  # argmax is action 1 for both
    np.testing.assert_allclose(cql_discrete.q_target(state, batch), [6.0, 2.0])


def test_cql_update_compiles_once_moves_the_target_by_tau_and_vmaps_over_seeds():
    state = cql_discrete.init(jax.random.key(0), SPEC, SMALL)
    update = eqx.debug.assert_max_traces(cql_discrete.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    batch = discrete_batch(SPEC)
    new, metrics = step(state, batch, jax.random.key(1))
    new, metrics = step(new, batch, jax.random.key(2))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(new.q.step) == 2
    assert_vmap_equals_separate_runs(cql_discrete, SPEC, SMALL, batch, updates=2, seeds=2)
    box = EnvSpec(SPEC.observation, (1,), action_low=(-1.0,), action_high=(1.0,))
    with pytest.raises(ValueError, match=r"Discrete CQL needs a discrete action space.*cql.py"):
        cql_discrete.init(jax.random.key(0), box, SMALL)
    greedy = cql_discrete.act(state, batch.obs, jax.random.key(0))
    np.testing.assert_array_equal(greedy, eqxrl.greedy_actions(state.q.model, batch.obs))


# ---------------------------------------------------------------- discrete BC
def test_cross_entropy_accuracy_and_entropy_by_hand():
    policy = eqxrl.CategoricalPolicy(3, 2, (), key=jax.random.key(0))
    policy = eqx.tree_at(lambda p: (p.net.layers[0].weight, p.net.layers[0].bias), policy,
                         (jnp.zeros((2, 3)), jnp.array([0.0, np.log(3.0)])))  # π = [1/4, 3/4]
    obs, action = jnp.zeros((4, 3)), jnp.array([0, 1, 1, 1], jnp.int32)
    loss, info = bc.cross_entropy_loss(policy, obs, action)
    np.testing.assert_allclose(loss, -(np.log(0.25) + 3 * np.log(0.75)) / 4, rtol=1e-6)
    np.testing.assert_allclose(info["accuracy"], 0.75)
    np.testing.assert_allclose(info["entropy"], -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)),
                               rtol=1e-6)


# ---------------------------------------------------------------- pixels and dicts
# 30 s and 22 s: slow, so that the default run stays within ~6 minutes on 2 cores.
@pytest.mark.slow
@pytest.mark.parametrize("spec", [PIXELS, PIXELS_AND_STATE], ids=["image", "image+state"])
def test_pixel_observations_train_bc_cql_and_dqn(spec):
    batch = discrete_batch(spec, n=4)
    for algorithm, config in (
        (bc, bc.Config(run=eqxrl.OfflineRun(dataset="x.hdf5", batch_size=4), hidden_dims=(8,))),
        (cql_discrete, dataclasses.replace(SMALL, vision=eqxrl.vision.EncoderConfig("atari"))),
        (dqn, dqn.Config(hidden_dims=(8,))),
    ):
        state = algorithm.init(jax.random.key(0), spec, config)
        encoder = state.q.model.encoder if hasattr(state, "q") else state.actor.model.encoder
        assert isinstance(encoder, eqxrl.vision.ObsEncoder)
        if algorithm is dqn:
            sampled = eqxrl.ReplayBuffer.create(spec.example_transition(), 8)
            sampled = sampled.add_batch(batch).sample_n_step(jax.random.key(1), 4, 2)
            new, metrics = eqxrl.jit(lambda s, b, c=config: dqn.update(
                s, b, jax.random.key(0), c))(state, sampled)
        else:
            new, metrics = eqxrl.jit(lambda s, b, a=algorithm, c=config: a.update(
                s, b, jax.random.key(0), c))(state, batch)
        assert all(np.isfinite(float(v)) for v in metrics.values()), algorithm.__name__
        actions = algorithm.act(new, batch.obs, jax.random.key(1), deterministic=True)
        assert actions.dtype == jnp.int32 and actions.shape == (4,)
    if isinstance(batch.obs, dict):  # a float image in the dict: named by its key
        with pytest.raises(ValueError, match=r"obs\['pixels'\] has dtype float32, expected "
                                             "uint8"):
            algorithm.act(new, dict(batch.obs, pixels=batch.obs["pixels"].astype(jnp.float32)),
                          jax.random.key(0))


def test_image_layout_errors_are_clear():
    chw = EnvSpec(jax.ShapeDtypeStruct((3, 36, 36), np.dtype("uint8")), (), discrete=True,
                  num_actions=2)
    with pytest.raises(ValueError, match="channels"):
        eqxrl.vision.ObsEncoder(chw, "atari", key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"encoder='nope' is not an encoder; valid names"):
        eqxrl.vision.ObsEncoder(PIXELS, "nope", key=jax.random.key(0))
    state = bc.init(jax.random.key(0), PIXELS, bc.Config(
        run=eqxrl.OfflineRun(dataset="x.hdf5"), hidden_dims=(8,)))
    with pytest.raises(ValueError, match=r"obs has dtype float32, expected uint8"):
        bc.act(state, jnp.zeros((2, 36, 36, 3)), jax.random.key(0))
    with pytest.raises(ValueError, match=r"obs has shape \(2, 36, 36, 4\), expected"):
        bc.act(state, jnp.zeros((2, 36, 36, 4), jnp.uint8), jax.random.key(0))


# ---------------------------------------------------------------- the offline loop
def expert(obs, key):
    """A hand-made CartPole controller (return 500 on every seed tried)."""
    del key
    return (obs[2] + 0.5 * obs[3] + 0.05 * obs[0] + 0.2 * obs[1] > 0).astype(jnp.int32)


def anti_expert(obs, key):
    return 1 - expert(obs, key)


def mixed_cartpole(path):
    """3 expert episodes (~1500 rows) and ~4000 rows of a mostly wrong policy: a dataset whose
    most frequent action near the upright start is the bad one."""
    good = collect_episodes("CartPole-v1", expert, 1500, seed=0)
    bad = collect_episodes("CartPole-v1", add_noise(anti_expert, epsilon=0.4, spec=SPEC),
                           4000, seed=1)
    data = eqxrl.Dataset(jax.tree.map(lambda a, b: jnp.concatenate([a, b]), good.data,
                                      bad.data))
    eqxrl.save_dataset(str(path), data, eqxrl.DatasetInfo(env_id="CartPole-v1"))
    return str(path)


def test_discrete_dataset_trains_offline_and_refuses_a_continuous_env(tmp_path):
    data = collect_episodes("CartPole-v1", expert, 300, seed=0)
    path = str(tmp_path / "expert.hdf5")
    eqxrl.save_dataset(path, data, eqxrl.DatasetInfo(env_id="CartPole-v1"))
    run = eqxrl.OfflineRun(dataset=path, total_updates=200, updates_per_call=100,
                           eval_interval=200, eval_episodes=1, log_interval=100,
                           batch_size=32, progress=False, run_dir=str(tmp_path / "bc"))
    summary = bc.main(bc.Config(run=run, hidden_dims=(16,)))
    assert summary["status"] == "done"
    metrics = eqxrl.run.read_metrics(str(tmp_path / "bc" / "train.csv"))
    assert {"actor/loss", "actor/accuracy", "actor/entropy"} <= set(metrics)
    # MountainCar-v0 (discrete) and MountainCarContinuous-v0 share their observations
    spec = eqxrl.datasets.env_spec("MountainCar-v0")
    data = collect_episodes("MountainCar-v0", eqxrl.datasets.random_policy(spec), 50, seed=0)
    path = str(tmp_path / "mountaincar.hdf5")
    eqxrl.save_dataset(path, data, eqxrl.DatasetInfo(env_id="MountainCar-v0"))
    wrong = dataclasses.replace(run, dataset=path, env_id="MountainCarContinuous-v0",
                                run_dir=str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match=r"dataset.action has dtype int32, but the env takes "
                                         r"continuous actions"):
        bc.main(bc.Config(run=wrong, hidden_dims=(16,)))


@pytest.mark.slow
def test_discrete_cql_beats_discrete_bc_on_mixed_quality_data(tmp_path):
    """Most rows near the start come from a bad policy: BC copies it, CQL's values see past it
    (seed 0; final evaluation over 10 episodes)."""
    path = mixed_cartpole(tmp_path / "mixed.hdf5")

    def run(name):
        return eqxrl.OfflineRun(dataset=path, total_updates=20_000, updates_per_call=1000,
                                eval_interval=20_000, eval_episodes=10, batch_size=256,
                                progress=False, run_dir=str(tmp_path / name))

    cql = cql_discrete.main(cql_discrete.Config(run=run("cql"), lr=3e-4, discount=0.99))
    imitation = bc.main(bc.Config(run=run("bc")))
    print("CQL", cql["final_eval_return"], "BC", imitation["final_eval_return"])
    assert cql["final_eval_return"] >= imitation["final_eval_return"] + 100
    assert cql["final_eval_return"] >= 300

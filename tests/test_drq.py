"""DrQ: the shift augmentation inside the update (per image, fixed by the key), the encoder
trained by the critic loss only, compile-once, vmap over seeds, clear errors, and (slow) a short
run on rendered Pendulum frames that resumes exactly."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqxrl
from eqxrl import EnvSpec, Transition
from eqxrl.algorithms import drq

from .conftest import assert_trees_equal, assert_vmap_equals_separate_runs, whole_and_resumed

IMAGE = jax.ShapeDtypeStruct((16, 16, 6), np.dtype("uint8"))
SPEC = EnvSpec((("pixels", IMAGE), ("state", jax.ShapeDtypeStruct((4,), np.dtype("float32")))),
               (2,), action_low=(-1.0, -1.0), action_high=(1.0, 1.0), frame_stack=2)
SMALL = drq.Config(run=eqxrl.OnlineRun(env_id="pixels:Pendulum-v1", batch_size=4),
                   hidden_dims=(16,), feature_dim=8)


def pixel_batch(n=4, key=0):
    k = jax.random.split(jax.random.key(key), 6)

    def obs(kk):
        k1, k2 = jax.random.split(kk)
        return {"pixels": jax.random.randint(k1, (n, *IMAGE.shape), 0, 256).astype(jnp.uint8),
                "state": jax.random.normal(k2, (n, 4))}

    return Transition(obs=obs(k[0]), action=jax.random.uniform(k[1], (n, 2), minval=-1),
                      reward=jax.random.normal(k[2], (n,)), next_obs=obs(k[3]),
                      terminated=jnp.zeros(n, bool), truncated=jnp.zeros(n, bool))


def test_shifts_are_per_image_and_fixed_by_the_key():
    ramp = jnp.broadcast_to(jnp.arange(16, dtype=jnp.uint8)[None, :, None], (16, 16, 6))
    obs = {"pixels": jnp.stack([ramp] * 64), "state": jnp.ones((64, 4))}
    a = drq.augment(obs, jax.random.key(0), 4)
    b = drq.augment(obs, jax.random.key(0), 4)
    c = drq.augment(obs, jax.random.key(1), 4)
    assert_trees_equal(a, b)
    assert not np.array_equal(a["pixels"], c["pixels"])
    shifts = {int(x[8, 8, 0]) - 8 for x in np.asarray(a["pixels"])}  # column shift per image
    assert len(shifts) >= 5 and shifts <= set(range(-4, 5))  # several, all within the padding
    assert_trees_equal(a["state"], obs["state"])  # vectors are not shifted
    assert a["pixels"].dtype == jnp.uint8
    assert_trees_equal(drq.augment(obs, jax.random.key(0), 0), obs)


@pytest.mark.slow  # 45 s on 2 cores, compiling the IMPALA update
def test_encoder_is_trained_by_the_critic_loss_only():
    state = drq.init(jax.random.key(0), SPEC, SMALL)
    batch = pixel_batch()
    new, metrics = eqxrl.jit(lambda s, b, k: drq.update(s, b, k, SMALL))(
        state, batch, jax.random.key(1))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    # The critic step by hand, with the update's shifted images and target: the encoder moves
    # exactly as the critic loss alone moves it (the actor's loss does not reach it).
    k_obs, k_next_obs, k_next, _ = jax.random.split(jax.random.key(1), 4)
    obs = drq.augment(batch.obs, k_obs, SMALL.shift_padding)
    next_obs = drq.augment(batch.next_obs, k_next_obs, SMALL.shift_padding)
    alpha = state.temperature.model()
    next_action, next_log_prob = eqxrl.sample_actions(
        state.actor.model, drq.encode(state.critic.model, next_obs), k_next)
    next_q = jnp.min(eqxrl.ensemble_q(state.target_critic, next_obs, next_action), axis=0)
    target = eqxrl.td_target(batch.reward, batch.terminated, next_q - alpha * next_log_prob,
                             state.discount)
    critic, info = state.critic.apply_loss_fn(eqxrl.critic_td_loss, obs, batch.action, target)
    np.testing.assert_allclose(metrics["critic/loss"], info["loss"], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(eqx.filter(new.critic.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(critic.model, eqx.is_array)), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    moved = jax.tree.leaves(eqx.filter(new.critic.model.encoder, eqx.is_array))
    before = jax.tree.leaves(eqx.filter(state.critic.model.encoder, eqx.is_array))
    assert any(not np.allclose(x, y) for x, y in zip(moved, before, strict=True))
    # the target encoder follows at encoder_tau
    w = lambda c: jax.tree.leaves(eqx.filter(c.encoder, eqx.is_array))[0]  # noqa: E731
    np.testing.assert_allclose(
        w(new.target_critic), 0.05 * w(new.critic.model) + 0.95 * w(state.target_critic),
        rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # 45 s on 2 cores, compiling the IMPALA update twice
def test_update_compiles_once_and_vmaps_over_seeds():
    update = eqx.debug.assert_max_traces(drq.update, max_traces=1)
    step = eqxrl.jit(lambda s, b, k: update(s, b, k, SMALL))
    state = drq.init(jax.random.key(0), SPEC, SMALL)
    for i in range(3):
        state, metrics = step(state, pixel_batch(key=i), jax.random.key(i))
    assert int(state.critic.step) == 3
    assert {"critic/loss", "actor/loss", "actor/entropy", "temperature/value"} <= set(metrics)
    action = drq.act(state, pixel_batch().obs, jax.random.key(0), deterministic=True)
    assert action.shape == (4, 2) and np.all(np.abs(np.asarray(action)) <= 1)
    # convolutions batched over seeds round differently: weights ~0.03 agree to 1e-4
    assert_vmap_equals_separate_runs(drq, SPEC, SMALL, pixel_batch(), updates=2, seeds=2,
                                     atol=1e-4)


def test_bad_input_is_refused_clearly():
    states = EnvSpec(jax.ShapeDtypeStruct((3,), np.dtype("float32")), (1,),
                     action_low=(-1.0,), action_high=(1.0,))
    with pytest.raises(ValueError, match=r"DrQ learns from images.*pixels:Pendulum-v1"):
        drq.init(jax.random.key(0), states, SMALL)
    discrete = dataclasses.replace(SPEC, action_shape=(), discrete=True, num_actions=3,
                                   action_low=None, action_high=None)
    with pytest.raises(ValueError, match=r"DrQ needs a continuous \(Box\) action space"):
        drq.init(jax.random.key(0), discrete, SMALL)
    state = drq.init(jax.random.key(0), SPEC, SMALL)
    obs = pixel_batch().obs
    with pytest.raises(ValueError, match=r"obs\['pixels'\] has dtype float32, expected uint8"):
        drq.act(state, dict(obs, pixels=obs["pixels"].astype(jnp.float32)), jax.random.key(0))


def small_run(tmp_path, name, **run):
    settings = dict(env_id="pixels:Pendulum-v1", total_steps=60, start_steps=30, batch_size=4,
                    buffer_size=100, log_interval=10, eval_interval=60, checkpoint_interval=30,
                    eval_episodes=1, progress=False, run_dir=str(tmp_path / name))
    return drq.Config(run=eqxrl.OnlineRun(**(settings | run)), hidden_dims=(16,),
                      feature_dim=8)


@pytest.mark.slow  # 1 min: renders Pendulum, three runs compile DrQ's IMPALA update
def test_drq_runs_on_rendered_frames_and_resumes_exactly(tmp_path):
    a, b = whole_and_resumed(drq, small_run, tmp_path, 45)
    assert '"status": "done"' in (tmp_path / "whole" / "summary.json").read_text()
    assert a.buffer.frame_capacity < 2 * 100  # one frame per step, not 2 × 3
    assert_trees_equal(eqx.filter(a.state, eqx.is_array), eqx.filter(b.state, eqx.is_array))


@pytest.mark.slow  # ~1 min, as the test above
def test_drq_takes_a_pixel_dataset_in_every_batch_and_resumes_exactly(tmp_path):
    env, rng, rows = eqxrl.make_env("pixels:Pendulum-v1"), np.random.default_rng(0), []
    obs, _ = env.reset(seed=0)
    for t in range(64):  # the env's own stacked frames, as eqxrl-collect would store them
        action = rng.uniform(-1, 1, (1,)).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, np.float32(reward), next_obs, terminated, truncated or t == 63))
        obs = next_obs
    env.close()
    obs, action, reward, next_obs, terminated, truncated = map(np.stack, zip(*rows, strict=True))
    path = str(tmp_path / "frames.hdf5")
    eqxrl.save_dataset(path, eqxrl.Dataset(Transition(
        jnp.asarray(obs), jnp.asarray(action), jnp.asarray(reward), jnp.asarray(next_obs),
        jnp.asarray(terminated), jnp.asarray(truncated))),
        eqxrl.DatasetInfo(env_id="pixels:Pendulum-v1"))
    a, b = whole_and_resumed(drq, lambda tmp, name, **kw: small_run(
        tmp, name, offline_data=path, **kw), tmp_path, 45)
    assert a.config.run.offline_data == path and a.buffer.frame_capacity < 2 * 100
    assert_trees_equal(eqx.filter(a.state, eqx.is_array), eqx.filter(b.state, eqx.is_array))


@pytest.mark.slow  # 28 s (two compilations of a 2-update learn call); the default suite is full
def test_pixel_updates_written_out_equal_the_scanned_ones(monkeypatch):
    """At --utd 2 the online loop's learn call runs a pixel agent's updates one after another
    (a scan of conv nets is 4-6x slower on XLA's CPU backend); same keys, same results."""
    from eqxrl.data import make_buffer
    from eqxrl.loops import host_steps as online
    from eqxrl.run.grid import make_agents

    config = dataclasses.replace(SMALL, run=dataclasses.replace(SMALL.run, utd=2,
                                                                 buffer_size=16))
    agents = make_agents(config.run, config.run.batch_size)

    def fresh(key, config, hyper):
        return (drq.init(key, SPEC, config, hyper), key), make_buffer(SPEC, 16)

    batch = pixel_batch(n=8)
    results = []
    for limit in (8, 0):  # written out, then (limit 0) the scan
        monkeypatch.setattr(online, "UNROLL_IMAGE_UPDATES", limit)
        state_key, buffer = eqxrl.jit(lambda: agents.init(fresh, config))()
        fns = online.make_step_functions(SPEC, config, drq, state_key, buffer, agents)
        flat = (fns.sk.flatten(state_key), fns.buf.flatten(buffer))
        for i in range(8):  # stored one row at a time, as the loop does
            row = jax.tree.map(lambda x, i=i: np.asarray(x[i:i + 1]), batch)
            flat, _ = fns.random_step(flat, (row.obs, row.action, row.reward, row.next_obs,
                                             row.terminated, row.truncated))
        sk, metrics, finite = fns.learn(*flat)
        assert bool(np.all(finite))
        results.append((fns.sk.rebuild(sk)[0], metrics))
    (written, m1), (scanned, m2) = results
    assert int(np.asarray(written.critic.step).reshape(-1)[0]) == 2
    for a, b in zip(jax.tree.leaves(eqx.filter((written, m1), eqx.is_inexact_array)),
                    jax.tree.leaves(eqx.filter((scanned, m2), eqx.is_inexact_array)),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

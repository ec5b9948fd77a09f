import equinox as eqx
import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqxrl import EnvSpec, Transition, make_env, spec_from_env


def test_spec_from_mujoco_env():
    env = make_env("HalfCheetah-v5")
    spec = spec_from_env(env)
    assert spec.obs_dim == 17 and spec.action_shape == (6,) and not spec.discrete
    assert spec.action_low == (-1.0,) * 6
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32  # made float32 by make_env
    hash(spec)  # usable as a static field


def test_make_env_rescales_actions_to_unit_box():
    env = make_env("Pendulum-v1")
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    # The RecordEpisodeStatistics wrapper reports returns; terminated/truncated stay apart.
    env.reset(seed=0)
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and not terminated and "episode" in info


def test_discrete_spec():
    spec = spec_from_env(make_env("CartPole-v1"))
    assert spec.discrete and spec.num_actions == 2 and spec.action_shape == ()
    assert spec.example_transition().action.dtype == jnp.int32


def test_dict_observation_spec():
    space = gym.spaces.Dict(
        {
            "state": gym.spaces.Box(-1, 1, (3,)),
            "pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
        }
    )
    env = gym.make("Pendulum-v1")
    env.observation_space = space
    spec = spec_from_env(env)
    obs = spec.example_obs()
    assert obs["pixels"].dtype == jnp.uint8 and obs["state"].shape == (3,)
    assert spec.obs_dim == 3 + 8 * 8 * 3
    batch = jax.tree.map(lambda x: jnp.stack([x, x]), obs)
    assert spec.obs_batch_shape(batch) == (2,)


def test_unknown_env_id_names_the_argument():
    with pytest.raises(ValueError, match="env_id='NoSuchEnv-v0'"):
        make_env("NoSuchEnv-v0")


SPEC = EnvSpec(
    jax.ShapeDtypeStruct((3,), np.dtype("float32")), (1,), action_low=(-1.0,), action_high=(1.0,)
)


def test_obs_shape_and_dtype_errors():
    assert SPEC.obs_batch_shape(jnp.zeros((5, 3))) == (5,)
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), expected \(\.\.\., 3\)"):
        SPEC.obs_batch_shape(jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match="obs has dtype int32, expected float32"):
        SPEC.obs_batch_shape(jnp.zeros((5, 3), jnp.int32))


def test_one_observation_without_batch_axis_is_named():
    with pytest.raises(
        ValueError, match=r"obs has shape \(3,\), which is one observation.*obs\[None\]"
    ):
        SPEC.obs_batch_shape(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"one observation.*obs\[None\]"):
        SPEC.batch_size(jnp.zeros(3))


def test_batch_size_needs_exactly_one_batch_axis():
    assert SPEC.batch_size(jnp.zeros((5, 3))) == 5
    assert SPEC.obs_batch_shape(jnp.zeros((2, 5, 3))) == (2, 5)
    with pytest.raises(
        ValueError,
        match=r"obs has batch shape \(2, 5\), expected exactly one "
        r"batch axis: \(batch, 3\)\. Merge .* one axis of 10",
    ):
        SPEC.batch_size(jnp.zeros((2, 5, 3)))


def test_one_dict_observation_is_named():
    spec = EnvSpec(
        (
            ("pixels", jax.ShapeDtypeStruct((8, 8, 3), np.dtype("uint8"))),
            ("state", jax.ShapeDtypeStruct((3,), np.dtype("float32"))),
        ),
        (1,),
    )
    one = {"pixels": jnp.zeros((8, 8, 3), jnp.uint8), "state": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"obs is one observation \(obs\['pixels'\] has shape"):
        spec.batch_size(one)
    assert spec.batch_size(jax.tree.map(lambda x: x[None], one)) == 1


def batch(n=4, reward_shape=None, action_dim=1):
    return Transition(
        obs=jnp.zeros((n, 3)),
        action=jnp.zeros((n, action_dim)),
        reward=jnp.zeros(reward_shape or (n,)),
        next_obs=jnp.zeros((n, 3)),
        terminated=jnp.zeros(reward_shape or (n,), bool),
        truncated=jnp.zeros(reward_shape or (n,), bool),
    )


def test_trailing_reward_axis_is_caught_with_both_shapes():
    assert SPEC.check_batch(batch()) == (4,)
    # Building the batch already fails, naming both shapes...
    with pytest.raises(ValueError, match=r"reward has shape \(4, 1\).*obs has shape \(4, 3\)"):
        batch(reward_shape=(4, 1))
    # ...and a batch edited without its constructor is caught by the algorithm's check.
    edited = eqx.tree_at(lambda b: b.reward, batch(), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"batch.reward has shape \(4, 1\), expected \(4,\)"):
        SPEC.check_batch(edited)


def test_check_batch_rejects_wrong_action():
    with pytest.raises(ValueError, match=r"batch.action has shape \(4, 2\), expected \(4, 1\)"):
        SPEC.check_batch(batch(action_dim=2))


def test_check_batch_rejects_wrong_action_dtype():
    wrong = eqx.tree_at(lambda b: b.action, batch(), jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"batch.action has dtype int32, but the env takes "
                                         r"continuous actions of shape \(1,\) \(float32\): the "
                                         "data and the env do not match"):
        SPEC.check_batch(wrong)
    half = eqx.tree_at(lambda b: b.action, batch(), jnp.zeros((4, 1), jnp.float16))
    with pytest.raises(ValueError, match="batch.action has dtype float16, expected float32"):
        SPEC.check_batch(half)

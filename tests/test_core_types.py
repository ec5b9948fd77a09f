import jax.numpy as jnp
import pytest

from eqxrl import Transition


def make(batch=(4,), reward_shape=None):
    return dict(
        obs=jnp.zeros((*batch, 3)),
        action=jnp.zeros((*batch, 2)),
        reward=jnp.zeros(reward_shape or batch),
        next_obs=jnp.zeros((*batch, 3)),
        terminated=jnp.zeros(batch, bool),
        truncated=jnp.zeros(batch, bool),
    )


def test_batch_shape():
    assert Transition(**make()).batch_shape == (4,)
    assert Transition(**make(batch=())).batch_shape == ()


def test_reward_with_trailing_axis_is_rejected():
    with pytest.raises(Exception, match=r"\(4, 1\)"):
        Transition(**make(reward_shape=(4, 1)))


def test_obs_with_other_batch_is_rejected():
    fields = make()
    fields["obs"] = jnp.zeros((5, 3))
    with pytest.raises(ValueError, match=r"Transition.obs has shape \(5, 3\)"):
        Transition(**fields)


def test_nested_obs():
    fields = make()
    fields["obs"] = fields["next_obs"] = {
        "pixels": jnp.zeros((4, 8, 8, 3), jnp.uint8),
        "state": jnp.zeros((4, 2)),
    }
    assert Transition(**fields).batch_shape == (4,)

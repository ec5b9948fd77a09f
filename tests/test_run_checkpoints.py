import dataclasses
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

from eqxrl import MLP, CheckpointError, ReplayBuffer, TrainState
from eqxrl.run import checkpoints as ck

from .conftest import assert_trees_equal

TX = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 1e-3
    hidden: tuple[int, ...] = (8,)


def make_tree(seed=0, hidden=(8,)):
    key = jax.random.key(seed)
    model = MLP(3, 2, hidden, key=key)
    buf = ReplayBuffer.create({"x": jnp.zeros(3)}, 5).add({"x": jnp.ones(3)})
    return {"state": TrainState.create(model, TX), "buffer": buf, "key": jax.random.split(key)[0]}


def test_round_trip_is_bit_exact(tmp_path):
    tree = make_tree()
    path = str(tmp_path / "a.ckpt")
    ck.save(path, tree, config=Cfg(), meta={"step": 3})
    like = eqx.filter_eval_shape(make_tree, 1)
    restored, meta = ck.restore(path, like, config=Cfg())
    assert meta == {"step": 3}
    assert_trees_equal(restored, tree)
    assert jax.tree.structure(restored) == jax.tree.structure(tree)


def test_corrupt_and_truncated_files(tmp_path):
    path = str(tmp_path / "a.ckpt")
    ck.save(path, make_tree())
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[:-10])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ck.restore(path, make_tree())
    with open(path, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(CheckpointError, match="not an eqxrl checkpoint"):
        ck.restore(path, make_tree())
    with pytest.raises(CheckpointError, match="No checkpoint"):
        ck.restore(str(tmp_path / "missing.ckpt"), make_tree())


def test_other_config_or_layout_is_named(tmp_path):
    path = str(tmp_path / "a.ckpt")
    ck.save(path, make_tree(), config=Cfg())
    with pytest.raises(CheckpointError, match=r"lr: 0.001 in the checkpoint vs 0.01 given"):
        ck.restore(path, make_tree(), config=Cfg(lr=1e-2))
    with pytest.raises(CheckpointError, match=r"has shape \(8, 3\).*expects \(16, 3\)"):
        ck.restore(path, make_tree(hidden=(16,)))
    with pytest.raises(CheckpointError, match="does not match the expected state layout"):
        ck.restore(path, {"other": jnp.zeros(2)})


def test_killed_write_leaves_previous_checkpoint_readable(tmp_path):
    directory = str(tmp_path)
    tree = make_tree()
    ck.save(ck.checkpoint_path(directory, 10), tree)
    # A run killed while writing step 20 leaves only a partial temporary file behind.
    with open(ck.checkpoint_path(directory, 20) + ".tmp-99999", "wb") as f:
        f.write(b"partial")
    assert [s for s, _ in ck.list_checkpoints(directory)] == [10]
    restored, _ = ck.restore(ck.list_checkpoints(directory)[-1][1], tree)
    assert_trees_equal(restored, tree)
    ck.save(ck.checkpoint_path(directory, 30), tree)
    ck.save(ck.checkpoint_path(directory, 40), tree)
    ck.prune(directory, keep=2)
    assert [s for s, _ in ck.list_checkpoints(directory)] == [30, 40]
    assert not [n for n in os.listdir(directory) if ".tmp-" in n]


class _StackedEnsemble(eqx.Module):
    """An Ensemble as eqxrl stored it before it kept its members as a tuple."""

    stacked: eqx.Module
    num: int = eqx.field(static=True)


@pytest.mark.parametrize("agents", [None, 2])
def test_checkpoint_of_stacked_ensemble_restores_into_members(tmp_path, agents):
    """A checkpoint from before Ensemble kept a tuple (members stacked on one axis, behind the
    agent axis when there are several agents) restores into today's layout, member by member;
    the optimiser state's mirrored leaves included."""
    from eqxrl import ADAM, Ensemble, QFunction

    make = lambda k: QFunction(3, 2, (4,), key=k)  # noqa: E731
    new = Ensemble(make, 2, key=jax.random.key(0))
    stacked = Ensemble(make, 2, key=jax.random.key(0), vectorise=True)
    old = TrainState.create(_StackedEnsemble(stacked.members, 2), ADAM)
    like = TrainState.create(new, ADAM)
    if agents:  # an agent axis first, agent j's weights shifted by j
        old = jax.tree.map(lambda x: jnp.stack([x + j for j in range(agents)]), old)
        like = jax.tree.map(lambda x: jnp.stack([x] * agents), like)
    path = str(tmp_path / "old.ckpt")
    ck.save(path, {"state": old})
    tree, _ = ck.restore(path, {"state": like})
    got = tree["state"].model
    for i in range(2):
        for a, b in zip(jax.tree.leaves(got.members[i]), jax.tree.leaves(old.model.stacked),
                        strict=True):
            want = b[:, i] if agents else b[i]
            assert a.shape == want.shape
            assert bool(jnp.all(a == want))
    mu = tree["state"].opt_state.inner_state[0].mu.members[1].net.layers[0].weight
    assert mu.shape == (((agents,) if agents else ()) + (4, 5))
    with pytest.raises(CheckpointError, match="does not match the expected state layout"):
        ck.restore(path, {"state": TrainState.create(Ensemble(make, 3, key=jax.random.key(0)),
                                                      ADAM)})


def test_head_rows_cuts_exactly_with_one_program_per_power_of_two():
    """A filling buffer is checkpointed at a new row count each time; eager slicing compiled
    and kept a program per count (a run's memory grew ~10 MB per checkpoint)."""
    import numpy as np

    from eqxrl.core import tree

    x = jnp.arange(2 * 100 * 3, dtype=jnp.float32).reshape(2, 100, 3)  # (agent, row, feature)
    before = tree._first._cache_size()
    for rows in range(0, 101, 3):
        cut = tree.head_rows(x, 1, rows)
        assert isinstance(cut, np.ndarray) and cut.shape == (2, rows, 3)
        np.testing.assert_array_equal(cut, np.asarray(x)[:, :rows])
    assert tree._first._cache_size() - before <= 8  # sizes 1, 2, 4, ..., 64 and the full 100


def test_a_run_setting_added_later_keeps_older_checkpoints_loading():
    from eqxrl.run.checkpoints import config_differences

    saved = {"run": {"seed": 0}, "lr": 1.0}
    want = {"run": {"seed": 0, "offline_data": ""}, "lr": 1.0}
    defaults = {"run": {"seed": 0, "offline_data": ""}, "lr": 1.0}
    assert config_differences(want, saved, defaults) == {}
    changed = {"run": {"seed": 0, "offline_data": "d.hdf5"}, "lr": 1.0}  # not its default
    assert set(config_differences(changed, saved, defaults)) == {"run"}

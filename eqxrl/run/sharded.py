"""Checkpoints of state sharded over several processes (`jax.distributed`), with orbax.

A multi-process run saves with orbax-checkpoint (`pip install 'eqxrl[multihost]'`): every
process writes its own shards, the primary process writes the JSON metadata, and orbax commits
the step atomically (a step folder appears only when complete), so a job killed mid-save
resumes from the previous step. Restoring takes the target shardings, so a run resumes on
another number of processes or devices. Single-process runs keep `eqxrl.run.checkpoints`.

A step is `<run_dir>/checkpoints/<step>/` with items `state` (the arrays; PRNG keys stored as
their key data) and `meta` (`{"config": ..., "meta": ...}`, JSON).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from eqxrl.run.checkpoints import CheckpointError, config_dict, config_differences, is_key, key_impl


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:
        raise ImportError(
            "A multi-process run checkpoints with orbax-checkpoint: pip install "
            "'eqxrl[multihost]'."
        ) from err
    return ocp


def _manager(directory: str, keep: int | None = None) -> Any:
    ocp = _orbax()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                           create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=("state", "meta"))


def is_sharded_dir(directory: str) -> bool:
    """Whether `directory` holds orbax step folders (a multi-process run's checkpoints)."""
    return os.path.isdir(directory) and any(
        n.isdigit() and os.path.isdir(os.path.join(directory, n)) for n in os.listdir(directory)
    )


def steps(directory: str) -> list[int]:
    """Complete checkpoint steps in `directory`, oldest first."""
    if not is_sharded_dir(directory):
        return []
    return sorted(_manager(directory).all_steps())


def save(directory: str, step: int, tree: Any, *, config: Any, meta: dict[str, Any],
         keep: int) -> None:
    """Save `tree` (arrays may be sharded over processes) at `step`; every process calls it."""
    ocp = _orbax()
    arrays = jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, tree)
    manager = _manager(directory, keep)
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(arrays),
        meta=ocp.args.JsonSave({"config": config_dict(config), "meta": meta}),
    ))
    manager.wait_until_finished()
    manager.close()


def restore(directory: str, step: int | None, like: Any, *, config: Any = None,
            strict: bool = True, defaults: dict[str, Any] | None = None,
            ) -> tuple[Any, dict[str, Any]]:
    """Load `step` (the newest by default) into `like`; return `(tree, meta)`.

    `like` holds `jax.ShapeDtypeStruct`s (with `sharding=` to place the arrays) or is a
    function of the metadata that returns them, as in `eqxrl.run.checkpoints.restore`. With
    `strict=False`, saved arrays that `like` does not have are skipped.
    """
    ocp = _orbax()
    manager = _manager(directory)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"{directory!r} holds no complete checkpoint.")
    saved = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    diff = [] if config is None else sorted(config_differences(config, saved["config"], defaults))
    if diff:
        raise CheckpointError(f"{directory}/{step} belongs to a different config ({diff}).")
    if callable(like) and not hasattr(like, "shape"):
        like = like(saved["meta"])

    def target(x):
        if not is_key(x):
            return x
        shape = (*x.shape, *key_impl(x).key_shape)
        return jax.ShapeDtypeStruct(shape, jnp.uint32, sharding=getattr(x, "sharding", None))

    item = jax.tree.map(target, like)
    arrays = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=not strict)))["state"]
    manager.close()
    tree = jax.tree.map(
        lambda x, t: jax.random.wrap_key_data(x, impl=key_impl(t)) if is_key(t) else x,
        arrays, like)
    return tree, saved["meta"]

"""Save and restore whole training states atomically, with clear errors for bad files.

A checkpoint file is `MAGIC | header length (8 bytes) | JSON header | payload`, where the
payload is an `.npz` of every array leaf keyed by its PyTree path, and the header holds the
payload's SHA-256, the leaf layout, the run config and free-form metadata. Files are written
to a temporary name and renamed, so a run killed mid-write leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

MAGIC = b"EQXRLCK1"


_NAME = re.compile(r"^step_(\d+)\.ckpt$")


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, truncated, or belongs to another config or layout."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint file whose bytes cannot be read back: not one, truncated or corrupt."""


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-normal dict of a dataclass config (tuples become lists)."""
    if config is None:
        return {}
    raw = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps(raw, default=str))


def config_differences(
    config: Any, saved: dict[str, Any], defaults: dict[str, Any] | None = None
) -> dict[str, tuple[Any, Any]]:
    """`{field: (saved value, config's value)}` where a checkpoint's config differs from
    `config`. With `defaults` (`config_io.field_defaults`), a field the saved config lacks
    counts as equal while `config` holds its default: the field was added after the checkpoint
    was written (run folders of earlier versions); so does a field of a nested config (`run`).
    """
    want, defaults = config_dict(config), defaults or {}
    saved = dict(saved)
    for k, value in want.items():  # nested settings (`run`) gain fields the same way
        default = defaults.get(k)
        if isinstance(value, dict) and isinstance(saved.get(k), dict) and isinstance(default, dict):
            saved[k] = saved[k] | {f: v for f, v in value.items()
                                   if f not in saved[k] and f in default and default[f] == v}
    added = {k for k in want if k not in saved and k in defaults and want[k] == defaults[k]}
    return {k: (saved.get(k), want.get(k)) for k in sorted(set(want) | set(saved))
            if k not in added and saved.get(k) != want.get(k)}


def is_key(x: Any) -> bool:
    """Whether `x` is an array (or a template's `ShapeDtypeStruct`) of typed PRNG keys."""
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def key_impl(x: Any) -> Any:
    """The PRNG implementation of the key array `x`, or of a template's `ShapeDtypeStruct`
    (which `jax.random.key_impl` does not accept)."""
    return jax.random.key_impl(x) if isinstance(x, jax.Array) else x.dtype._impl


def _is_array_like(x: Any) -> bool:
    # Arrays, and the ShapeDtypeStructs of a template made with eval_shape.
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _leaves(tree: PyTree) -> list[tuple[str, Any]]:
    return [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if _is_array_like(leaf)
    ]


def save(path: str, tree: PyTree, *, config: Any = None, meta: dict | None = None) -> None:
    """Write every array leaf of `tree` (keys included) to `path`, atomically."""
    arrays, layout = {}, []
    for name, leaf in _leaves(tree):
        if is_key(leaf):
            layout.append([name, list(leaf.shape), str(leaf.dtype)])
            leaf = jax.random.key_data(leaf)
        else:
            layout.append([name, list(np.shape(leaf)), str(np.asarray(leaf).dtype)])
        arrays[name] = np.asarray(jax.device_get(leaf))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    header = json.dumps(
        {
            "format": 1,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "layout": layout,
            "config": config_dict(config),
            "meta": meta or {},
        }
    ).encode()
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(MAGIC + len(header).to_bytes(8, "little") + header + payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_header(path: str) -> tuple[dict[str, Any], bytes]:
    """Read and verify a checkpoint file; return its header and payload bytes."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"No checkpoint at {path!r}.") from None
    if not blob.startswith(MAGIC):
        raise DamagedCheckpoint(f"{path!r} is not an eqxrl checkpoint (bad magic bytes).")
    n = int.from_bytes(blob[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    try:
        header = json.loads(blob[start : start + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DamagedCheckpoint(f"{path!r} is corrupt: its header cannot be read.") from None
    payload = blob[start + n :]
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise DamagedCheckpoint(
            f"{path!r} is corrupt or truncated: its checksum does not match "
            f"({len(payload)} payload bytes)."
        )
    return header, payload


def restore(
    path: str, like: PyTree, *, config: Any = None, strict: bool = True,
    defaults: dict[str, Any] | None = None,
) -> tuple[PyTree, dict[str, Any]]:
    """Load the checkpoint at `path` into the structure of `like`; return `(tree, meta)`.

    `like` is a template with the right structure, shapes and dtypes (for example from
    `eqx.filter_eval_shape(init, ...)`), or a plain function of the file's metadata that
    returns one (when shapes depend on what was saved; the file is still read once). With
    `config`, the file must have been saved with an equal config; any difference is named in
    the error; fields it lacks compare equal to their `defaults`, as in `config_differences`.
    With `strict=False`, saved leaves that `like` does not have are skipped (to load
    only part of a checkpoint, such as the state).
    """
    header, payload = read_header(path)
    if inspect.isfunction(like):  # not any callable: Equinox modules are callable templates
        like = like(header["meta"])
    if config is not None:
        diff = config_differences(config, header["config"], defaults)
        if diff:
            shown = ", ".join(
                f"{k}: {a!r} in the checkpoint vs {b!r} given" for k, (a, b) in diff.items()
            )
            raise CheckpointError(f"{path!r} belongs to a different config ({shown}).")
    saved = {name: (shape, dtype) for name, shape, dtype in header["layout"]}
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    shapes = {jax.tree_util.keystr(p): tuple(leaf.shape) for p, leaf in flat
              if _is_array_like(leaf)}
    wanted = set(shapes)
    members = _stacked_members({n: shapes[n] for n in wanted - set(saved)}, saved)
    sources = {old for old, _, _ in members.values()}
    with np.load(io.BytesIO(payload)) as npz:
        arrays = {name: npz[name] for name in npz.files if name in wanted | sources}
    for name, (old, i, axis) in members.items():  # an Ensemble saved in its stacked layout
        arrays[name] = np.take(arrays[old], i, axis=axis)
        saved[name] = (list(arrays[name].shape), saved[old][1])
    missing = sorted(wanted - set(saved))
    extra = sorted(set(saved) - wanted - sources) if strict else []
    if missing or extra:
        raise CheckpointError(
            f"{path!r} does not match the expected state layout: missing {missing[:5]}, "
            f"unexpected {extra[:5]}. Was it written by another algorithm or version?"
        )
    values = []
    for p, leaf in flat:
        name = jax.tree_util.keystr(p)
        if not _is_array_like(leaf):
            values.append(leaf)
            continue
        shape, dtype = saved[name]
        want_dtype = str(leaf.dtype)
        if tuple(shape) != tuple(leaf.shape) or dtype != want_dtype:
            raise CheckpointError(
                f"{path!r}: leaf {name} has shape {tuple(shape)} and dtype {dtype}, but the "
                f"state expects {tuple(leaf.shape)} and {want_dtype} (another config?)."
            )
        value = jnp.asarray(arrays[name])
        if is_key(leaf):
            value = jax.random.wrap_key_data(value, impl=key_impl(leaf))
        values.append(value)
    tree = jax.tree_util.tree_unflatten(treedef, values)
    return tree, header["meta"]


_MEMBER = re.compile(r"\.members\[(\d+)\]")


def _stacked_members(
    missing: dict[str, tuple[int, ...]], saved: dict[str, tuple]
) -> dict[str, tuple[str, int, int]]:
    """Where each missing `Ensemble` member leaf lies in a checkpoint that stored the members
    stacked (eqxrl before Ensemble kept them as a tuple): `{name: (saved name, member, axis)}`.

    `...members[i].rest` was `...stacked.rest` with the members on one axis: axis 0, or axis 1
    behind the agent axis of a several-agent run. The axis is the one that fits every leaf;
    anything else gives `{}` (and the usual layout error).
    """
    plan = {}
    for name in missing:
        m = _MEMBER.search(name)
        old = m and name[: m.start()] + ".stacked" + name[m.end():]
        if not m or old not in saved:
            return {}
        plan[name] = (old, int(m.group(1)))
    for axis in (1, 0):
        def fits(name, old, i, axis=axis):
            shape = tuple(saved[old][0])
            return (len(shape) == len(missing[name]) + 1 and axis < len(shape)
                    and i < shape[axis] and shape[:axis] + shape[axis + 1:] == missing[name])

        if plan and all(fits(name, old, i) for name, (old, i) in plan.items()):
            return {name: (old, i, axis) for name, (old, i) in plan.items()}
    return {}


def checkpoint_path(directory: str, step: int) -> str:
    """Where the checkpoint of `step` lives in `directory`."""
    return os.path.join(directory, f"step_{step:010d}.ckpt")


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """`(step, path)` of complete checkpoints in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = [
        (int(m.group(1)), os.path.join(directory, n))
        for n in os.listdir(directory)
        if (m := _NAME.match(n))
    ]
    return sorted(found)


def prune(directory: str, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (and stale temporary files)."""
    for _, path in list_checkpoints(directory)[:-keep]:
        os.remove(path)
    for name in os.listdir(directory):
        if ".ckpt.tmp-" in name and not name.endswith(f".tmp-{os.getpid()}"):
            os.remove(os.path.join(directory, name))

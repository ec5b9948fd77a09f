"""What a checkpoint keeps of a replay buffer (its filled rows and counters), and back."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eqxrl.core.spec import EnvSpec
from eqxrl.core.tree import head_rows
from eqxrl.data.frames import FrameReplayBuffer
from eqxrl.data.replay import ReplayBuffer


def filled_rows(buffer: ReplayBuffer, rows: int | None = None) -> dict[str, Any]:
    """The filled rows (`rows`, by default read from the buffer) of a replay buffer and its
    counters: what a checkpoint stores. A buffer of several agents (counters with an agent
    axis) keeps its agent axis first."""
    rows = int(np.max(np.asarray(buffer.size))) if rows is None else rows
    axis = np.ndim(buffer.size)
    data = jax.tree.map(lambda x: head_rows(x, axis, rows), buffer.data)
    return {"data": data, "position": buffer.position, "size": buffer.size}


def filled_rows_like(example: Any, rows: int) -> dict[str, Any]:
    """The template of `filled_rows`' output for `rows` rows laid out like `example`."""
    counter = jax.ShapeDtypeStruct((), jnp.int32)
    data = jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows, *x.shape), x.dtype), example)
    return {"data": data, "position": counter, "size": counter}


def from_filled_rows(saved: dict[str, Any], example: Any, capacity: int) -> ReplayBuffer:
    """A replay buffer of `capacity` rows from `filled_rows`' output (the rest are zeros)."""
    empty = ReplayBuffer.create(example, capacity)
    data = jax.tree.map(lambda buf, x: buf.at[: x.shape[0]].set(x), empty.data, saved["data"])
    return ReplayBuffer(data, saved["position"], saved["size"], capacity)


def make_buffer(spec: EnvSpec, capacity: int) -> ReplayBuffer | FrameReplayBuffer:
    """The replay of the online loops for `spec`: a `FrameReplayBuffer` (each frame stored
    once) when its observations stack frames, else a `ReplayBuffer` of `Transition`s."""
    if spec.frame_stack > 1:
        return FrameReplayBuffer.create(spec, capacity)
    return ReplayBuffer.create(spec.example_transition(), capacity)


def buffer_saved(buffer: ReplayBuffer | FrameReplayBuffer, rows: int
                 ) -> tuple[dict[str, Any], dict[str, int]]:
    """What a checkpoint keeps of a replay buffer whose first `rows` rows are filled, and the
    sizes (`buffer_rows`, `buffer_frames`) its metadata needs to read it back. A frame buffer
    keeps only the frames its rows can still read (`buffer_format` 2: the newest frames)."""
    if isinstance(buffer, FrameReplayBuffer):
        frames = buffer.frames_needed()
        return buffer.filled(rows, frames), {"buffer_rows": rows, "buffer_frames": frames,
                                             "buffer_format": 2}
    return filled_rows(buffer, rows), {"buffer_rows": rows}


def buffer_saved_like(spec: EnvSpec, capacity: int, meta: dict[str, Any]) -> dict[str, Any]:
    """The template of `buffer_saved`'s tree, from the checkpoint's metadata (a frame
    buffer's checkpoint without `buffer_format` kept the first frames of its ring)."""
    if spec.frame_stack > 1:
        layout = meta.get("buffer_format", 1)
        if layout not in (1, 2):
            raise ValueError(f"the checkpoint's replay buffer has buffer_format {layout}, which "
                             "this version of eqxrl cannot read (1 or 2); was it written by a "
                             "newer one?")
        return FrameReplayBuffer.filled_like(spec, capacity, meta["buffer_rows"],
                                             meta["buffer_frames"], newest=layout == 2)
    return filled_rows_like(spec.example_transition(), meta["buffer_rows"])


def buffer_from_saved(saved: dict[str, Any], spec: EnvSpec, capacity: int
                      ) -> ReplayBuffer | FrameReplayBuffer:
    """The replay buffer `buffer_saved` kept."""
    if spec.frame_stack > 1:
        return FrameReplayBuffer.from_filled(saved, spec, capacity)
    return from_filled_rows(saved, spec.example_transition(), capacity)

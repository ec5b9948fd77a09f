"""`FrameReplayBuffer`: replay for frame-stacked observations that stores every frame once.

An env that stacks its last k frames (`make_pixel_env(..., frame_stack=k)`, Atari) gives
observations whose last axis holds k frames, oldest first: `(h, w, k·c)` images, `(k·d,)`
states. A plain `ReplayBuffer` keeps each frame 2k times (k in `obs`, k in `next_obs`, over k
steps). This buffer keeps the newest frame of each step once, in a ring of frames, and
rebuilds both stacks when it samples. Memory per transition: one frame (plus one per episode,
for its first frame), against 2k.

Rules it relies on, as the online loop keeps them: the transitions of one buffer come from one
env in order; a stack at an episode's start repeats its first frame (gymnasium's
`FrameStackObservation` default, `padding_type="reset"`). The frame ring holds
`capacity + capacity // 8 + k` frames; when episodes are shorter than 8 steps on average, the
oldest rows lose their frames first and are no longer sampled (`size` counts the rows that can
be).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int, PRNGKeyArray, PyTree

from eqxrl.core.spec import EnvSpec
from eqxrl.core.tree import head_rows, rounded_rows
from eqxrl.core.types import NStepTransition, Transition
from eqxrl.data.dataset import Dataset
from eqxrl.data.replay import n_step_windows

# The per-row arrays and the counters of a FrameReplayBuffer (what a checkpoint keeps of it).
ROW_FIELDS = ("action", "reward", "terminated", "truncated", "frame", "start")


COUNTER_FIELDS = ("position", "size", "frames_written", "episode_start", "ended")


def frame_capacity(capacity: int, stack: int) -> int:
    """Frames the ring of a buffer of `capacity` rows holds."""
    return capacity + capacity // 8 + stack


class FrameReplayBuffer(eqx.Module):
    """A ring of transitions whose observations are rebuilt from a ring of single frames.

    `add`, `sample` and `sample_n_step` are pure and jittable and take and give full
    `Transition`s (stacked observations), like `ReplayBuffer`'s.
    """

    frames: PyTree  # each obs leaf's newest frame: (frame_capacity, *shape[:-1], shape[-1] // k)
    action: Array
    reward: Array
    terminated: Bool[Array, " capacity"]
    truncated: Bool[Array, " capacity"]
    frame: Int[Array, " capacity"]  # the global index of each row's obs frame (its newest)
    start: Int[Array, " capacity"]  # the global index of the first frame of each row's episode
    position: Int[Array, ""]  # the row written next
    size: Int[Array, ""]  # rows that can be sampled (the newest ones)
    frames_written: Int[Array, ""]
    episode_start: Int[Array, ""]
    ended: Bool[Array, ""]  # whether the last row ended its episode (the next starts one)
    capacity: int = eqx.field(static=True)
    stack: int = eqx.field(static=True)
    frame_capacity: int = eqx.field(static=True)  # frames the ring holds

    @classmethod
    def create(cls, spec: EnvSpec, capacity: int) -> FrameReplayBuffer:
        """An empty buffer for the transitions of `spec` (whose `frame_stack` is k)."""
        if capacity < 1:
            raise ValueError(f"FrameReplayBuffer capacity must be >= 1, got {capacity}.")
        k = spec.frame_stack
        n_frames = frame_capacity(capacity, k)

        def frame_ring(leaf):
            return jnp.zeros((n_frames, *leaf.shape[:-1], leaf.shape[-1] // k), leaf.dtype)

        example = spec.example_transition()
        zeros = lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x))  # noqa: E731
        zero = jnp.zeros((), jnp.int32)
        return cls(
            frames=jax.tree.map(frame_ring, spec.obs_structure),
            action=zeros(example.action), reward=zeros(example.reward),
            terminated=zeros(example.terminated), truncated=zeros(example.truncated),
            frame=jnp.zeros(capacity, jnp.int32), start=jnp.zeros(capacity, jnp.int32),
            position=zero, size=zero, frames_written=zero, episode_start=zero,
            ended=jnp.ones((), bool), capacity=capacity, stack=k, frame_capacity=n_frames,
        )

    def _newest(self, obs: PyTree) -> PyTree:
        return jax.tree.map(lambda x: x[..., x.shape[-1] - x.shape[-1] // self.stack:], obs)

    def add(self, row: Transition) -> FrameReplayBuffer:
        """Store one transition (stacked `obs` and `next_obs`): its newest frames only."""
        n_frames = self.frame_capacity
        new_episode = self.ended
        g = self.frames_written
        first = new_episode.astype(jnp.int32)
        # A new episode stores its first frame at g and the next frame at g + 1; a continuing
        # one only the next frame at g (its obs frame is the previous row's next frame). One
        # scatter of two rows: when the episode continues both rows are the next frame at g.
        where = jnp.stack([g, g + first]) % n_frames

        def write(ring, obs_frame, next_frame):
            rows = jnp.stack([jnp.where(new_episode, obs_frame, next_frame), next_frame])
            return ring.at[where].set(rows)

        frames = jax.tree.map(write, self.frames, self._newest(row.obs),
                              self._newest(row.next_obs))
        obs_frame = g + first - 1
        episode_start = jnp.where(new_episode, g, self.episode_start)
        i = self.position
        buffer = eqx.tree_at(
            lambda b: (b.frames, b.action, b.reward, b.terminated, b.truncated, b.frame,
                       b.start, b.position, b.size, b.frames_written, b.episode_start, b.ended),
            self,
            (frames, self.action.at[i].set(row.action), self.reward.at[i].set(row.reward),
             self.terminated.at[i].set(row.terminated), self.truncated.at[i].set(row.truncated),
             self.frame.at[i].set(obs_frame), self.start.at[i].set(episode_start),
             (i + 1) % self.capacity, jnp.minimum(self.size + 1, self.capacity),
             g + first + 1, episode_start, row.terminated | row.truncated),
        )
        return buffer._drop_overwritten()

    def _drop_overwritten(self) -> FrameReplayBuffer:
        """Stop sampling the oldest rows whose stacks reach frames the ring has overwritten."""
        oldest_kept = self.frames_written - self.frame_capacity

        def stale(size):
            oldest = (self.position - size) % self.capacity
            return (size > 0) & (self.frame[oldest] - (self.stack - 1) < oldest_kept)

        size = jax.lax.while_loop(stale, lambda size: size - 1, self.size)
        return eqx.tree_at(lambda b: b.size, self, size)

    def _stacks(self, frame: Int[Array, " batch"], start: Int[Array, " batch"]) -> PyTree:
        """The stacked observations whose newest frames are `frame` (global indices)."""
        offsets = jnp.arange(self.stack) - (self.stack - 1)  # oldest first
        which = jnp.maximum(frame[:, None] + offsets[None, :], start[:, None]) % (
            self.frame_capacity)

        def stack(ring):
            frames = ring[which]  # (batch, k, *shape[:-1], c)
            return jnp.concatenate([frames[:, j] for j in range(self.stack)], axis=-1)

        return jax.tree.map(stack, self.frames)

    def _rows(self, key: PRNGKeyArray, batch_size: int) -> Int[Array, " batch"]:
        if not isinstance(self.size, jax.core.Tracer) and int(self.size) == 0:
            raise ValueError(
                "FrameReplayBuffer.sample: the buffer is empty (size 0), so it cannot give "
                f"batch_size={batch_size} rows; add transitions first.")
        back = jax.random.randint(key, (batch_size,), 0, jnp.maximum(self.size, 1))
        return (self.position - 1 - back) % self.capacity

    def sample(self, key: PRNGKeyArray, batch_size: int) -> Transition:
        """`batch_size` transitions drawn uniformly from the `size` newest rows, with replacement,
        their stacks rebuilt. Under a transformation an empty buffer is not checked."""
        i = self._rows(key, batch_size)
        return Transition(
            obs=self._stacks(self.frame[i], self.start[i]), action=self.action[i],
            reward=self.reward[i], next_obs=self._stacks(self.frame[i] + 1, self.start[i]),
            terminated=self.terminated[i], truncated=self.truncated[i])

    def sample_n_step(self, key: PRNGKeyArray, batch_size: int, n: int) -> NStepTransition:
        """n-step windows, as `ReplayBuffer.sample_n_step`, with their stacks rebuilt."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"FrameReplayBuffer.sample_n_step: n must be an int >= 1, got {n!r}.")
        first = self._rows(key, batch_size)
        rows, inside, steps, last = n_step_windows(
            first, self.terminated, self.truncated, self.position, self.capacity, n)
        return NStepTransition(
            obs=self._stacks(self.frame[first], self.start[first]), action=self.action[first],
            rewards=jnp.where(inside, self.reward[rows], 0.0),
            next_obs=self._stacks(self.frame[last] + 1, self.start[last]),
            terminated=self.terminated[last], steps=steps)

    def to_dataset(self) -> Dataset:
        """The sampleable rows, oldest first, with full stacks (host-side; not jittable)."""
        size, pos = int(self.size), int(self.position)
        order = (pos - size + np.arange(size)) % self.capacity
        i = jnp.asarray(order)
        return Dataset(Transition(
            obs=self._stacks(self.frame[i], self.start[i]), action=self.action[i],
            reward=self.reward[i], next_obs=self._stacks(self.frame[i] + 1, self.start[i]),
            terminated=self.terminated[i], truncated=self.truncated[i]))

    # ------------------------------------------------------------ checkpoints
    def frames_in_use(self) -> int:
        """Frames stored so far, at most the ring's size (the largest over an agent axis)."""
        return int(np.max(np.minimum(np.asarray(self.frames_written), self.frame_capacity)))

    def frames_needed(self) -> int:
        """The newest frames that the sampleable rows (and the next row) can still read: from
        the oldest such row's first stacked frame to the newest frame written (the largest
        count over an agent axis). Older frames in the ring are stale; once the rows have
        wrapped, up to `capacity // 8 + stack` of them."""
        return int(_frames_needed(self, np.ndim(self.position)))

    def filled(self, rows: int, frames: int) -> dict[str, Any]:
        """The first `rows` rows, the newest `frames` frames (oldest first; `frames_from`, the
        global index of the first, says where they go back in the ring) and every counter:
        what a checkpoint keeps (an agent axis, if any, stays first)."""
        axis = np.ndim(self.position)
        arrays, _ = eqx.partition(self, eqx.is_array)
        out = {}
        for name in ROW_FIELDS:
            out[name] = head_rows(getattr(arrays, name), axis, rows)
        out["frames"] = jax.tree.map(
            lambda x: newest_frames(x, arrays.frames_written, frames, axis), self.frames)
        out["frames_from"] = arrays.frames_written - frames
        for name in COUNTER_FIELDS:
            out[name] = getattr(arrays, name)
        return out

    @classmethod
    def filled_like(cls, spec: EnvSpec, capacity: int, rows: int, frames: int,
                    newest: bool = True) -> dict[str, Any]:
        """The template of `filled`'s output; `newest=False`: of a checkpoint of eqxrl before
        `frames_from`, which kept the first `frames` frames of the ring (no `frames_from`)."""
        full = jax.eval_shape(lambda: cls.create(spec, capacity))
        out = {}
        for name in ROW_FIELDS:
            x = getattr(full, name)
            out[name] = jax.ShapeDtypeStruct((rows, *x.shape[1:]), x.dtype)
        out["frames"] = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((frames, *x.shape[1:]), x.dtype), full.frames)
        if newest:
            out["frames_from"] = jax.ShapeDtypeStruct((), jnp.int32)
        for name in COUNTER_FIELDS:
            x = getattr(full, name)
            out[name] = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return out

    @classmethod
    def from_filled(cls, saved: dict[str, Any], spec: EnvSpec, capacity: int
                    ) -> FrameReplayBuffer:
        """A buffer from `filled`'s output (the rest zeros); without `frames_from` (an older
        checkpoint), its frames are the first of the ring."""
        empty = cls.create(spec, capacity)
        put = lambda buf, x: buf.at[: x.shape[0]].set(x)  # noqa: E731
        first = saved.get("frames_from")

        def put_frames(ring, x):
            if first is None:
                return put(ring, x)
            return ring.at[(first + jnp.arange(x.shape[0])) % ring.shape[0]].set(x)

        return eqx.tree_at(
            lambda b: (b.frames, *[getattr(b, n) for n in ROW_FIELDS + COUNTER_FIELDS]), empty,
            (jax.tree.map(put_frames, empty.frames, saved["frames"]),
             *[put(getattr(empty, n), saved[n]) for n in ROW_FIELDS],
             *[saved[n] for n in COUNTER_FIELDS]))


@functools.partial(jax.jit, static_argnums=1)
def _frames_needed(buffer: FrameReplayBuffer, axis: int) -> Int[Array, ""]:
    def one(b):
        oldest = (b.position - b.size) % b.capacity
        first = jnp.maximum(b.frame[oldest] - (b.stack - 1), b.start[oldest])
        return jnp.where(b.size > 0, jnp.minimum(b.frames_written - first, b.frame_capacity), 0)

    return jnp.max(jax.vmap(one)(buffer) if axis else one(buffer))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _newest(ring: Array, end: Array, size: int, axis: int) -> Array:
    def one(ring, end):
        return ring[(end - size + jnp.arange(size)) % ring.shape[0]]

    return jax.vmap(one)(ring, end) if axis else one(ring, end)


def newest_frames(ring: Array, end: Int[Array, "..."], count: int, axis: int) -> Any:
    """The `count` frames of `ring` (its frames on `axis`) before global index `end`, oldest
    first, for a checkpoint. As `head_rows`: on this process they come back as numpy,
    gathered in a power-of-two number and cut on the host (one compiled program per power of
    two, not one per checkpoint); a global array spread over processes is gathered exactly."""
    if not (isinstance(ring, jax.Array) and ring.is_fully_addressable):
        return _newest(ring, end, count, axis)
    size = rounded_rows(count, ring.shape[axis])
    cut = (slice(None),) * axis + (slice(size - count, size),)
    return np.asarray(_newest(ring, end, size, axis))[cut]

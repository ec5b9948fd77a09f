"""Throughput of eqxrl.vision: encoder forward+backward and the DrQ shift (against Flax), the
replay's bytes per transition for stacked frames, DrQ's update and pixel envs' steps/s.

Run: `python benchmarks/vision.py` (small defaults); `--help` for sizes. Every number is the
median wall time of `--iters` calls after two warm-up calls, with `block_until_ready`. When
flax is importable (the `bench` extra), the same architectures written in Flax linen run in
the same process; otherwise that column says "skipped".
"""

import argparse
import functools
import os
import statistics
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax  # noqa: F401  (imported so the timing includes nothing lazily imported later)

from eqxrl.vision import augment_batch, make_encoder, random_shift

try:
    import flax.linen as nn
except ImportError:  # the optional `bench` extra is not installed
    nn = None
else:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for drq_flax


def timeit(fn, *args, iters: int) -> float:
    """Median seconds per call of `fn(*args)` after two warm-up calls."""
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------- eqxrl
def eqx_step(name: str, images: jax.Array):
    """A jitted forward+backward of mean(features**2) for encoder `name`, and its args."""
    encoder, state = make_encoder(name, key=jax.random.key(0))
    if name.startswith("resnetv1"):
        # Training mode: BatchNorm batch statistics over the vmapped "batch" axis.
        def loss(m, s, x):
            forward = jax.vmap(m, in_axes=(0, None), out_axes=(0, None), axis_name="batch")
            features, s = forward(x, s)
            return jnp.mean(jnp.square(features)), s

        step = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))
        return step, (encoder, state, images)

    loss = lambda m, x: jnp.mean(jnp.square(jax.vmap(m)(x)))
    return eqx.filter_jit(eqx.filter_value_and_grad(loss)), (encoder, images)


# ----------------------------------------------------------------------------------- flax
if nn is not None:

    from drq_flax import Impala as FlaxImpala  # IMPALA as jaxrl_m writes it (16-32-32)

    class FlaxBasicBlock(nn.Module):
        channels: int
        stride: int

        @nn.compact
        def __call__(self, x):
            norm = functools.partial(nn.BatchNorm, use_running_average=False, momentum=0.9)
            conv = functools.partial(nn.Conv, use_bias=False)
            s = (self.stride, self.stride)
            y = nn.relu(norm()(conv(self.channels, (3, 3), s, padding=1)(x)))
            y = norm()(conv(self.channels, (3, 3), padding=1)(y))
            if x.shape != y.shape:
                x = norm()(conv(self.channels, (1, 1), s)(x))
            return nn.relu(x + y)

    class FlaxResNet18(nn.Module):
        """torchvision-layout ResNet-18 without classifier, BatchNorm in training mode."""

        @nn.compact
        def __call__(self, x):
            x = nn.Conv(64, (7, 7), (2, 2), padding=3, use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=False, momentum=0.9)(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
            for i, channels in enumerate((64, 128, 256, 512)):
                for j in range(2):
                    x = FlaxBasicBlock(channels, 2 if i > 0 and j == 0 else 1)(x)
            return jnp.mean(x, axis=(1, 2))

    def flax_step(name: str, images: jax.Array):
        model = {"impala": FlaxImpala, "resnetv1-18": FlaxResNet18}[name]()
        variables = model.init(jax.random.key(0), images[:1])
        params = variables["params"]
        extra = {k: v for k, v in variables.items() if k != "params"}

        @jax.jit
        def step(params, extra, x):
            def loss(p):
                features, new_extra = model.apply(
                    {"params": p, **extra}, x, mutable=list(extra.keys())
                )
                return jnp.mean(jnp.square(features)), new_extra

            return jax.value_and_grad(loss, has_aux=True)(params)

        return step, (params, extra, images)


def plain_jax_impala_step(images: jax.Array):
    """IMPALA on eqxrl's weights written the obvious plain-JAX way: whole-batch NHWC
    convolutions with HWIO kernels, no vmap and no modules. The same maths as
    `eqx_step("impala")`, so the ratio is what eqxrl's per-image, module-based code costs."""
    encoder, _ = make_encoder("impala", key=jax.random.key(0))
    params, static = eqx.partition(encoder, eqx.is_array)

    def conv(c, h):
        w = jnp.transpose(c.weight, (2, 3, 1, 0))  # (out, in, kh, kw) -> HWIO
        y = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + c.bias.reshape(1, 1, 1, -1)

    def loss(p, h):
        m = eqx.combine(p, static)
        for stack in m.stacks:
            h = jax.lax.reduce_window(conv(stack.conv, h), -jnp.inf, jax.lax.max,
                                      (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
            for block in stack.blocks:
                h = h + conv(block.conv2, jax.nn.relu(conv(block.conv1, jax.nn.relu(h))))
        return jnp.mean(jnp.square(jnp.reshape(jax.nn.relu(h), (h.shape[0], -1))))

    return jax.jit(jax.value_and_grad(loss)), (params, images)


def reference_shift(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """DrQ shift as jaxrl writes it: pad the whole batch, one randint, vmapped slices."""
    n, h, w, c = images.shape
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = jnp.pad(images, pad, mode="edge")
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per encoder step")
    parser.add_argument("--size", type=int, default=84, help="image height and width")
    parser.add_argument("--shift-batch", type=int, default=256, help="images per DrQ shift")
    parser.add_argument("--shift-channels", type=int, default=9, help="3 stacked RGB frames")
    parser.add_argument("--iters", type=int, default=5, help="timed calls after warm-up")
    parser.add_argument("--encoders", default="impala,resnetv1-18", help="comma-separated")
    parser.add_argument("--drq-batch", type=int, default=32,
                        help="batch of the DrQ update timing (0 skips it)")
    parser.add_argument("--learn-utd", type=int, default=2,
                        help="updates of the online learn call timed written out against the "
                             "scan (0 skips it)")
    parser.add_argument("--env-steps", type=int, default=300,
                        help="steps of each pixel env timed (0 skips them)")
    args = parser.parse_args()

    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; flax: "
        + ("yes" if nn is not None else "not installed, Flax columns skipped")
    )
    rows = []
    images = jax.random.uniform(jax.random.key(1), (args.batch, args.size, args.size, 3))
    for name in args.encoders.split(","):
        step, step_args = eqx_step(name, images)
        ours = timeit(step, *step_args, iters=args.iters)
        theirs = None
        if nn is not None and name in ("impala", "resnetv1-18"):
            f_step, f_args = flax_step(name, images)
            theirs = timeit(f_step, *f_args, iters=args.iters)
        label = f"{name} fwd+bwd {args.batch}x{args.size}x{args.size}x3"
        rows.append((label + " (vs Flax)", ours, theirs, args.batch))
        if name == "impala":
            hwc_step, hwc_args = plain_jax_impala_step(images)
            rows.append((label + " (vs plain JAX)", ours,
                         timeit(hwc_step, *hwc_args, iters=args.iters), args.batch))

    uint8 = jax.random.randint(
        jax.random.key(2),
        (args.shift_batch, args.size, args.size, args.shift_channels),
        0,
        256,
        dtype=jnp.int32,
    ).astype(jnp.uint8)
    ours_shift = jax.jit(functools.partial(augment_batch, random_shift))
    theirs_shift = jax.jit(reference_shift)
    key = jax.random.key(3)
    label = f"DrQ shift {args.shift_batch}x{args.size}x{args.size}x{args.shift_channels} uint8"
    rows.append(
        (
            label + " (vs jaxrl-style JAX)",
            timeit(ours_shift, key, uint8, iters=args.iters),
            timeit(theirs_shift, key, uint8, iters=args.iters),
            args.shift_batch,
        )
    )

    print(f"\n{'benchmark':58s} {'eqxrl ms':>9s} {'img/s':>8s} {'other ms':>9s} {'ratio':>6s}")
    for label, ours, theirs, n in rows:
        other = "skipped" if theirs is None else f"{1e3 * theirs:9.2f}"
        ratio = "" if theirs is None else f"{ours / theirs:6.2f}"
        print(f"{label:58s} {1e3 * ours:9.2f} {n / ours:8.0f} {other:>9s} {ratio:>6s}")
    print("\nratio = eqxrl time / other time (below 1: eqxrl is faster).")
    replay_bytes(args.size)
    if args.drq_batch:
        drq_updates(args.drq_batch, args.size, args.iters)
    if args.learn_utd:
        learn_calls(args.learn_utd, args.iters)
    if args.env_steps:
        env_frames(args.env_steps)


def replay_bytes(size: int, capacity: int = 100_000) -> None:
    """Bytes per transition of frame-stacked pixels: FrameReplayBuffer against a plain one."""
    import numpy as np

    from eqxrl import EnvSpec, ReplayBuffer
    from eqxrl.data.frames import FrameReplayBuffer
    from eqxrl.run.agents import tree_bytes

    print(f"\n{'replay, bytes per transition':44s} {'frames once':>12s} {'plain':>9s} "
          f"{'one frame':>10s}")
    for label, channels, k, actions in (("DrQ: 3 RGB frames", 9, 3, (6,)),
                                        ("Atari: 4 grayscale frames", 4, 4, ())):
        image = jax.ShapeDtypeStruct((size, size, channels), np.dtype("uint8"))
        if actions:
            spec = EnvSpec(image, actions, action_low=(-1.0,) * 6, action_high=(1.0,) * 6,
                           frame_stack=k)
        else:
            spec = EnvSpec(image, (), discrete=True, num_actions=6, frame_stack=k)
        ours = tree_bytes(jax.eval_shape(lambda s=spec: FrameReplayBuffer.create(s, capacity)))
        plain = tree_bytes(jax.eval_shape(
            lambda s=spec: ReplayBuffer.create(s.example_transition(), capacity)))
        frame = size * size * channels // k
        print(f"{label + f' {size}x{size}x{channels}':44s} {ours / capacity:12.0f} "
              f"{plain / capacity:9.0f} {frame:10d}")
    print(f"(capacity {capacity:,}; 'frames once' keeps {1 + 1 / 8:.3f} frames per row and "
          "~20 bytes of action, reward, flags and frame indices)")


def drq_updates(batch: int, size: int, iters: int) -> None:
    """DrQ updates per second on `batch` 84×84×9 uint8 observations (3 stacked RGB frames)."""
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for algorithms
    import eqxrl
    from eqxrl.algorithms import drq

    image = jax.ShapeDtypeStruct((size, size, 9), np.dtype("uint8"))
    spec = eqxrl.EnvSpec(image, (6,), action_low=(-1.0,) * 6, action_high=(1.0,) * 6,
                         frame_stack=3)
    config = drq.Config(run=eqxrl.OnlineRun(env_id="pixels:HalfCheetah-v5", batch_size=batch))
    state = drq.init(jax.random.key(0), spec, config)
    k = jax.random.split(jax.random.key(1), 3)
    obs = jax.random.randint(k[0], (batch, size, size, 9), 0, 256).astype(jnp.uint8)
    data = eqxrl.Transition(obs, jax.random.uniform(k[1], (batch, 6), minval=-1),
                            jax.random.normal(k[2], (batch,)), obs, jnp.zeros(batch, bool),
                            jnp.zeros(batch, bool))
    step = jax.jit(lambda s, b, key: drq.update(s, b, key, config)[0])
    seconds = timeit(step, state, data, jax.random.key(2), iters=iters)
    flops = step.lower(state, data, jax.random.key(2)).compile().cost_analysis()
    flops = flops.get("flops") if isinstance(flops, dict) else None
    rate = "" if not flops else f", {flops / seconds / 1e9:.1f} GFLOP/s"
    print(f"\nDrQ update, batch {batch} of {size}x{size}x9 uint8, {config.vision.encoder} encoder: "
          f"{1e3 * seconds:.1f} ms ({1 / seconds:.2f} updates/s{rate})")
    if nn is None:
        print("Flax DrQ: skipped (flax not installed; pip install -e '.[bench]')")
        return
    import drq_flax

    f_update, f_state = drq_flax.make(obs, 6)
    f_batch = {"obs": obs, "next_obs": obs, "action": data.action, "reward": data.reward,
               "terminated": jnp.zeros(batch)}
    f_step = lambda s, b, key: f_update(s, b, key)[0]  # noqa: E731
    theirs = timeit(f_step, f_state, f_batch, jax.random.key(2), iters=iters)
    print(f"Flax DrQ (same maths, benchmarks/drq_flax.py): {1e3 * theirs:.1f} ms "
          f"({1 / theirs:.2f} updates/s); eqxrl ÷ Flax time {seconds / theirs:.2f} "
          "(below 1: eqxrl is faster)")


def learn_calls(utd: int, iters: int) -> None:
    """The online loop's DrQ learn call at `--utd` > 1 (batch 8, 32-wide heads, frames of
    pixels:Pendulum-v1): its updates written out, against the same call as a `lax.scan`."""
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for algorithms
    import eqxrl
    from eqxrl.algorithms import drq
    from eqxrl.data import make_buffer
    from eqxrl.loops import host_steps as online
    from eqxrl.run.grid import make_agents

    run = eqxrl.OnlineRun(env_id="pixels:Pendulum-v1", batch_size=8, utd=utd, buffer_size=1000)
    config = drq.Config(run=run, hidden_dims=(32, 32))
    env = eqxrl.make_env(run.env_id)
    spec = eqxrl.spec_from_env(env)
    agents = make_agents(config.run, config.run.batch_size)
    obs, _ = env.reset(seed=0)
    rows = []
    for a in np.random.default_rng(0).uniform(-1, 1, (100, 1)).astype(np.float32):
        nxt, r, te, tr, _ = env.step(a)
        rows.append((obs[None], a[None], np.float32([r]), nxt[None], np.array([te]),
                     np.array([tr])))
        obs = nxt
    times, default = {}, online.UNROLL_IMAGE_UPDATES
    for name, limit in (("written out", default), ("lax.scan", 0)):
        online.UNROLL_IMAGE_UPDATES = limit
        state_key, buffer = eqxrl.jit(lambda: agents.init(
            lambda key, c, h: ((drq.init(key, spec, c, h), key), make_buffer(spec, 1000)),
            config))()
        fns = online.make_step_functions(spec, config, drq, state_key, buffer, agents)
        flat = (fns.sk.flatten(state_key), fns.buf.flatten(buffer))
        for row in rows:
            flat, _ = fns.random_step(flat, row)
        sk, buf = flat
        samples = []
        for _ in range(iters + 2):  # two warm-up calls; learn donates (consumes) its carry
            start = time.perf_counter()
            sk = jax.block_until_ready(fns.learn(sk, buf)[0])
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples[2:])
    online.UNROLL_IMAGE_UPDATES = default
    print(f"\nDrQ learn call, --utd {utd}, batch 8: written out {1e3 * times['written out']:.0f} "
          f"ms, lax.scan {1e3 * times['lax.scan']:.0f} ms (scan ÷ written out "
          f"{times['lax.scan'] / times['written out']:.1f})")


def env_frames(steps: int) -> None:
    """Env steps per second of the pixel envs the CLI makes (random actions, host side)."""
    import eqxrl

    print()
    for env_id in ("pixels:Pendulum-v1", "ALE/Pong-v5"):
        try:
            env = eqxrl.make_env(env_id)
        except ImportError as err:
            print(f"{env_id:24s} skipped ({err})")
            continue
        env.reset(seed=0)
        env.action_space.seed(0)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        rate = steps / (time.perf_counter() - start)
        shape = env.observation_space.shape
        print(f"{env_id:24s} {rate:8.0f} env steps/s, observations {shape} uint8")
        env.close()


if __name__ == "__main__":
    main()

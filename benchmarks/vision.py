"""Throughput of eqxrl.vision: encoder forward+backward and the DrQ shift, against Flax.

Run: `python benchmarks/vision.py` (small defaults); `--help` for sizes. Every number is the
median wall time of `--iters` calls after two warm-up calls, with `block_until_ready`. When
flax is importable (the `bench` extra), the same architectures written in Flax linen run in
the same process; otherwise that column says "skipped".
"""

import argparse
import functools
import statistics
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

    class FlaxImpala(nn.Module):
        """IMPALA CNN as jaxrl_m writes it (16-32-32, 2 residual blocks per stack)."""

        @nn.compact
        def __call__(self, x):
            for channels in (16, 32, 32):
                x = nn.Conv(channels, (3, 3), padding="SAME")(x)
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
                for _ in range(2):
                    y = nn.Conv(channels, (3, 3), padding="SAME")(nn.relu(x))
                    x = x + nn.Conv(channels, (3, 3), padding="SAME")(nn.relu(y))
            return jnp.reshape(nn.relu(x), (x.shape[0], -1))

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
        rows.append((label, ours, theirs, args.batch))

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


if __name__ == "__main__":
    main()

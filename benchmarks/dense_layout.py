"""The layout of a linear layer's weight gradient on XLA:CPU, and what the library's rule buys.

Run:  python benchmarks/dense_layout.py --mode layers
      python benchmarks/dense_layout.py --mode updates --algos sac iql td3 bc

eqxrl stores a layer's weight as `(out, in)` (Equinox's layout) and computes `x @ W.T`. Written
that way, the weight gradient is a product whose result is `(out, in)`; for a layer that widens
(a first layer on 17 observation features into 256 units), XLA:CPU computes that product
several times slower than the same product laid out `(in, out)` and transposed.
`eqxrl.nn.linear_product` (which `dense` calls) puts a barrier on the cotangent of `W.T`, so
the product comes out `(in, out)`, for layers with at most `SHORT` inputs and at least
`WIDENING` times as many outputs; forward values are untouched.

- `layers`: one layer's forward and backward (`grad` of a ReLU output's square, with respect
  to the weight and the input), rows batched with `vmap`, the obvious `x @ W.T` against the
  transposed gradient forced on, for widening, square and narrowing sizes, and under a `vmap`
  nested in another (where the transposed gradient loses). This is what the rule is read from.
- `updates`: each algorithm file's update in a `lax.scan`, compiled with the obvious
  `x @ W.T` everywhere (before) and as the library is (after), in the same process,
  interleaved. Prints the ratio and the largest difference between the two states after the
  scan (0 where the rule changes no bit).

Ratios are medians over interleaved repeats; above 1 means the transposed gradient (or the
library) is faster.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import statistics
import sys
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.jit_overhead import measure  # noqa: E402
from eqxrl import EnvSpec, NStepTransition, SarsaTransition, Transition  # noqa: E402
from eqxrl.core.jit import merge, split  # noqa: E402
from eqxrl.nn import mlp  # noqa: E402

LIBRARY_PRODUCT = mlp.linear_product


def obvious_product(x, weight):
    """`x @ W.T` as a user would write it: XLA picks the weight gradient's layout."""
    return x @ weight.T


def use_product(fn) -> None:
    """Make every eqxrl module that calls `linear_product` call `fn` (read when traced)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("eqxrl") and getattr(module, "linear_product", None) in (
                LIBRARY_PRODUCT, obvious_product):
            module.linear_product = fn


@dataclasses.dataclass(frozen=True)
class Args:
    mode: Literal["layers", "updates"] = "layers"
    algos: tuple[str, ...] = ("sac", "td3", "iql", "td3_bc", "bc", "rebrac", "tqc", "dqn", "cql",
                              "simbav2")
    """algorithm files whose updates `--mode updates` measures"""
    scan_length: int = 10
    """updates (or layer steps) per compiled call"""
    repeats: int = 8
    """interleaved timings of each side"""


def interleaved(fns: dict, args: tuple, per_call: int, repeats: int) -> dict[str, list[float]]:
    """µs per step of each compiled function on `args`: `jit_overhead.measure`'s interleaved
    timing, each run waited for."""
    runs = {name: (lambda f=f: jax.block_until_ready(f(*args))) for name, f in fns.items()}
    return measure(runs, per_call, repeats)


def layer_step(batch: tuple[int, ...], n_in: int, n_out: int, transposed: bool, length: int):
    """A compiled scan of `length` forward-and-backward passes of one layer."""

    def loss(w, x):
        def row(r):
            return jax.nn.relu(mlp.linear_product(r, w, "in_out" if transposed else "out_in"))

        f = row
        for _ in batch:  # one vmap per batch axis: nested when the batch has two axes
            f = jax.vmap(f)
        return jnp.sum(f(x) ** 2)

    @jax.jit
    def run(w, x):
        def body(c, _):
            gw, gx = jax.grad(loss, argnums=(0, 1))(w + c * 1e-9, x)
            return c + (gw.sum() + gx.sum()) * 1e-9, None

        return jax.lax.scan(body, jnp.zeros(()), None, length=length)[0]

    return run


def layers(a: Args) -> None:
    print("| rows | in → out | `x @ W.T` µs | transposed gradient µs | ratio |")
    print("|---|---|---|---|---|")
    cases = [((256,), 17, 256), ((256,), 23, 256), ((256,), 64, 256), ((256,), 128, 256),
             ((256,), 256, 256), ((256,), 256, 6), ((256,), 17, 1024), ((256,), 256, 1024),
             ((256,), 512, 2048),
             ((7680,), 23, 256), ((256, 30), 23, 256)]
    for batch, n_in, n_out in cases:
        w = jax.random.normal(jax.random.key(0), (n_out, n_in)) * 0.1
        x = jax.random.normal(jax.random.key(1), (*batch, n_in))
        fns = {side: layer_step(batch, n_in, n_out, side == "transposed", a.scan_length)
               for side in ("plain", "transposed")}
        t = interleaved(fns, (w, x), a.scan_length, a.repeats)
        ratio = statistics.median(p / b for p, b in zip(t["plain"], t["transposed"], strict=True))
        rows = " × ".join(map(str, batch)) + (" (nested vmap)" if len(batch) > 1 else "")
        print(f"| {rows} | {n_in} → {n_out} | {min(t['plain']):.1f} "
              f"| {min(t['transposed']):.1f} | {ratio:.2f} |")


def batches_for(name: str, config, length: int):
    """`length` random batches of the kind `name`'s update takes, HalfCheetah-sized."""
    discrete = name in ("dqn", "cql_discrete")
    obs_dim, n = (4 if discrete else 17), config.run.batch_size
    k = jax.random.split(jax.random.key(0), 4)
    obs = jax.random.normal(k[0], (length, n, obs_dim))
    next_obs = jax.random.normal(k[3], (length, n, obs_dim))
    action = (jax.random.randint(k[1], (length, n), 0, 2) if discrete
              else jax.random.uniform(k[1], (length, n, 6), minval=-1, maxval=1))
    reward, false = jax.random.normal(k[2], (length, n)), jnp.zeros((length, n), bool)
    if discrete:
        spec = EnvSpec(jax.ShapeDtypeStruct((obs_dim,), np.dtype("float32")), (), discrete=True,
                       num_actions=2)
    else:
        spec = EnvSpec(jax.ShapeDtypeStruct((obs_dim,), np.dtype("float32")), (6,),
                       action_low=(-1.0,) * 6, action_high=(1.0,) * 6)
    if name == "dqn":
        return spec, NStepTransition(obs, action, reward[..., None], next_obs, false,
                                     jnp.ones((length, n), jnp.int32))
    if name == "rebrac":
        return spec, SarsaTransition(obs, action, reward, next_obs, false, false, action,
                                     jnp.ones((length, n), bool))
    return spec, Transition(obs, action, reward, next_obs, false, false)


def updates(a: Args) -> None:
    print("| algorithm | batch | before upd/s | after upd/s | after ÷ before | max difference |")
    print("|---|---|---|---|---|---|")
    for name in a.algos:
        module = importlib.import_module(f"eqxrl.algorithms.{name}")
        config = module.Config()
        spec, batches = batches_for(name, config, a.scan_length)
        dynamic, static = split(module.init(jax.random.key(0), spec, config))
        key = jax.random.key(1)

        fns = {}
        for side, fn in (("before", obvious_product), ("after", LIBRARY_PRODUCT)):

            def scan(d, bs, k, module=module, config=config, static=static):
                # A new function per side: JAX caches traces by function, and
                # `linear_product` is read when the update is traced.
                body = lambda s, xs: (module.update(s, xs[0], xs[1], config)[0], None)  # noqa: E731
                keys = jax.random.split(k, a.scan_length)
                return split(jax.lax.scan(body, merge(d, static), (bs, keys))[0])[0]

            use_product(fn)
            try:
                fns[side] = jax.jit(scan).lower(dynamic, batches, key).compile()
            finally:
                use_product(LIBRARY_PRODUCT)
        outs = {side: f(dynamic, batches, key) for side, f in fns.items()}
        diff = max((float(jnp.max(jnp.abs(x - y))) for x, y in zip(*outs.values(), strict=True)
                    if jnp.issubdtype(x.dtype, jnp.floating)), default=0.0)
        t = interleaved(fns, (dynamic, batches, key), a.scan_length, a.repeats)
        ratio = statistics.median(b / f for b, f in zip(t["before"], t["after"], strict=True))
        print(f"| {name} | {config.run.batch_size} | {1e6 / statistics.median(t['before']):.1f} "
              f"| {1e6 / statistics.median(t['after']):.1f} | {ratio:.3f} | {diff:.1e} |",
              flush=True)


def main(a: Args) -> None:
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; scan of {a.scan_length}, "
          f"{a.repeats} interleaved repeats\n")
    layers(a) if a.mode == "layers" else updates(a)


if __name__ == "__main__":
    main(tyro.cli(Args))

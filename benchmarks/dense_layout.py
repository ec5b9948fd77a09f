"""The layout of a linear layer's weight gradient on XLA:CPU, and what it would do to updates.

Run:  python benchmarks/dense_layout.py --mode layers
      python benchmarks/dense_layout.py --mode updates --algos sac iql td3 bc

eqxrl stores a layer's weight as `(out, in)` (Equinox's layout) and computes `x @ W.T`
(`eqxrl.nn.dense`). The weight gradient is then a product whose result is `(out, in)`; for a
layer that widens (a first layer on 17 observation features into 256 units), XLA:CPU computes
that product several times slower than the same product laid out `(in, out)` and transposed.
Multiplying by `optimization_barrier(W.T)` gets the fast layout (the barrier stops XLA from
folding the transpose back into the product).

- `layers`: one layer's forward and backward (`grad` of a ReLU output's square, with respect
  to the weight and the input), rows batched with `vmap`, the obvious `x @ W.T` against the
  barrier, for widening, square and narrowing sizes, and under a `vmap` nested in another
  (where the barrier loses).
- `updates`: each algorithm file's update in a `lax.scan`, compiled as the library is (before)
  and with `dense` replaced by the rule "barrier when the output is at least 4x wider than the
  input" (after), in the same process, interleaved. Prints the ratio and the largest
  difference between the two states after the scan. The rule is not in the library: it
  changes the last bits of online runs (a run saved by an earlier version would no longer
  resume bit-exactly), see benchmarks/README.md.

Ratios are medians over interleaved repeats; above 1 means the barrier (or the rule) is faster.
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

LIBRARY_DENSE = mlp.dense
WIDENING = 4  # the rule measured: a barrier when the output is at least this much wider


def transposed_dense(layer, x):
    """`eqxrl.nn.dense` with the rule: a widening layer multiplies by a barriered `W.T`."""
    w = layer.weight
    transposed = w.T
    if WIDENING * w.shape[-1] <= w.shape[-2]:
        transposed = jax.lax.optimization_barrier(transposed)
    y = x @ transposed
    return y if layer.bias is None else y + jnp.broadcast_to(layer.bias, y.shape)


def use_dense(fn) -> None:
    """Make every eqxrl module that calls `dense` call `fn` (read when an update is traced)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("eqxrl") and getattr(module, "dense", None) in (LIBRARY_DENSE,
                                                                           transposed_dense):
            module.dense = fn


@dataclasses.dataclass(frozen=True)
class Args:
    mode: Literal["layers", "updates"] = "layers"
    algos: tuple[str, ...] = ("sac", "td3", "iql", "td3_bc", "bc", "rebrac", "tqc", "dqn")
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


def layer_step(batch: tuple[int, ...], n_in: int, n_out: int, barrier: bool, length: int):
    """A compiled scan of `length` forward-and-backward passes of one layer."""

    def loss(w, x):
        def row(r):
            wt = jax.lax.optimization_barrier(w.T) if barrier else w.T
            return jax.nn.relu(r @ wt)

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
    print("| rows | in → out | `x @ W.T` µs | barrier µs | ratio |")
    print("|---|---|---|---|---|")
    cases = [((256,), 17, 256), ((256,), 23, 256), ((256,), 64, 256), ((256,), 128, 256),
             ((256,), 256, 256), ((256,), 256, 6), ((256,), 17, 1024), ((256,), 256, 1024),
             ((7680,), 23, 256), ((256, 30), 23, 256)]
    for batch, n_in, n_out in cases:
        w = jax.random.normal(jax.random.key(0), (n_out, n_in)) * 0.1
        x = jax.random.normal(jax.random.key(1), (*batch, n_in))
        fns = {side: layer_step(batch, n_in, n_out, side == "barrier", a.scan_length)
               for side in ("plain", "barrier")}
        t = interleaved(fns, (w, x), a.scan_length, a.repeats)
        ratio = statistics.median(p / b for p, b in zip(t["plain"], t["barrier"], strict=True))
        rows = " × ".join(map(str, batch)) + (" (nested vmap)" if len(batch) > 1 else "")
        print(f"| {rows} | {n_in} → {n_out} | {min(t['plain']):.1f} "
              f"| {min(t['barrier']):.1f} | {ratio:.2f} |")


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
        for side, fn in (("before", LIBRARY_DENSE), ("after", transposed_dense)):

            def scan(d, bs, k, module=module, config=config, static=static):
                # A new function per side: JAX caches traces by function, and `dense` is read
                # when the update is traced.
                body = lambda s, xs: (module.update(s, xs[0], xs[1], config)[0], None)  # noqa: E731
                keys = jax.random.split(k, a.scan_length)
                return split(jax.lax.scan(body, merge(d, static), (bs, keys))[0])[0]

            use_dense(fn)
            try:
                fns[side] = jax.jit(scan).lower(dynamic, batches, key).compile()
            finally:
                use_dense(LIBRARY_DENSE)
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

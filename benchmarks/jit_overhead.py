"""Per-call overhead of `eqx.filter_jit`, `eqxrl.jit`, and `jax.jit` on a flat list of arrays.

Run:  python benchmarks/jit_overhead.py --calls 2000 --repeats 5

The argument is a realistic state: SAC's (HalfCheetah-sized: obs 17, action 6, 256x256, with
its optimiser states and target networks; 78 arrays). Four functions are compiled under each
variant (`x` is a scalar array, `s` the state):

- `(x, s) -> x + 1`: the state goes in only; pure call overhead (flattening the state,
  dispatch, and for `eqx.filter_jit` the wait on every call);
- `(x, s) -> (s, x + 1)` with `s` donated: in and out (the output aliases the donated buffers,
  so nothing is copied); pure call overhead, with rebuilding the output state;
- the same without donation: XLA then copies the state (3.2 MB) on every call, so this one
  also measures that copy (JAX does not forward an undonated input to the output);
- one real SAC update on a batch of 256, state donated, to put the overhead next to the work
  it wraps (the same batch and key every call, so that no per-call key op is timed).

Variants: (a) `eqx.filter_jit`; (b) `eqxrl.jit`; (c) `jax.jit` on the state's array leaves
(`eqxrl.core.split` once, then the list is passed from call to call and rebuilt only inside the
compiled function: what the online loop does). Each repeat times `--calls` calls of every
variant in turn (the order rotates between repeats, so that load from other jobs hits all of
them alike) and then waits for the results. Prints median microseconds per call, and ratios
taken within each repeat (median over repeats).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import eqxrl  # noqa: E402
from eqxrl import EnvSpec, Transition
from eqxrl.algorithms import sac  # noqa: E402
from eqxrl.core.jit import merge, split

VARIANTS = ("eqx.filter_jit", "eqxrl.jit", "jax.jit flat")


def make_batch(key, n, obs_dim, action_dim):
    k = jax.random.split(key, 4)
    return Transition(
        obs=jax.random.normal(k[0], (n, obs_dim)),
        action=jax.random.uniform(k[1], (n, action_dim), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n,)),
        next_obs=jax.random.normal(k[3], (n, obs_dim)),
        terminated=jnp.zeros((n,), bool),
        truncated=jnp.zeros((n,), bool),
    )


def fresh(state):
    """A copy of the state's arrays, so that each variant can donate its own."""
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, state)


def runners(
    fn: Callable, state, inputs, donate: bool, carry: bool, calls: int
) -> dict[str, Callable]:
    """For each variant, a function that makes `calls` calls of `fn(inputs, state)` in a loop.

    With `carry`, `fn` returns `(new_state, out)` and the new state is the next call's state
    (it replaces the donated one); without, `fn` returns `out` and the state is reused. Each
    runner blocks once, at the end.
    """
    filter_jitted = eqx.filter_jit(fn, donate="all-except-first" if donate else "none")
    eqxrl_jitted = eqxrl.jit(fn, donate=(1,) if donate else ())
    static = split(state)[1]

    def flat(inputs, arrays):
        if not carry:
            return fn(inputs, merge(arrays, static))
        new, out = fn(inputs, merge(arrays, static))
        return split(new)[0], out

    flat_jitted = jax.jit(flat, donate_argnums=(1,) if donate else ())
    holders = {
        "eqx.filter_jit": [fresh(state)],
        "eqxrl.jit": [fresh(state)],
        "jax.jit flat": [split(fresh(state))[0]],
    }

    def loop(name, step):
        holder = holders[name]

        def run():
            s, out = holder[0], None
            for _ in range(calls):
                if carry:
                    s, out = step(inputs, s)
                else:
                    out = step(inputs, s)
            jax.block_until_ready((s, out))
            holder[0] = s

        return run

    return {
        "eqx.filter_jit": loop("eqx.filter_jit", filter_jitted),
        "eqxrl.jit": loop("eqxrl.jit", eqxrl_jitted),
        "jax.jit flat": loop("jax.jit flat", flat_jitted),
    }


def measure(runs: dict[str, Callable], calls: int, repeats: int) -> dict[str, list[float]]:
    """Microseconds per call of each variant, one value per repeat, variants interleaved."""
    for run in runs.values():
        run()  # compile and warm up
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            runs[name]()
            times[name].append(1e6 * (time.perf_counter() - t) / calls)
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2000, help="calls per timing of a trivial fn")
    p.add_argument("--update-calls", type=int, default=30, help="calls per timing of an update")
    p.add_argument("--repeats", type=int, default=5, help="timings per variant (interleaved)")
    p.add_argument("--obs-dim", type=int, default=17)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    a = p.parse_args()

    spec = EnvSpec(
        jax.ShapeDtypeStruct((a.obs_dim,), np.dtype("float32")),
        (a.action_dim,),
        action_low=(-1.0,) * a.action_dim,
        action_high=(1.0,) * a.action_dim,
    )
    config = sac.Config(hidden_dims=(a.hidden, a.hidden))  # the batch size is the batch's
    key = jax.random.key(0)
    state = fresh(sac.init(key, spec, config))
    batch = make_batch(jax.random.key(1), a.batch_size, a.obs_dim, a.action_dim)
    update_inputs = (batch, jax.random.key(2))

    def read(x, s):
        return x + 1

    def round_trip(x, s):
        return s, x + 1

    def update(inputs, s):
        return sac.update(s, inputs[0], inputs[1], config)

    x = jnp.zeros((), jnp.float32)
    sac_name = f"SAC update (batch {a.batch_size}), state donated"
    workloads = [  # name, fn, inputs, donate, carry, calls
        ("`(x, s) -> x + 1`", read, x, False, False, a.calls),
        ("`(x, s) -> (s, x + 1)`, s donated", round_trip, x, True, True, a.calls),
        ("`(x, s) -> (s, x + 1)`, not donated (copies s)", round_trip, x, False, True, a.calls),
        (sac_name, update, update_inputs, True, True, a.update_calls),
    ]
    results = []
    for name, fn, inputs, donate, carry, calls in workloads:
        times = measure(runners(fn, state, inputs, donate, carry, calls), calls, a.repeats)
        results.append((name, calls, times))

    leaves, _ = split(state)
    n_leaves = len(jax.tree.leaves(state))
    t = time.perf_counter()
    for _ in range(200):
        d, s = split(state)
    t_split = 1e6 * (time.perf_counter() - t) / 200
    t = time.perf_counter()
    for _ in range(200):
        merge(d, s)
    t_merge = 1e6 * (time.perf_counter() - t) / 200

    print(
        f"SAC state: obs {a.obs_dim}, action {a.action_dim}, {a.hidden}x{a.hidden}: "
        f"{n_leaves} leaves, {len(leaves)} arrays; split {t_split:.0f} us, merge {t_merge:.0f} us. "
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}, equinox {eqx.__version__}; "
        f"median of {a.repeats} interleaved repeats."
    )
    print()
    f, e, j = VARIANTS
    print(
        "| function | calls | `eqx.filter_jit` µs | `eqxrl.jit` µs | `jax.jit` flat µs "
        "| filter_jit / eqxrl.jit | eqxrl.jit / flat |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, calls, times in results:
        med = {v: statistics.median(times[v]) for v in VARIANTS}
        print(
            f"| {name} | {calls} | {med[f]:.1f} | {med[e]:.1f} | {med[j]:.1f} "
            f"| {median_ratio(times[f], times[e]):.2f} | {median_ratio(times[e], times[j]):.2f} |"
        )
    # Overhead relative to the work: the donated round trip against one update.
    overhead, work = results[1][2], results[3][2]
    shares = ", ".join(
        f"{v} {100 * statistics.median(overhead[v]) / statistics.median(work[v]):.1f}%"
        for v in VARIANTS
    )
    print(f"\nCall overhead (donated round trip) as a share of one SAC update: {shares}")


if __name__ == "__main__":
    main()

"""Updates/s of eqxrl's SAC update against plain-JAX SAC updates written without eqxrl.

Run:  python benchmarks/sac_update.py            (HalfCheetah-sized: obs 17, action 6)
      python benchmarks/sac_update.py --scan-length 200 --repeats 5

Three sides run in this process on the same inputs, as one compiled call per update and as a
`lax.scan` over many updates per call:

- eqxrl: `algorithms/sac.py`'s `update`, compiled with `eqxrl.jit`, state donated.
- plain (the baseline): SAC as a user would write it in plain JAX. Two critics, each its own
  list of `{"w": (in, out), "b"}` layers applied as `x @ w + b`; a hand-written tanh-Gaussian
  sampled with one key for the batch; `optax.adam`; `jax.jit`. Its own layout, not eqxrl's.
- mirrored (for diagnosis only): the same maths with eqxrl's former layout, the two critics'
  weights stacked on a leading axis and applied with batched `einsum`s.

Prints updates/s, the ratios eqxrl / plain and eqxrl / mirrored (above 1 means eqxrl is
faster), GFLOP/s from XLA's cost analysis, the fraction of this machine's measured float32
matmul peak, and each side's compile time (trace+lower, then XLA).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import eqxrl  # noqa: E402
from eqxrl import EnvSpec, Transition
from eqxrl.algorithms import sac  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    obs_dim: int = 17
    action_dim: int = 6
    hidden: int = 256
    batch_size: int = 256
    scan_length: int = 100
    """updates per compiled call on the scan path"""
    calls: int = 200
    """timed calls on the per-call path"""
    repeats: int = 5
    """timing repeats; the best is reported"""
    filter_jit: bool = False
    """compile eqxrl's side with eqx.filter_jit instead of eqxrl.jit"""


# ---------------------------------------------------------------- mirrored: eqxrl's former layout
LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


def dense_init(key, n_in, n_out, scale=1.0):
    w = jax.nn.initializers.variance_scaling(scale, "fan_avg", "uniform")(key, (n_in, n_out))
    return {"w": w, "b": jnp.zeros(n_out)}


def mirrored_init(key, a: Args):
    ks = jax.random.split(key, 8)
    sizes_c = [a.obs_dim + a.action_dim, a.hidden, a.hidden, 1]
    critic = [
        jax.vmap(lambda k, i=i: dense_init(k, sizes_c[i], sizes_c[i + 1]))(
            jax.random.split(ks[i], 2)
        )
        for i in range(3)
    ]
    trunk = [dense_init(ks[3], a.obs_dim, a.hidden), dense_init(ks[4], a.hidden, a.hidden)]
    actor = {
        "trunk": trunk,
        "mean": dense_init(ks[5], a.hidden, a.action_dim, 1e-2),
        "log_std": dense_init(ks[6], a.hidden, a.action_dim, 1e-2),
    }
    tx = optax.adam(3e-4)
    params = {
        "actor": actor,
        "critic": critic,
        "target": jax.tree.map(jnp.copy, critic),
        "log_alpha": jnp.zeros(()),
    }
    opt = {k: tx.init(params[k]) for k in ("actor", "critic", "log_alpha")}
    return params, opt


def critic_apply(critic, obs, action):  # (2, batch)
    x = jnp.concatenate([obs, action], -1)
    for i, layer in enumerate(critic):
        spec = "bi,eio->ebo" if i == 0 else "ebi,eio->ebo"
        x = jnp.einsum(spec, x, layer["w"]) + layer["b"][:, None, :]
        if i < len(critic) - 1:
            x = jax.nn.relu(x)
    return x[..., 0]


def actor_sample(actor, obs, key):
    h = obs
    for layer in actor["trunk"]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    mean = h @ actor["mean"]["w"] + actor["mean"]["b"]
    log_std = jnp.clip(h @ actor["log_std"]["w"] + actor["log_std"]["b"], LOG_STD_MIN, LOG_STD_MAX)
    eps = jax.random.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * eps
    log_prob = jnp.sum(-0.5 * eps**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)
    log_prob -= jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), -1)
    return jnp.tanh(u), log_prob


def mirrored_update(params, opt, batch, key, target_entropy):
    tx = optax.adam(3e-4)
    k1, k2 = jax.random.split(key)
    alpha = jnp.exp(params["log_alpha"])
    next_a, next_lp = actor_sample(params["actor"], batch.next_obs, k1)
    next_q = jnp.min(critic_apply(params["target"], batch.next_obs, next_a), 0) - alpha * next_lp
    target = batch.reward + 0.99 * jnp.where(batch.terminated, 0.0, next_q)

    def c_loss(c):
        return jnp.sum(jnp.mean((critic_apply(c, batch.obs, batch.action) - target) ** 2, 1))

    g = jax.grad(c_loss)(params["critic"])
    upd, opt_c = tx.update(g, opt["critic"], params["critic"])
    critic = optax.apply_updates(params["critic"], upd)

    def a_loss(actor):
        a, lp = actor_sample(actor, batch.obs, k2)
        return jnp.mean(alpha * lp - jnp.min(critic_apply(critic, batch.obs, a), 0)), -jnp.mean(lp)

    g, entropy = jax.grad(a_loss, has_aux=True)(params["actor"])
    upd, opt_a = tx.update(g, opt["actor"], params["actor"])
    actor = optax.apply_updates(params["actor"], upd)
    g = jax.grad(lambda la: jnp.exp(la) * (entropy - target_entropy))(params["log_alpha"])
    upd, opt_t = tx.update(g, opt["log_alpha"], params["log_alpha"])
    target_p = jax.tree.map(lambda o, t: 0.005 * o + 0.995 * t, critic, params["target"])
    new = {
        "actor": actor,
        "critic": critic,
        "target": target_p,
        "log_alpha": optax.apply_updates(params["log_alpha"], upd),
    }
    return new, {"critic": opt_c, "actor": opt_a, "log_alpha": opt_t}


# ---------------------------------------------------------------- plain JAX, the obvious way
def obvious_init(key, a: Args):
    """Separate critics and targets, `(in, out)` weights, plain optax.adam states."""
    ks = jax.random.split(key, 5)

    def mlp_init(k, sizes, last_scale=1.0):
        kk = jax.random.split(k, len(sizes) - 1)
        return [dense_init(kk[i], sizes[i], sizes[i + 1], last_scale if i == len(sizes) - 2
                           else 1.0) for i in range(len(sizes) - 1)]

    q_sizes = [a.obs_dim + a.action_dim, a.hidden, a.hidden, 1]
    q1, q2 = mlp_init(ks[0], q_sizes), mlp_init(ks[1], q_sizes)
    actor = {
        "trunk": mlp_init(ks[2], [a.obs_dim, a.hidden, a.hidden]),
        "mean": dense_init(ks[3], a.hidden, a.action_dim, 1e-2),
        "log_std": dense_init(ks[4], a.hidden, a.action_dim, 1e-2),
    }
    params = {"actor": actor, "q1": q1, "q2": q2, "log_alpha": jnp.zeros(()),
              "q1_target": jax.tree.map(jnp.copy, q1), "q2_target": jax.tree.map(jnp.copy, q2)}
    tx = optax.adam(3e-4)
    opt = {"actor": tx.init(actor), "critic": tx.init((q1, q2)), "alpha": tx.init(jnp.zeros(()))}
    return params, opt


def obvious_q(q, obs, action):
    x = jnp.concatenate([obs, action], -1)
    for layer in q[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return (x @ q[-1]["w"] + q[-1]["b"])[:, 0]


def obvious_update(params, opt, batch, key, target_entropy):
    tx = optax.adam(3e-4)
    k_next, k_new = jax.random.split(key)
    alpha = jnp.exp(params["log_alpha"])
    next_a, next_lp = actor_sample(params["actor"], batch.next_obs, k_next)
    next_q = jnp.minimum(obvious_q(params["q1_target"], batch.next_obs, next_a),
                         obvious_q(params["q2_target"], batch.next_obs, next_a))
    target = batch.reward + 0.99 * (1.0 - batch.terminated) * (next_q - alpha * next_lp)

    def critic_loss(qs):
        return sum(jnp.mean((obvious_q(q, batch.obs, batch.action) - target) ** 2) for q in qs)

    grads = jax.grad(critic_loss)((params["q1"], params["q2"]))
    updates, opt_critic = tx.update(grads, opt["critic"])
    q1, q2 = optax.apply_updates((params["q1"], params["q2"]), updates)

    def actor_loss(actor):
        a, log_prob = actor_sample(actor, batch.obs, k_new)
        q = jnp.minimum(obvious_q(q1, batch.obs, a), obvious_q(q2, batch.obs, a))
        return jnp.mean(alpha * log_prob - q), -jnp.mean(log_prob)

    grads, entropy = jax.grad(actor_loss, has_aux=True)(params["actor"])
    updates, opt_actor = tx.update(grads, opt["actor"])
    actor = optax.apply_updates(params["actor"], updates)
    grad = jax.grad(lambda la: jnp.exp(la) * (entropy - target_entropy))(params["log_alpha"])
    updates, opt_alpha = tx.update(grad, opt["alpha"])
    new = {"actor": actor, "q1": q1, "q2": q2,
           "log_alpha": optax.apply_updates(params["log_alpha"], updates),
           "q1_target": optax.incremental_update(q1, params["q1_target"], 0.005),
           "q2_target": optax.incremental_update(q2, params["q2_target"], 0.005)}
    return new, {"critic": opt_critic, "actor": opt_actor, "alpha": opt_alpha}


# ---------------------------------------------------------------- timing
def make_batch(key, a: Args, lead=()):
    k = jax.random.split(key, 4)
    return Transition(
        obs=jax.random.normal(k[0], (*lead, a.batch_size, a.obs_dim)),
        action=jax.random.uniform(k[1], (*lead, a.batch_size, a.action_dim), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (*lead, a.batch_size)),
        next_obs=jax.random.normal(k[3], (*lead, a.batch_size, a.obs_dim)),
        terminated=jnp.zeros((*lead, a.batch_size), bool),
        truncated=jnp.zeros((*lead, a.batch_size), bool),
    )


def best_time(fn, repeats):
    fn()  # warm up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peak(n=2048, reps=10):
    x = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(x).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        y = f(x)
    y.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def compile_seconds(fn, *args):
    """(trace + lower, XLA compile) seconds of `jax.jit(fn)` on `args`, and the executable."""
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return t1 - t0, time.perf_counter() - t1, compiled


def eqx_runners(update, state, batch, batches, key, a, compile_=None):
    """`(per-call, scan)` timers of eqxrl's `update(state, batch, key) -> new state`.

    Compiled with `eqxrl.jit` (or `compile_`), the state donated; each timer continues from the
    state the previous one left.
    """
    compile_ = compile_ or eqxrl.jit(donate=(1,))
    step = compile_(lambda b, s, k: update(s, b, k))

    @compile_
    def scan(bs, s, k):
        body = lambda s, xs: (update(s, xs[0], xs[1]), None)  # noqa: E731
        return jax.lax.scan(body, s, (bs, jax.random.split(k, a.scan_length)))[0]

    holder = [state]

    def calls():
        s = holder[0]
        for i in range(a.calls):
            s = step(batch, s, jax.random.fold_in(key, i))
        holder[0] = jax.block_until_ready(s)

    def scanned():
        holder[0] = jax.block_until_ready(scan(batches, holder[0], key))

    return calls, scanned


def plain_runners(update, params, opt, batch, batches, key, a):
    """`(per-call, scan)` timers of a plain-JAX `update(params, opt, batch, key) -> (params,
    opt)`, compiled with `jax.jit`, params and optimiser state donated."""
    step = jax.jit(update, donate_argnums=(0, 1))

    @jax.jit
    def scan(p, o, bs, k):
        body = lambda c, xs: (update(*c, xs[0], xs[1]), None)  # noqa: E731
        return jax.lax.scan(body, (p, o), (bs, jax.random.split(k, a.scan_length)))[0]

    holder = [(params, opt)]

    def calls():
        p, o = holder[0]
        for i in range(a.calls):
            p, o = step(p, o, batch, jax.random.fold_in(key, i))
        holder[0] = jax.block_until_ready((p, o))

    def scanned():
        holder[0] = jax.block_until_ready(scan(*holder[0], batches, key))

    return calls, scanned


def interleaved_rates(runners: dict, a) -> list[tuple[str, dict[str, float]]]:
    """Updates/s of every side, per call and in a scan: `[(path, {side: rate})]`.

    The sides run in turn, `a.repeats` times, so machine noise hits them alike; each keeps its
    best time.
    """
    rows = []
    for path, index, n in (("per call", 0, a.calls), (f"scan x{a.scan_length}", 1, a.scan_length)):
        best = dict.fromkeys(runners, float("inf"))
        for _ in range(a.repeats):
            for name, fns in runners.items():
                best[name] = min(best[name], best_time(fns[index], 1))
        rows.append((path, {name: n / t for name, t in best.items()}))
    return rows


def main(a: Args):
    spec = EnvSpec(
        jax.ShapeDtypeStruct((a.obs_dim,), np.dtype("float32")),
        (a.action_dim,),
        action_low=(-1.0,) * a.action_dim,
        action_high=(1.0,) * a.action_dim,
    )
    config = sac.Config(
        run=eqxrl.OnlineRun(batch_size=a.batch_size), hidden_dims=(a.hidden, a.hidden)
    )
    key = jax.random.key(0)
    batch = make_batch(key, a)
    batches = make_batch(key, a, lead=(a.scan_length,))
    target_entropy = -float(a.action_dim)
    state = jax.tree.map(
        lambda x: jnp.copy(x) if eqx.is_array(x) else x, sac.init(key, spec, config)
    )

    # Compile times of one update, measured first, before any of these programs is cached.
    # eqxrl's side is compiled as jax.jit of its array leaves (what eqxrl.jit hands to XLA).
    arrays, static = eqx.partition(state, eqx.is_array)
    sides = {"plain": (obvious_init, obvious_update), "mirrored": (mirrored_init, mirrored_update)}
    compile_rows = [("eqxrl", *compile_seconds(
        lambda d, b, k: eqx.partition(sac.update(eqx.combine(d, static), b, k, config)[0],
                                      eqx.is_array)[0], arrays, batch, key)[:2])]
    params = {name: init(key, a) for name, (init, _) in sides.items()}
    for name, (_, update) in sides.items():
        lower_s, compile_s, compiled = compile_seconds(
            lambda p, o, b, k, u=update: u(p, o, b, k, target_entropy), *params[name], batch, key
        )
        compile_rows.append((name, lower_s, compile_s))
        if name == "plain":
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            flops_per_update = float(cost.get("flops", float("nan")))

    # eqxrl: the update as users write it, compiled with eqxrl.jit (filtered, asynchronous
    # dispatch), state donated. `--filter-jit` measures eqx.filter_jit instead, which blocks on
    # every call.
    compile_ = eqx.filter_jit(donate="all-except-first") if a.filter_jit else None
    runners = {"eqxrl": eqx_runners(lambda s, b, k: sac.update(s, b, k, config)[0], state,
                                    batch, batches, key, a, compile_)}
    for name, (_, update) in sides.items():
        runners[name] = plain_runners(
            lambda p, o, b, k, u=update: u(p, o, b, k, target_entropy), *params[name], batch,
            batches, key, a)

    peak = matmul_peak()
    rows = []
    for path, ups in interleaved_rates(runners, a):
        gflops = ups["eqxrl"] * flops_per_update / 1e9
        rows.append(
            (path, ups["eqxrl"], ups["plain"], ups["mirrored"], gflops, gflops * 1e9 / peak)
        )

    print(
        f"SAC update, obs {a.obs_dim}, action {a.action_dim}, {a.hidden}x{a.hidden}, "
        f"batch {a.batch_size}, on {jax.devices()[0].device_kind} ({jax.device_count()} device)"
    )
    print(
        f"XLA cost analysis: {flops_per_update / 1e6:.1f} MFLOP per update; "
        f"measured f32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(
        f"{'path':<12}{'eqxrl upd/s':>13}{'plain':>9}{'mirrored':>10}{'÷ plain':>9}"
        f"{'÷ mirr.':>9}{'GFLOP/s':>9}{'% peak':>8}"
    )
    for path, ue, up, um, gf, frac in rows:
        print(f"{path:<12}{ue:>13.1f}{up:>9.1f}{um:>10.1f}{ue / up:>9.3f}{ue / um:>9.3f}"
              f"{gf:>9.1f}{100 * frac:>7.1f}%")
    print("compile one update (s): " + "; ".join(
        f"{name} {lo:.2f} trace+lower + {co:.2f} XLA" for name, lo, co in compile_rows))


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Updates/s of eqxrl's SAC update against a plain-JAX implementation of the same maths.

Run:  python benchmarks/sac_update.py            (HalfCheetah-sized: obs 17, action 6)
      python benchmarks/sac_update.py --scan-length 200 --repeats 5

Both sides run in this process on the same inputs, as one compiled call per update and as a
`lax.scan` over many updates per call. Prints updates/s, the ratio eqxrl / plain JAX (above 1
means eqxrl is faster), GFLOP/s from XLA's cost analysis, and the fraction of this machine's
measured float32 matmul peak.
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
from algorithms import sac  # noqa: E402
from eqxrl import EnvSpec, Transition  # noqa: E402


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
    repeats: int = 3
    """timing repeats; the best is reported"""
    filter_jit: bool = False
    """compile eqxrl's side with eqx.filter_jit instead of eqxrl.jit"""


# ---------------------------------------------------------------- plain JAX, same maths
LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


def dense_init(key, n_in, n_out, scale=1.0):
    w = jax.nn.initializers.variance_scaling(scale, "fan_avg", "uniform")(key, (n_in, n_out))
    return {"w": w, "b": jnp.zeros(n_out)}


def mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def plain_init(key, a: Args):
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


def plain_update(params, opt, batch, key, target_entropy):
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

    # eqxrl: the update as users write it, compiled with eqxrl.jit (filtered, asynchronous
    # dispatch), state donated. `--filter-jit` measures eqx.filter_jit instead, which blocks on
    # every call.
    state = jax.tree.map(
        lambda x: jnp.copy(x) if eqx.is_array(x) else x, sac.init(key, spec, config)
    )
    compile_ = eqx.filter_jit(donate="all-except-first") if a.filter_jit else eqxrl.jit(donate=(1,))
    eqx_step = compile_(lambda b, s, k: sac.update(s, b, k, config)[0])

    @compile_
    def eqx_scan(bs, s, k):
        def body(s, xs):
            return sac.update(s, xs[0], xs[1], config)[0], None

        return jax.lax.scan(body, s, (bs, jax.random.split(k, a.scan_length)))[0]

    # plain JAX: dict params, jax.jit, same maths.
    params, opt = plain_init(key, a)
    plain_step = jax.jit(
        lambda p, o, b, k: plain_update(p, o, b, k, target_entropy), donate_argnums=(0, 1)
    )

    @jax.jit
    def plain_scan(p, o, bs, k):
        def body(c, xs):
            return plain_update(*c, xs[0], xs[1], target_entropy), None

        return jax.lax.scan(body, (p, o), (bs, jax.random.split(k, a.scan_length)))[0]

    holder = {"eqx": state, "plain": (params, opt)}

    def run_eqx_calls():
        s = holder["eqx"]
        for i in range(a.calls):
            s = eqx_step(batch, s, jax.random.fold_in(key, i))
        jax.block_until_ready(s)
        holder["eqx"] = s

    def run_plain_calls():
        p, o = holder["plain"]
        for i in range(a.calls):
            p, o = plain_step(p, o, batch, jax.random.fold_in(key, i))
        jax.block_until_ready(p)
        holder["plain"] = (p, o)

    def run_eqx_scan():
        holder["eqx"] = jax.block_until_ready(eqx_scan(batches, holder["eqx"], jax.random.key(1)))

    def run_plain_scan():
        holder["plain"] = jax.block_until_ready(plain_scan(*holder["plain"], batches, key))

    cost = (
        jax.jit(lambda p, o, b, k: plain_update(p, o, b, k, target_entropy))
        .lower(params, opt, batch, key)
        .compile()
        .cost_analysis()
    )
    cost = cost[0] if isinstance(cost, list) else cost
    flops_per_update = float(cost.get("flops", float("nan")))
    peak = matmul_peak()

    rows = []
    for path, f_eqx, f_plain, n in (
        ("per call", run_eqx_calls, run_plain_calls, a.calls),
        (f"scan x{a.scan_length}", run_eqx_scan, run_plain_scan, a.scan_length),
    ):
        # Interleave the two sides so that machine noise hits both alike.
        t_eqx = t_plain = float("inf")
        for _ in range(a.repeats):
            t_plain = min(t_plain, best_time(f_plain, 1))
            t_eqx = min(t_eqx, best_time(f_eqx, 1))
        ups_eqx, ups_plain = n / t_eqx, n / t_plain
        gflops = ups_eqx * flops_per_update / 1e9
        rows.append((path, ups_eqx, ups_plain, ups_eqx / ups_plain, gflops, gflops * 1e9 / peak))

    print(
        f"SAC update, obs {a.obs_dim}, action {a.action_dim}, {a.hidden}x{a.hidden}, "
        f"batch {a.batch_size}, on {jax.devices()[0].device_kind} ({jax.device_count()} device)"
    )
    print(
        f"XLA cost analysis: {flops_per_update / 1e6:.1f} MFLOP per update; "
        f"measured f32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print(
        f"{'path':<12}{'eqxrl upd/s':>14}{'plain upd/s':>14}{'ratio':>8}"
        f"{'GFLOP/s':>10}{'% peak':>8}"
    )
    for path, ue, up, ratio, gf, frac in rows:
        print(f"{path:<12}{ue:>14.1f}{up:>14.1f}{ratio:>8.3f}{gf:>10.1f}{100 * frac:>7.1f}%")


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Updates/s of eqxrl's IQL and CQL updates against plain-JAX implementations of the same maths.

Run:  python benchmarks/offline_update.py            (HalfCheetah-sized: obs 17, action 6)
      python benchmarks/offline_update.py --algos iql --scan-length 200 --repeats 5

Both sides run in this process on the same inputs, as one compiled call per update and as a
`lax.scan` over many updates per call. eqxrl's side is the algorithm file's `update`, compiled
with `eqxrl.jit` (asynchronous dispatch) with the state donated; the plain side is dict params
and `jax.jit`. Prints updates/s, the ratio eqxrl / plain JAX (above 1 means eqxrl is faster),
GFLOP/s from XLA's cost analysis of the plain update, and the fraction of the machine's
measured float32 matmul peak.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.sac_update import (  # noqa: E402
    critic_apply,
    dense_init,
    eqx_runners,
    interleaved_rates,
    make_batch,
    matmul_peak,
    plain_runners,
)
from eqxrl import EnvSpec, OfflineRun
from eqxrl.algorithms import cql, iql  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    obs_dim: int = 17
    action_dim: int = 6
    hidden: int = 256
    batch_size: int = 256
    algos: tuple[Literal["iql", "cql"], ...] = ("iql", "cql")
    """which updates to measure"""
    scan_length: int = 100
    """updates per compiled call on the scan path"""
    calls: int = 100
    """timed calls on the per-call path"""
    repeats: int = 3
    """timing repeats; the best is reported"""


# ---------------------------------------------------------------- plain JAX: shared parts
GAMMA, TAU, LOG_2PI = 0.99, 0.005, float(np.log(2 * np.pi))


def twin_critic_init(key, a: Args):
    sizes = [a.obs_dim + a.action_dim, a.hidden, a.hidden, 1]
    ks = jax.random.split(key, 3)
    layer = lambda k, i: dense_init(k, sizes[i], sizes[i + 1])
    return [jax.vmap(lambda k, i=i: layer(k, i))(jax.random.split(ks[i], 2)) for i in range(3)]


def critic_apply_many(critic, obs, actions):  # obs (B, O), actions (B, K, A) -> (2, B, K)
    obs = jnp.broadcast_to(obs[:, None, :], (*actions.shape[:2], obs.shape[-1]))
    x = jnp.concatenate([obs, actions], -1)  # (B, K, O + A)
    for i, layer in enumerate(critic):
        spec = "bki,eio->ebko" if i == 0 else "ebki,eio->ebko"
        x = jnp.einsum(spec, x, layer["w"]) + layer["b"][:, None, None, :]
        if i < len(critic) - 1:
            x = jax.nn.relu(x)
    return x[..., 0]


def trunk_apply(trunk, obs):
    h = obs
    for layer in trunk:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    return h


def adam_step(tx, grads, opt, params):
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt


def polyak(online, target):
    return jax.tree.map(lambda o, t: TAU * o + (1 - TAU) * t, online, target)


# ---------------------------------------------------------------- plain JAX: IQL
def iql_txs(total_updates):
    decay = optax.cosine_decay_schedule(1.0, total_updates)
    return {"critic": optax.adam(3e-4), "value": optax.adam(3e-4),
            "actor": optax.chain(optax.adam(3e-4), optax.scale_by_schedule(decay))}


def iql_init(key, a: Args, total_updates):
    ks = jax.random.split(key, 6)
    critic = twin_critic_init(ks[0], a)
    value = [dense_init(ks[1], a.obs_dim, a.hidden), dense_init(ks[2], a.hidden, a.hidden),
             dense_init(ks[3], a.hidden, 1)]
    trunk = [dense_init(ks[4], a.obs_dim, a.hidden), dense_init(ks[5], a.hidden, a.hidden)]
    actor = {"trunk": trunk,
             "mean": dense_init(ks[0], a.hidden, a.action_dim, 1e-2),
             "log_std": jnp.zeros(a.action_dim)}
    params = {"critic": critic, "target": jax.tree.map(jnp.copy, critic), "value": value,
              "actor": actor}
    txs = iql_txs(total_updates)
    return params, {k: txs[k].init(params[k]) for k in txs}


def value_apply(value, obs):
    return (trunk_apply(value[:-1], obs) @ value[-1]["w"] + value[-1]["b"])[:, 0]


def iql_update(params, opt, batch, total_updates):
    txs = iql_txs(total_updates)
    q_target = jnp.min(critic_apply(params["target"], batch.obs, batch.action), 0)

    def v_loss(value):
        diff = q_target - value_apply(value, batch.obs)
        return jnp.mean(jnp.where(diff > 0, 0.7, 0.3) * diff**2)

    value, opt_v = adam_step(txs["value"], jax.grad(v_loss)(params["value"]), opt["value"],
                             params["value"])
    weights = jnp.minimum(jnp.exp(3.0 * (q_target - value_apply(value, batch.obs))), 100.0)

    def a_loss(actor):
        mean = trunk_apply(actor["trunk"], batch.obs) @ actor["mean"]["w"] + actor["mean"]["b"]
        log_std = jnp.clip(actor["log_std"], -5.0, 2.0)
        z = (batch.action - mean) / jnp.exp(log_std)
        log_prob = jnp.sum(-0.5 * z**2 - log_std - 0.5 * LOG_2PI, -1)
        return -jnp.mean(weights * log_prob)

    actor, opt_a = adam_step(txs["actor"], jax.grad(a_loss)(params["actor"]), opt["actor"],
                             params["actor"])
    next_v = value_apply(value, batch.next_obs)
    target = batch.reward + GAMMA * jnp.where(batch.terminated, 0.0, next_v)

    def c_loss(c):
        return jnp.sum(jnp.mean((critic_apply(c, batch.obs, batch.action) - target) ** 2, 1))

    critic, opt_c = adam_step(txs["critic"], jax.grad(c_loss)(params["critic"]), opt["critic"],
                              params["critic"])
    new = {"critic": critic, "target": polyak(critic, params["target"]), "value": value,
           "actor": actor}
    return new, {"critic": opt_c, "value": opt_v, "actor": opt_a}


# ---------------------------------------------------------------- plain JAX: CQL
CQL_TXS = {"critic": optax.adam(3e-4), "actor": optax.adam(1e-4), "log_alpha": optax.adam(3e-4)}


def cql_init(key, a: Args):
    ks = jax.random.split(key, 5)
    critic = twin_critic_init(ks[0], a)
    trunk = [dense_init(ks[1], a.obs_dim, a.hidden), dense_init(ks[2], a.hidden, a.hidden)]
    actor = {"trunk": trunk,
             "mean": dense_init(ks[3], a.hidden, a.action_dim, 1e-2),
             "log_std": dense_init(ks[4], a.hidden, a.action_dim, 1e-2)}
    params = {"actor": actor, "critic": critic, "target": jax.tree.map(jnp.copy, critic),
              "log_alpha": jnp.zeros(())}
    return params, {k: CQL_TXS[k].init(params[k]) for k in CQL_TXS}


def tanh_sample(actor, obs, key, shape):
    """tanh-Gaussian samples of shape `shape + (A,)` after the batch axis, and log-probs."""
    h = trunk_apply(actor["trunk"], obs)
    mean = h @ actor["mean"]["w"] + actor["mean"]["b"]
    log_std = jnp.clip(h @ actor["log_std"]["w"] + actor["log_std"]["b"], -10.0, 2.0)
    expand = lambda x: x.reshape(x.shape[0], *(1,) * len(shape), x.shape[-1])
    eps = jax.random.normal(key, (obs.shape[0], *shape, mean.shape[-1]))
    u = expand(mean) + jnp.exp(expand(log_std)) * eps
    log_prob = jnp.sum(-0.5 * eps**2 - expand(log_std) - 0.5 * LOG_2PI, -1)
    log_prob -= jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), -1)
    return jnp.tanh(u), log_prob


def cql_update(params, opt, batch, key, num=10, cql_alpha=5.0, target_entropy=-6.0):
    k = jax.random.split(key, 5)
    alpha = jnp.exp(params["log_alpha"])
    next_a, _ = tanh_sample(params["actor"], batch.next_obs, k[0], ())
    next_q = jnp.min(critic_apply(params["target"], batch.next_obs, next_a), 0)
    target = batch.reward + GAMMA * jnp.where(batch.terminated, 0.0, next_q)
    n, dim = batch.reward.shape[0], batch.action.shape[-1]
    rand = jax.random.uniform(k[1], (n, num, dim), minval=-1.0, maxval=1.0)
    curr, curr_lp = tanh_sample(params["actor"], batch.obs, k[2], (num,))
    later, later_lp = tanh_sample(params["actor"], batch.next_obs, k[3], (num,))
    sampled = jax.lax.stop_gradient(jnp.concatenate([rand, curr, later], 1))  # (B, 3N, A)
    log_density = jax.lax.stop_gradient(jnp.concatenate(
        [jnp.full((n, num), dim * np.log(0.5)), curr_lp, later_lp], 1))  # (B, 3N)

    def c_loss(c):
        q = critic_apply(c, batch.obs, batch.action)  # (2, B)
        q_s = critic_apply_many(c, batch.obs, sampled)  # (2, B, 3N)
        gap = jnp.mean(jax.nn.logsumexp(q_s - log_density[None], -1), 1) - jnp.mean(q, 1)
        return jnp.sum(jnp.mean((q - target) ** 2, 1)) + cql_alpha * jnp.sum(gap)

    critic, opt_c = adam_step(CQL_TXS["critic"], jax.grad(c_loss)(params["critic"]),
                              opt["critic"], params["critic"])

    def a_loss(actor):
        a, lp = tanh_sample(actor, batch.obs, k[4], ())
        return jnp.mean(alpha * lp - jnp.min(critic_apply(critic, batch.obs, a), 0)), -jnp.mean(lp)

    g, entropy = jax.grad(a_loss, has_aux=True)(params["actor"])
    actor, opt_a = adam_step(CQL_TXS["actor"], g, opt["actor"], params["actor"])
    g = jax.grad(lambda la: jnp.exp(la) * (entropy - target_entropy))(params["log_alpha"])
    log_alpha, opt_t = adam_step(CQL_TXS["log_alpha"], g, opt["log_alpha"], params["log_alpha"])
    new = {"actor": actor, "critic": critic, "target": polyak(critic, params["target"]),
           "log_alpha": log_alpha}
    return new, {"critic": opt_c, "actor": opt_a, "log_alpha": opt_t}


# ---------------------------------------------------------------- timing
def measure(name, a: Args, spec, key):
    """Rows (path, eqxrl upd/s, plain upd/s, ratio, GFLOP/s, fraction of peak) for one algo."""
    batch = make_batch(key, a)
    batches = make_batch(key, a, lead=(a.scan_length,))
    total = 1_000_000
    if name == "iql":
        run = OfflineRun(batch_size=a.batch_size, total_updates=total)  # the cosine decay's length
        module, config = iql, iql.Config(run=run, hidden_dims=(a.hidden,) * 2)
        params, opt = iql_init(key, a, total)
        plain = lambda p, o, b, k: iql_update(p, o, b, total)
    else:
        module, config = cql, cql.Config(run=OfflineRun(batch_size=a.batch_size),
                                         hidden_dims=(a.hidden,) * 2)
        params, opt = cql_init(key, a)
        plain = lambda p, o, b, k: cql_update(p, o, b, k, target_entropy=-float(a.action_dim))

    state = jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x,
                         module.init(key, spec, config))
    cost = jax.jit(plain).lower(params, opt, batch, key).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    runners = {
        "eqx": eqx_runners(lambda s, b, k: module.update(s, b, k, config)[0], state, batch,
                           batches, key, a),
        "plain": plain_runners(plain, params, opt, batch, batches, key, a),
    }
    rows = []
    for path, ups in interleaved_rates(runners, a):
        ue, up = ups["eqx"], ups["plain"]
        rows.append((path, ue, up, ue / up, ue * flops / 1e9))
    return rows, flops


def main(a: Args):
    spec = EnvSpec(jax.ShapeDtypeStruct((a.obs_dim,), np.dtype("float32")), (a.action_dim,),
                   action_low=(-1.0,) * a.action_dim, action_high=(1.0,) * a.action_dim)
    peak = matmul_peak()
    print(f"obs {a.obs_dim}, action {a.action_dim}, {a.hidden}x{a.hidden}, batch {a.batch_size}, "
          f"on {jax.devices()[0].device_kind} ({jax.device_count()} device); measured f32 "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s")
    for name in a.algos:
        rows, flops = measure(name, a, spec, jax.random.key(0))
        print(f"\n{name.upper()} update: XLA cost analysis {flops / 1e6:.1f} MFLOP per update")
        print(f"{'path':<12}{'eqxrl upd/s':>14}{'plain upd/s':>14}{'ratio':>8}{'GFLOP/s':>10}"
              f"{'% peak':>8}")
        for path, ue, up, ratio, gf in rows:
            print(f"{path:<12}{ue:>14.1f}{up:>14.1f}{ratio:>8.3f}{gf:>10.1f}"
                  f"{100 * gf * 1e9 / peak:>7.1f}%")


if __name__ == "__main__":
    main(tyro.cli(Args))

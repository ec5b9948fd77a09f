"""MLPs and ensembles of them, the trunk of every network in `eqxrl.nn`.

Every module maps ONE example to one output (the Equinox convention); batch with `jax.vmap`.
Stochastic modules take `key=None`: with no key they run deterministically (no dropout).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from eqxrl.core.types import Obs


def flatten_obs(obs: Obs) -> Float[Array, " obs_dim"]:
    """Concatenate the ravelled leaves of one observation (dict keys in sorted order)."""
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(obs)])


def scaled_linear(in_size: int, out_size: int, scale: float, *, key: PRNGKeyArray) -> eqx.nn.Linear:
    """A Linear layer with variance-scaling (fan-avg, uniform) weights and zero bias.

    With `scale=1` this is Xavier-uniform, the initialisation jaxrl_m's networks used.
    """
    layer = eqx.nn.Linear(in_size, out_size, key=key)
    init = jax.nn.initializers.variance_scaling(scale, "fan_avg", "uniform")
    weight = init(key, (out_size, in_size), jnp.float32)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, jnp.zeros(out_size)))


# A layer with at most SHORT inputs and at least WIDENING times as many outputs gets its weight
# gradient laid out (in, out): `linear_product`.
SHORT, WIDENING = 64, 4


@jax.custom_jvp
def _transpose_for_grad(w: Float[Array, "out in"]) -> Float[Array, "in out"]:
    """`w.T`, whose cotangent is made `(in, out)` behind a barrier, then transposed."""
    return w.T


@_transpose_for_grad.defjvp
def _transpose_for_grad_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    # Transposed for reverse mode, `barrier(t.T)` becomes `barrier(ct).T`: the weight
    # gradient's product is computed `(in, out)`, as the barrier stops XLA from folding the
    # transpose into it. The primal is untouched, so forward values are unchanged.
    (w,), (t,) = primals, tangents
    return w.T, jax.lax.optimization_barrier(t.T)


GradLayout = Literal["auto", "in_out", "out_in"]


def linear_product(
    x: Float[Array, "*batch in_size"], weight: Float[Array, "out_size in_size"],
    grad_layout: GradLayout = "auto",
) -> Float[Array, "*batch out_size"]:
    """`x @ weight.T` for an Equinox-layout `(out, in)` weight, with a fast weight gradient.

    The values and derivatives are those of `x @ weight.T`; in the measured updates the bits
    are too (SAC, TD3, IQL, BC, ReBRAC, CQL, CrossQ, SimbaV2; TQC and DQN differ by ~1e-8
    after 10 updates). What changes is the layout of the weight gradient of a layer with a
    short input that widens: at most `SHORT` inputs and at least `WIDENING` times as many
    outputs (a first layer from 17 observation features to 256 units). Its product is
    computed `(in, out)` and transposed. XLA:CPU computes the `(out, in)` product, whose minor
    axis is the short one, 1.4–2.3× slower (`benchmarks/dense_layout.py --mode layers`); IQL's
    update spent 9% of its time there. Wider inputs gain little, and SimbaV2's 512 → 2048
    blocks lost 5%. Forward-mode and higher-order derivatives work as usual.

    Under a `vmap` nested in another, with the weight shared by both, the transposed layout
    loses (about 0.5×): give such rows one `vmap` (flatten them), or choose the layout.

    Args:
        x: one input row, or rows with leading batch axes.
        weight: the `(out_size, in_size)` weight of an `eqx.nn.Linear`.
        grad_layout: "auto" follows the rule above; "in_out" always computes the weight
            gradient `(in, out)` and transposes it; "out_in" leaves the layout to XLA (the
            obvious `x @ weight.T`). The value and every derivative are the same for all
            three; only speed (and possibly the last bits) differ.

    Raises:
        ValueError: for another `grad_layout`.
    """
    if grad_layout not in get_args(GradLayout):
        raise ValueError(f"linear_product: grad_layout={grad_layout!r}; expected 'auto', "
                         "'in_out' or 'out_in'.")
    if grad_layout == "auto":
        out_size, in_size = weight.shape[-2:]
        widening = in_size <= SHORT and WIDENING * in_size <= out_size
        grad_layout = "in_out" if widening else "out_in"
    return x @ (_transpose_for_grad(weight) if grad_layout == "in_out" else weight.T)


def dense(
    layer: eqx.nn.Linear, x: Float[Array, "*batch in_size"]
) -> Float[Array, "*batch out_size"]:
    """`layer(x)` computed as `x @ weight.T + bias` (through `linear_product`).

    The same numbers as `eqx.nn.Linear.__call__` (`weight @ x + bias`), but under `vmap` the
    batch axis stays the leading axis of the product. With `weight @ x`, XLA:CPU computed a
    batch's activations as (features, batch) and transposed them back: CQL's update, whose
    critics see 7680 sampled actions, spent ~14% of its time on those transposes.
    Works on a batch too (`(batch, in_size)` rows).
    """
    y = linear_product(x, layer.weight)
    return y if layer.bias is None else y + jnp.broadcast_to(layer.bias, y.shape)


class MLP(eqx.Module):
    """Linear layers with an activation between them, optional dropout and LayerNorm.

    Hidden layer order is Linear -> Dropout -> LayerNorm -> activation (as in DroQ).
    """

    layers: tuple[eqx.nn.Linear, ...]
    norms: tuple[eqx.nn.LayerNorm, ...] | None
    activation: Callable[[Array], Array] = eqx.field(static=True)
    activate_final: bool = eqx.field(static=True)
    dropout_rate: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        hidden: Sequence[int] = (256, 256),
        *,
        activation: Callable[[Array], Array] = jax.nn.relu,
        activate_final: bool = False,
        layer_norm: bool = False,
        dropout_rate: float = 0.0,
        final_init_scale: float = 1.0,
        key: PRNGKeyArray,
    ):
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
        sizes = (in_size, *hidden, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        n = len(sizes) - 1
        self.layers = tuple(
            scaled_linear(a, b, final_init_scale if i == n - 1 else 1.0, key=k)
            for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys, strict=True))
        )
        normed = sizes[1:] if activate_final else sizes[1:-1]
        self.norms = tuple(eqx.nn.LayerNorm(s) for s in normed) if layer_norm else None
        self.activation = activation
        self.activate_final = activate_final
        self.dropout_rate = dropout_rate

    def __call__(
        self, x: Float[Array, " in_size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out_size"]:
        """The output for one input vector.

        With a `key` and `dropout_rate > 0`, each activated layer drops units at that rate and
        scales the kept ones by 1 / (1 − rate); without a key nothing is dropped.
        """
        n = len(self.layers)
        keys = jax.random.split(key, n) if key is not None else [None] * n
        for i, (layer, k) in enumerate(zip(self.layers, keys, strict=True)):
            x = dense(layer, x)
            if i < n - 1 or self.activate_final:
                if k is not None and self.dropout_rate > 0.0:
                    keep = jax.random.bernoulli(k, 1.0 - self.dropout_rate, x.shape)
                    x = jnp.where(keep, x / (1.0 - self.dropout_rate), 0.0)
                if self.norms is not None:
                    x = self.norms[i](x)
                x = self.activation(x)
        return x


class Ensemble(eqx.Module):
    """`num` independent copies of a module; calling it on one example returns outputs with a
    leading `(num, ...)` axis.

    By default the members are kept as a tuple and applied one after another. XLA:CPU runs
    each member's layers as plain matrix products, which is faster than the batched products
    of a vmap over stacked weights (SAC's update, 2 critics: ~10% faster; 10 critics: ~9%;
    `benchmarks/sac_update.py`). `vectorise=True` stacks the members' arrays along a leading
    axis and applies them with one `filter_vmap`: one program whatever `num`, so it compiles
    faster for large ensembles (SAC with 10 critics: 2.3 s against 4.3 s) and may suit
    accelerators, where one batched product can beat many small ones (not measured yet).
    Both give the same outputs and take the same per-member dropout keys.
    """

    members: PyTree
    num: int = eqx.field(static=True)
    vectorise: bool = eqx.field(static=True)

    def __init__(
        self, make: Callable[[PRNGKeyArray], eqx.Module], num: int, *, key: PRNGKeyArray,
        vectorise: bool = False,
    ):
        if num < 1:
            raise ValueError(f"An Ensemble needs num >= 1 members, got {num}.")
        keys = jax.random.split(key, num)
        if vectorise:
            self.members = eqx.filter_vmap(make)(keys)
        else:
            self.members = tuple(make(k) for k in keys)
        self.num = num
        self.vectorise = vectorise

    def __call__(self, *args: Any, key: PRNGKeyArray | None = None) -> PyTree:
        """Every member on the same `args`, outputs stacked along a leading `(num, ...)` axis;
        with a `key`, each member gets its own split of it."""
        keys = [None] * self.num if key is None else jax.random.split(key, self.num)
        if self.vectorise:
            if key is None:
                return eqx.filter_vmap(lambda m: m(*args))(self.members)
            return eqx.filter_vmap(lambda m, k: m(*args, key=k))(self.members, keys)
        outs = [m(*args, key=k) for m, k in zip(self.members, keys, strict=True)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    def train_batch(self, *args: Any) -> tuple[PyTree, Ensemble]:
        """Every member's `train_batch(*args)` on one batch (training mode of members with
        running statistics): outputs with a leading `(num, ...)` axis, and the new ensemble."""
        if self.vectorise:
            outs, members = eqx.filter_vmap(lambda m: m.train_batch(*args))(self.members)
        else:
            pairs = [m.train_batch(*args) for m in self.members]
            outs = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[0] for p in pairs])
            members = tuple(p[1] for p in pairs)
        return outs, eqx.tree_at(lambda e: e.members, self, members)

    def member(self, i: int) -> eqx.Module:
        """The i-th member as a plain module."""
        if not self.vectorise:
            return self.members[i]
        arrays, static = eqx.partition(self.members, eqx.is_array)
        return eqx.combine(jax.tree.map(lambda x: x[i], arrays), static)

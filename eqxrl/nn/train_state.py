"""`TrainState`: a model, its optimiser and optimiser state, as one PyTree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree

from eqxrl.core.types import HyperValue, Metrics
from eqxrl.nn.normalization import is_running_stats, with_stats_of


def trainable(tree: PyTree) -> PyTree:
    """The inexact arrays of `tree` (a model or its gradients) that the optimiser steps: all of
    them but the running statistics of normalisation layers (`RunningStats`)."""
    tree = jax.tree.map(lambda x: None if is_running_stats(x) else x, tree,
                        is_leaf=is_running_stats)
    return eqx.filter(tree, eqx.is_inexact_array)


class TrainState(eqx.Module):
    """A model with its optimiser state and update count.

    The optimiser is a static field, built once. Its numeric hyperparameters (learning rate,
    weight decay, ...) live in `opt_state` as array leaves when the optimiser is wrapped in
    `optax.inject_hyperparams`, so a vmapped sweep over them shares one compiled program.
    Running statistics (`RunningStats`, of `BatchRenorm`) are part of `model` but not of the
    optimiser: they move only through `apply_loss_fn_with_stats`.
    """

    model: PyTree
    opt_state: optax.OptState
    step: Int[Array, ""]
    tx: optax.GradientTransformation = eqx.field(static=True)

    @classmethod
    def create(cls, model: PyTree, tx: optax.GradientTransformation, **hyperparams: HyperValue):
        """Initialise the optimiser state for `model`.

        `hyperparams` (for example `learning_rate=3e-4`) overwrite the values that
        `optax.inject_hyperparams` stored, and may be traced arrays inside `jax.vmap`.

        Example:
            ```python
            critic = eqxrl.TrainState.create(q_net, eqxrl.ADAM, learning_rate=1e-3, b1=0.5)
            ```
        """
        opt_state = tx.init(trainable(model))
        if hyperparams:
            found = optax.tree_utils.tree_get_all_with_path(opt_state, "hyperparams")
            if not found:
                raise ValueError(
                    f"TrainState.create got hyperparams {sorted(hyperparams)}, but the optimiser "
                    "stores none; wrap it as optax.inject_hyperparams(optax.adam)(...)."
                )
            values = {k: jnp.asarray(v, jnp.float32) for k, v in hyperparams.items()}
            opt_state = optax.tree_utils.tree_set(opt_state, **values)
        return cls(model=model, opt_state=opt_state, step=jnp.zeros((), jnp.int32), tx=tx)

    def apply_gradients(self, grads: PyTree) -> TrainState:
        """Take one optimiser step. Params go to `tx.update`, so weight decay works."""
        updates, opt_state = self.tx.update(trainable(grads), self.opt_state,
                                            trainable(self.model))
        return TrainState(
            model=eqx.apply_updates(self.model, updates),
            opt_state=opt_state,
            step=self.step + 1,
            tx=self.tx,
        )

    def apply_loss_fn(
        self, loss_fn: Callable[..., tuple[Any, Metrics]], *args: Any, **kwargs: Any
    ) -> tuple[TrainState, Metrics]:
        """Differentiate `loss_fn(model, *args, **kwargs) -> (loss, aux)` and step.

        Returns the new state and `{"loss": loss, "grad_norm": ..., **aux}`.

        Example:
            ```python
            def loss(critic, obs, action, target):  # -> (scalar, metrics dict)
                q = eqxrl.ensemble_q(critic, obs, action)  # (ensemble, batch)
                return jnp.mean((q - target) ** 2), {"q_mean": jnp.mean(q)}

            state, metrics = state.apply_loss_fn(loss, batch.obs, batch.action, target)
            ```
        """
        (loss, aux), grads = value_and_grad(loss_fn, self.model, *args, **kwargs)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(trainable(grads)), **aux}
        return self.apply_gradients(grads), metrics

    def apply_loss_fn_with_stats(
        self, loss_fn: Callable[..., tuple[Any, tuple[Metrics, PyTree]]], *args: Any,
        **kwargs: Any,
    ) -> tuple[TrainState, Metrics]:
        """Like `apply_loss_fn` for a model with running statistics (`BatchRenorm`).

        `loss_fn(model, *args, **kwargs)` returns `(loss, (aux, model_after))`, where
        `model_after` is the model its training-mode pass returned (`model.train_batch(...)`).
        The step applies the gradients to the parameters and keeps `model_after`'s statistics.
        """
        (loss, (aux, model_after)), grads = value_and_grad(loss_fn, self.model, *args, **kwargs)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(trainable(grads)), **aux}
        stepped = self.apply_gradients(grads)
        model = with_stats_of(stepped.model, jax.lax.stop_gradient(model_after))
        return eqx.tree_at(lambda s: s.model, stepped, model), metrics


def value_and_grad(
    loss_fn: Callable[..., tuple[Any, Any]], model: PyTree, *args: Any, **kwargs: Any
) -> tuple[tuple[Float[Array, ""], Any], PyTree]:
    """`((loss, aux), grads)` of a loss with aux outputs, w.r.t. the inexact arrays of `model`."""
    return eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, *args, **kwargs)


def polyak(online: PyTree, target: PyTree, tau: HyperValue) -> PyTree:
    """Polyak-average `target` towards `online`: `tau * online + (1 - tau) * target`.

    Only inexact arrays move; integer, boolean and static parts of `target` are kept.
    A concrete `tau` (a Python number or a concrete 0-d array) must lie in [0, 1]; a traced
    one (inside `jit` or `vmap`) is not checked, so validate it where it is set (the config).
    """
    if not isinstance(tau, jax.core.Tracer) and np.ndim(tau) == 0:
        value = float(tau)
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"polyak: tau must be in [0, 1], got {value:g}. It is the fraction of the online "
                "weights mixed into the target per update (0.005 is typical; 1 copies them)."
            )

    def mix(o, t):
        if eqx.is_inexact_array(t):
            return (tau * o + (1.0 - tau) * t).astype(t.dtype)
        return t

    return jax.tree.map(mix, online, target)


def check_one_agent(state: PyTree, where: str) -> None:
    """Refuse the state of several stacked agents passed where one agent's state is expected.

    `jax.vmap(init)` over keys or hyperparameters stacks agents: every array gains a leading
    agent axis. `update` and `act` take one agent's state, so such a state must go through
    `jax.vmap` (or the loops, which vmap for you). Without it, the stacked weights meet the
    batch in a matmul and JAX reports a contraction mismatch far from the cause; this check
    runs first, at trace time (free), by reading the update counts of the state's
    `TrainState`s, which are scalars for one agent.
    """
    found = [leaf for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, TrainState))
             if isinstance(leaf, TrainState)]
    for train_state in found:
        shape = tuple(jnp.shape(train_state.step))
        if shape:
            agents = "x".join(map(str, shape))
            raise ValueError(
                f"{where} got the state of {agents} stacked agents (its TrainState.step has shape "
                f"{shape}, expected () for one agent). Map it over the agents with "
                f"jax.vmap({where}, in_axes=...), in_axes=None for what the agents share (the "
                "config), as the loops do; or take one agent's state with "
                "eqxrl.tree_unstack(states)[i].")

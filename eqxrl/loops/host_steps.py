"""The compiled calls of the host off-policy loop: store a transition, choose the next action,
learn, each on flat lists of arrays that are donated from call to call.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from eqxrl.core.jit import merge, split
from eqxrl.core.spec import EnvSpec
from eqxrl.core.types import Transition
from eqxrl.data.dataset import Dataset
from eqxrl.loops.common import batch_sampler, explorer, random_action
from eqxrl.loops.contract import OffPolicyHooks
from eqxrl.loops.offline_mix import mixed_sampler
from eqxrl.run.agents import Agents
from eqxrl.vision.obs_encoder import has_images

UNROLL_IMAGE_UPDATES = 8


class Flat:
    """A PyTree held as its list of arrays between compiled calls, with the way back."""

    def __init__(self, example: Any):
        self.static = split(example)[1]

    def flatten(self, tree: Any) -> list:
        """The array leaves of `tree`, which must have the example's structure.

        Raises:
            ValueError: if the tree's structure is not the example's.
        """
        dynamic, static = split(tree)
        if static[0] != self.static[0]:
            raise ValueError(f"Structure changed: expected {self.static[0]}, got {static[0]}.")
        return dynamic

    def rebuild(self, dynamic: list) -> Any:
        """The tree back from its array leaves (from `flatten`, or a compiled call's outputs)."""
        return merge(dynamic, self.static)


class StepFunctions(NamedTuple):
    """What `make_step_functions` returns."""

    random_step: Callable
    train_step: Callable
    act: Callable
    learn: Callable
    sk: Flat  # rebuilds and flattens the (state, key) carry
    buf: Flat  # rebuilds and flattens the replay buffer


def make_step_functions(
    spec: EnvSpec, config: Any, algorithm: ModuleType, state_key: Any, buffer: Any, agents: Agents,
    hooks: OffPolicyHooks = OffPolicyHooks(),  # noqa: B008 (a frozen record)
    offline: Dataset | None = None, offline_rewards: tuple[float, float] = (1.0, 0.0),
):
    """The loop's compiled calls on flat `(state-and-key arrays, buffer arrays)` carries.

    Every array has the agent axis first. `random_step` and `train_step` take the flat carry
    and one transition per agent (a tuple of host arrays, the fields of `Transition`); they
    store the transitions and return the new flat carry and the next actions. `train_step`
    also takes the next observations and the env step they are acted on, and (unless told not
    to learn) runs `config.run.utd` updates per agent and returns their metrics (averaged over
    the updates) and whether all of them are finite, per agent. Its
    parts `act(state-and-key arrays, obs)` and `learn(state-and-key arrays, buffer arrays)` are
    returned too (`benchmarks/sac_online.py` times `learn` alone). With an `offline` dataset
    (`--offline-data`), every batch mixes its rows with the buffer's (`eqxrl.loops.offline_mix`).
    """
    sk, buf = Flat(state_key), Flat(buffer)
    utd = config.run.utd
    # Pixel updates are written out one after another (compile time grows with utd, so up to
    # UNROLL_IMAGE_UPDATES of them); vector ones run in a scan.
    unrolled = utd == 1 or (has_images(spec) and utd <= UNROLL_IMAGE_UPDATES)
    sample, explore = batch_sampler(hooks, config), explorer(algorithm, hooks)

    def store_in(buffer_arrays: list, transition: tuple) -> list:
        return buf.flatten(buf.rebuild(buffer_arrays).add(Transition(*transition)))

    def observed(state, transition: tuple):
        if hooks.observe is None:
            return state
        return hooks.observe(state, jax.tree.map(lambda x: x[None], Transition(*transition)))

    def observe_one(sk_arrays: list, transition: tuple) -> list:
        state, key = sk.rebuild(sk_arrays)
        return sk.flatten((observed(state, transition), key))

    def random_one(sk_arrays: list, buffer_arrays: list, transition: tuple):
        state, key = sk.rebuild(sk_arrays)
        state = observed(state, transition)
        key, k = jax.random.split(key)
        carry = (sk.flatten((state, key)), store_in(buffer_arrays, transition))
        return carry, random_action(spec, k)

    random_step = jax.jit(
        lambda flat, transition: agents.over(random_one)(*flat, transition), donate_argnums=0
    )
    # Storing and learning are two compiled calls on purpose: in one call that both updates
    # the donated buffer and trains on samples from it, XLA copied the whole buffer every
    # step (+100-130 ms for a 1M-row HalfCheetah buffer on CPU; a store alone takes ~0.2 ms).
    store = jax.jit(agents.over(store_in), donate_argnums=0)
    observe = jax.jit(agents.over(observe_one), donate_argnums=0)

    # The next action is chosen before this step's updates, in its own small call, and the
    # updates are dispatched after it: the host reads the action as soon as `act` is done and
    # steps the envs while the device is still learning (the action is one step's updates
    # behind). Both calls split the carry's key the same way: `learn` keeps the first part and
    # uses the second, `act` uses the third.
    def act_one(sk_arrays: list, obs, env_step):
        state, key = sk.rebuild(sk_arrays)
        k_act = jax.random.split(key, 3)[2]
        return explore(state, jax.tree.map(lambda x: x[None], obs), k_act, env_step)[0]

    if offline is not None:
        mixed = mixed_sampler(config.run.offline_fraction, config.run.batch_size,
                              offline_rewards)

    def learn_one(sk_arrays: list, buffer_arrays: list, offline: Dataset | None):
        state, key = sk.rebuild(sk_arrays)
        data = buf.rebuild(buffer_arrays)
        key, k_update, _ = jax.random.split(key, 3)

        def one_update(state, k):
            k_sample, k_loss = jax.random.split(k)
            rows = sample(data, k_sample) if offline is None else mixed(data, offline, k_sample)
            batch = agents.split_batch(rows)
            return algorithm.update(state, batch, k_loss, config)

        keys = jax.random.split(k_update, utd)
        if unrolled:
            # Straight-line code, not a scan: on XLA's CPU backend a conv net trains 4-6x
            # slower inside a loop (DrQ's learn call at batch 8: 654 ms against 96 ms for one
            # update; 609 against 93 ms an update at --utd 2).
            steps = []
            for k in keys:
                state, metrics = one_update(state, k)
                steps.append(metrics)
            metrics = jax.tree.map(lambda *v: jnp.stack(v), *steps)  # as the scan stacks them
        else:
            state, metrics = jax.lax.scan(one_update, state, keys)
        metrics = {k: jnp.mean(v) for k, v in metrics.items()}
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        return sk.flatten((state, key)), metrics, finite

    act = jax.jit(agents.over(act_one, (0, 0, None)))
    learn_jit = jax.jit(agents.over(learn_one, (0, 0, None)), donate_argnums=0)

    def learn(sk_arrays: list, buffer_arrays: list):
        return learn_jit(sk_arrays, buffer_arrays, offline)  # the dataset: an argument, shared

    def train_step(flat: tuple[list, list], transition: tuple, obs, env_step: int,
                   learns: bool = True):
        """Store, act for env step `env_step` (0-based), then learn if `learns`; the metrics
        and the finite flag are None when it does not."""
        buffer_arrays = store(flat[1], transition)
        sk_arrays = flat[0] if hooks.observe is None else observe(flat[0], transition)
        action = act(sk_arrays, obs, np.int32(env_step))
        if not learns:
            return (sk_arrays, buffer_arrays), action, None, None
        sk_arrays, metrics, finite = learn(sk_arrays, buffer_arrays)
        return (sk_arrays, buffer_arrays), action, metrics, finite

    return StepFunctions(random_step, train_step, act, learn, sk, buf)

"""Test-wide strictness: silent rank broadcasting is an error (DESIGN.md section 4)."""

import json
import os
import pathlib
import shutil
import tempfile

# One persistent XLA compilation cache per test session, shared by the xdist workers and the
# subprocesses the tests start (they inherit the variables): many tests compile the same small
# programs (test_sac, test_td3 and test_iql took 85 s instead of 100 s). The folder is new for
# every session, so a run never starts warm from an earlier one, and it is removed at the end.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="eqxrl-test-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Headless MuJoCo rendering: PyOpenGL must pick EGL before anything imports it, or an EGL
# context is read through GLX function pointers and frames come back black.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtype promotion stays off: optax's Adam under inject_hyperparams computes
# `b1 ** count` (float32 ** int32), which strict mode rejects inside optax itself.


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by fixtures
def pytest_collection_modifyitems(config, items):
    """Test modules longest first, by the seconds measured for their tests (tests/durations.json:
    a `--durations=0` run of each suite; a test not listed counts 1 s). pytest-xdist hands each
    worker a contiguous share of this order and moves the tail to whichever is idle, so the long
    learning tests start early instead of one of them ending the run alone on one core. A
    module's tests stay together and in their order: module fixtures are made once."""
    seconds = json.loads((pathlib.Path(__file__).parent / "durations.json").read_text())
    total: dict[str, float] = {}
    first: dict[str, int] = {}  # where each module starts: ties keep the collected order
    for i, item in enumerate(items):
        name = item.module.__name__
        first.setdefault(name, i)
        total[name] = total.get(name, 0.0) + seconds.get(item.nodeid, 1.0)
    items.sort(key=lambda item: (-total[item.module.__name__], first[item.module.__name__]))


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:  # the process that made the cache folder (xdist's controller, or the only one)
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def assert_trees_equal(a, b):
    """Bit-exact equality of two PyTrees: same structure and identical array leaves."""
    import equinox as eqx
    import numpy as np

    arrays_a, static_a = eqx.partition(a, eqx.is_array)
    arrays_b, static_b = eqx.partition(b, eqx.is_array)
    assert jax.tree.structure(arrays_a) == jax.tree.structure(arrays_b)
    for x, y in zip(jax.tree.leaves(arrays_a), jax.tree.leaves(arrays_b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_vmap_equals_separate_runs(
    algorithm, spec, config, batch, updates=3, seeds=4, init=None, atol=1e-5
):
    """`seeds` agents initialised and updated as one vmapped program equal separate runs.

    `init(key, spec, config)` defaults to the algorithm's.
    Float tolerance, not bit-exact: XLA may fuse and order a batched program differently.
    """
    import equinox as eqx
    import numpy as np

    import eqxrl

    init = algorithm.init if init is None else init
    keys = jax.random.split(jax.random.key(0), seeds)
    one = eqxrl.jit(lambda s, k: algorithm.update(s, batch, k, config)[0])
    many = eqxrl.jit(jax.vmap(lambda s, k: algorithm.update(s, batch, k, config)[0]))
    states = eqxrl.jit(jax.vmap(lambda k: init(k, spec, config)))(keys)
    for i in range(updates):
        states = many(states, jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i))
    for seed, vmapped in enumerate(eqxrl.tree_unstack(states)):
        state = init(keys[seed], spec, config)
        for i in range(updates):
            state = one(state, jax.random.fold_in(keys[seed], i))
        for a, b in zip(jax.tree.leaves(eqx.filter(vmapped, eqx.is_inexact_array)),
                        jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)


def pendulum_dataset_file(path, n=256, loc=0.0, scale=1.0):
    """A D4RL-style file of random Pendulum-shaped transitions (obs ~ N(loc, scale²)), one
    trajectory cut into 64-step episodes, with reference returns; returns its path."""
    import jax.numpy as jnp

    import eqxrl

    k = jax.random.split(jax.random.key(0), 3)
    trajectory = loc + scale * jax.random.normal(k[0], (n + 1, 3))
    data = eqxrl.Dataset(eqxrl.Transition(
        obs=trajectory[:-1],
        action=jax.random.uniform(k[1], (n, 1), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n,)),
        next_obs=trajectory[1:],
        terminated=jnp.zeros(n, bool),
        truncated=jnp.arange(n) % 64 == 63,
    ))
    info = eqxrl.DatasetInfo(env_id="Pendulum-v1", ref_min_score=-1200.0, ref_max_score=-150.0)
    eqxrl.save_dataset(str(path), data, info)
    return str(path)


def make_batch(key, n=16, obs_dim=3, action_dim=2):
    """A random batch of `n` transitions (some terminated, some truncated)."""
    import jax.numpy as jnp

    import eqxrl

    k = jax.random.split(key, 4)
    return eqxrl.Transition(
        obs=jax.random.normal(k[0], (n, obs_dim)),
        action=jax.random.uniform(k[1], (n, action_dim), minval=-1, maxval=1),
        reward=jax.random.normal(k[2], (n,)),
        next_obs=jax.random.normal(k[3], (n, obs_dim)),
        terminated=jnp.arange(n) % 5 == 0,
        truncated=jnp.arange(n) % 7 == 0,
    )


def constant_critic(values, key=None):
    """An ensemble of Q(s, a) for 3-dim observations and 2-dim actions whose member i outputs
    values[i] for every input."""
    import equinox as eqx
    import jax.numpy as jnp

    import eqxrl

    key = jax.random.key(0) if key is None else key
    ens = eqxrl.Ensemble(lambda k: eqxrl.QFunction(3, 2, (4,), key=k), len(values), key=key)
    ens = jax.tree.map(lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, ens)
    biases = tuple(jnp.full(1, v, jnp.float32) for v in values)
    return eqx.tree_at(lambda e: tuple(m.net.layers[-1].bias for m in e.members), ens, biases)


def whole_and_resumed(algorithm, make_config, tmp_path, part_steps, train=None):
    """Train `make_config(tmp_path, "whole")` uninterrupted, and `"part"` stopped after
    `part_steps` then resumed to the same budget; return both runs loaded with their buffers.
    `train(config, algorithm)` defaults to the algorithm's `main` (which passes its hooks)."""
    import dataclasses

    import eqxrl

    if train is None:
        def train(config, algorithm):
            return algorithm.main(config)
    train(make_config(tmp_path, "whole"), algorithm)
    train(make_config(tmp_path, "part", total_steps=part_steps), algorithm)
    config = make_config(tmp_path, "part")
    train(dataclasses.replace(config, run=dataclasses.replace(
        config.run, resume=str(tmp_path / "part"))), algorithm)
    return (eqxrl.load_run(str(tmp_path / "whole"), buffer=True),
            eqxrl.load_run(str(tmp_path / "part"), buffer=True))


def state_gap(run_a, run_b, agents, relative=False):
    """The largest difference between the float leaves of two run folders' saved states,
    over `agents` (agent indices; [None] for a single-agent run). With `relative`, each
    leaf's difference is divided by its largest magnitude in `run_b`. The device tests'
    subprocess scripts import it."""
    import equinox as eqx
    import numpy as np

    import eqxrl

    def leaves(run_dir, agent):
        state = eqxrl.load_run(run_dir, agent=agent).state
        return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(state, eqx.is_inexact_array))]

    def one(x, y):
        diff = float(np.max(np.abs(x - y)))
        return diff / (float(np.max(np.abs(y))) + 1e-12) if relative else diff

    return max(one(x, y) for i in agents
               for x, y in zip(leaves(run_a, i), leaves(run_b, i), strict=True))

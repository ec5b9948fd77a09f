"""Test-wide strictness: silent rank broadcasting is an error (DESIGN.md section 4)."""

import os

# Headless MuJoCo rendering: PyOpenGL must pick EGL before anything imports it, or an EGL
# context is read through GLX function pointers and frames come back black.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Strict dtype promotion stays off: optax's Adam under inject_hyperparams computes
# `b1 ** count` (float32 ** int32), which strict mode rejects inside optax itself.


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

"""Test-wide strictness: silent broadcasting and dtype promotion are errors (DESIGN.md section 4)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

"""The one optimiser object every algorithm shares (see `ADAM`)."""

from __future__ import annotations

import optax

# One optimiser object shared by every algorithm, so every `TrainState` built with it has the
# same static field (one compiled program for all seeds and grid points); each TrainState sets
# its own learning rate, which lives in the optimiser state as an array.
ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)

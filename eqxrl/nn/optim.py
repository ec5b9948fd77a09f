"""The optimiser objects every algorithm shares (see `ADAM`)."""

from __future__ import annotations

import optax

ADAM = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)
"""Adam, one optimiser object shared by every algorithm, so every `TrainState` built with it has
the same static field (one compiled program for all seeds and grid points). Each TrainState
sets its own learning rate (and β1, β2), which live in the optimiser state as arrays:
`TrainState.create(model, ADAM, learning_rate=1e-3, b1=0.5)`."""

ADAMW = optax.inject_hyperparams(optax.adamw)(learning_rate=3e-4, weight_decay=0.0)
"""Adam with decoupled weight decay (Loshchilov and Hutter, 2019), as SimBa trains its networks:
`TrainState.create(model, ADAMW, learning_rate=..., weight_decay=...)`. Weight decay moves every
trainable array (LayerNorm scales and biases too, as optax's and sbx's AdamW do by default)."""

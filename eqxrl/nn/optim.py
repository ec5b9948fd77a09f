"""The optimiser objects every algorithm shares (see `ADAM`), and Adam with a linear decay."""

from __future__ import annotations

import jax.numpy as jnp
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


def _adam_linear_decay(learning_rate, end_fraction, decay_steps):
    """Adam whose step is scaled from 1 down to `end_fraction`, linearly over `decay_steps`
    updates, then held there."""
    def decay(count):
        return 1.0 - (1.0 - end_fraction) * jnp.minimum(count / decay_steps, 1.0)

    return optax.chain(optax.adam(learning_rate), optax.scale_by_schedule(decay))


ADAM_LINEAR_DECAY = optax.inject_hyperparams(_adam_linear_decay)(
    learning_rate=3e-4, end_fraction=1.0, decay_steps=1.0)
"""Adam with a learning rate decaying linearly to `learning_rate · end_fraction` over
`decay_steps` updates (SimbaV2's schedule), one shared object like `ADAM`; all three are arrays
in the optimiser state: `TrainState.create(model, ADAM_LINEAR_DECAY, learning_rate=1e-4,
end_fraction=0.5, decay_steps=1e6)`."""

"""Running observation normalisation whose statistics are state: SimBa's RSNorm.

Unlike `Normalizer`, whose statistics are fixed (a dataset's), `RunningNormalizer` moves its
mean and variance with every batch it observes, so it belongs in an algorithm's `State`: `update`
calls `observe` on the training batch, and `update` and `act` both normalise with it. The
statistics are exact over everything observed (Chan et al.'s parallel merge of mean and
variance), not an exponential average.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from eqxrl.data.dataset import Normalizer


class RunningNormalizer(eqx.Module):
    """`(obs − mean) / sqrt(var + eps)` with the mean and variance of every observation seen.

    Before anything is observed it is the identity (mean 0, variance 1). Works on one
    observation or a batch (leading axes), and on nested observations. Under the loops' vmap
    over agents each agent keeps its own statistics; with the batch split over devices the
    means reduce over the whole batch.
    """

    mean: PyTree
    var: PyTree
    count: Float[Array, ""]
    eps: float = eqx.field(static=True)

    @classmethod
    def create(cls, example_obs: PyTree, eps: float = 1e-8) -> RunningNormalizer:
        """Nothing seen yet, laid out like one observation."""
        if not eps > 0:
            raise ValueError(f"RunningNormalizer: eps must be > 0, got {eps}.")
        identity = Normalizer.identity(example_obs)
        return cls(identity.mean, identity.std, jnp.zeros((), jnp.float32), eps)

    def __call__(self, obs: PyTree) -> PyTree:
        """`(obs − mean) / sqrt(var + eps)` for one observation or a batch (leading axes)."""
        std = jax.tree.map(lambda v: jnp.sqrt(v + self.eps), self.var)
        return Normalizer(self.mean, std)(obs)

    def observe(self, obs: PyTree) -> RunningNormalizer:
        """The normaliser after also seeing `obs`, a batch with one leading axis."""
        n = None
        for x, mean in zip(jax.tree.leaves(obs), jax.tree.leaves(self.mean), strict=True):
            if jnp.ndim(x) != jnp.ndim(mean) + 1 or jnp.shape(x)[1:] != jnp.shape(mean):
                raise ValueError(
                    f"RunningNormalizer.observe: expected a batch of observations of shape "
                    f"(batch, {', '.join(map(str, jnp.shape(mean)))}), got {jnp.shape(x)}.")
            n = jnp.shape(x)[0]
        if n is None:
            return self
        n_b = jnp.float32(n)
        total = self.count + n_b
        w = n_b / total  # the batch's share of everything seen

        def moments(x):
            x = x.astype(jnp.float32)
            mean_b = jnp.mean(x, axis=0)
            return mean_b, jnp.mean(jnp.square(x - mean_b[None]), axis=0)

        def new_mean(x, mean):
            return mean + w * (moments(x)[0] - mean)

        def new_var(x, mean, var):  # XLA computes each batch moment once
            mean_b, var_b = moments(x)
            return (1.0 - w) * var + w * var_b + w * (1.0 - w) * jnp.square(mean_b - mean)

        return RunningNormalizer(jax.tree.map(new_mean, obs, self.mean),
                                 jax.tree.map(new_var, obs, self.mean, self.var), total, self.eps)

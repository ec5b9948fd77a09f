"""What every dataset reader returns besides the data: `DatasetInfo`, and `DatasetError`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from jaxtyping import ArrayLike

from eqxrl.core.checks import ConfigError
from eqxrl.envs.evaluation import normalized_score


class DatasetError(ConfigError):
    """A dataset file or array that is missing keys, has wrong shapes, or holds bad values."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: its env, how it was made, and the reference returns of its score."""

    env_id: str | None = None
    """gymnasium id of the env the data comes from (None if unknown)"""
    ref_min_score: float | None = None
    """mean episode return of a uniformly random policy (0 of the normalised score)"""
    ref_max_score: float | None = None
    """mean episode return of the expert policy (100 of the normalised score)"""
    num_episodes: int = 0
    """episodes in the dataset (a cut or unfinished episode counts as one)"""
    source: str = ""
    """how the data was made, for example 'random' or 'checkpoint runs/x step 100000'"""
    description: str = ""
    """free text"""

    def __post_init__(self):
        low, high = self.ref_min_score, self.ref_max_score
        if low is not None and high is not None and low == high:
            raise ValueError(
                f"DatasetInfo: ref_min_score and ref_max_score are both {low}; the normalised "
                "score divides by their difference, so they must differ."
            )

    @property
    def reference(self) -> tuple[float, float] | None:
        """`(ref_min_score, ref_max_score)`, or None when either is unknown."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return (self.ref_min_score, self.ref_max_score)

    def normalized_score(self, returns: ArrayLike | Sequence[float]) -> np.ndarray:
        """D4RL normalised score `100 * (return - ref_min) / (ref_max - ref_min)`."""
        if self.reference is None:
            raise ValueError(
                f"DatasetInfo(env_id={self.env_id!r}) has no reference scores (ref_min_score="
                f"{self.ref_min_score}, ref_max_score={self.ref_max_score}); pass them when "
                "making the dataset (python -m eqxrl.tools.collect ... --ref-max-score X)."
            )
        returns = np.asarray(returns, np.float64)
        # Flattened so the result is an array even for a single return.
        return normalized_score(returns.reshape(-1), self.reference).reshape(returns.shape)

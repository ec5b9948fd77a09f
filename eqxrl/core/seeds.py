"""Seeds derived from integers, for episode resets and evaluations."""

from __future__ import annotations

import numpy as np


def derived_seed(*parts: int) -> int:
    """A 31-bit seed derived deterministically from integers (episode and evaluation seeds)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)

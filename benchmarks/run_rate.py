"""The steady rate of a finished run, read from its `train.csv`; shared by the benchmarks.

Each row's `<unit>s_per_second` is the rate since the previous row (the first row's counts
from the session's start, so it includes compilation), not the session's mean up to the row.
A benchmark's steady rate is therefore the steps over the seconds of the log intervals that lie
after `begin`: the intervals' seconds are their steps over their rates.
"""

from __future__ import annotations

import os

import numpy as np


def steady_rate(run_dir: str, begin: int) -> float:
    """Steps (or updates) per second of agent 0 over the log intervals starting at or after
    step `begin`; each interval's seconds are its steps over its row's rate."""
    from eqxrl.run.logging import read_metrics

    rows = read_metrics(os.path.join(run_dir, "train.csv"))
    rate_key = next(k for k in rows if k.endswith("s_per_second"))
    steps, rates = rows["step"], rows[rate_key]
    if "agent" in rows:  # one row per agent and step: keep agent 0's
        keep = rows["agent"] == 0
        steps, rates = steps[keep], rates[keep]
    starts, ends, rates = steps[:-1], steps[1:], rates[1:]
    inside = starts >= begin
    if not np.any(inside):
        raise ValueError(f"{run_dir}: no log interval starts at or after step {begin}; "
                         f"logged steps {steps.tolist()}. Log more often or run longer.")
    spans = (ends - starts)[inside]
    return float(np.sum(spans) / np.sum(spans / rates[inside]))

"""Metric names: flat `group/name` keys from named groups."""

from __future__ import annotations

from eqxrl.core.types import Metrics


def prefixed(**groups: Metrics) -> Metrics:
    """One flat metrics dict from named groups: `prefixed(critic={"loss": l})` -> `critic/loss`."""
    return {f"{name}/{k}": v for name, metrics in groups.items() for k, v in metrics.items()}

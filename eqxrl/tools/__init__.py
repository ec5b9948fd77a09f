"""Command-line tools around runs: `python -m eqxrl.tools.collect` (datasets from policies and
runs) and `python -m eqxrl.tools.plot` (learning curves).
"""


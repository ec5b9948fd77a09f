"""How much of each algorithm file is copied: the share of its lines found in another one.

Run:  python benchmarks/shared_lines.py
      python benchmarks/shared_lines.py --show td3_bc     (also list td3_bc's shared lines)

A line counts when, stripped of surrounding whitespace, it is not blank and not only brackets
and punctuation (`)`, `],`, `\"\"\"`); it is shared when the same stripped line appears in at
least one other algorithm file. "share" counts every line (the target is at most 30%). Two
columns help to read it: "no imports" leaves the import block out of both counts, and "blocks"
is the share of the code after the imports that lies in a run of at least `--block` (4)
consecutive counted lines found in the same order in another file: copied code rather than
lines that are the same by the shared contract (`def update(`, `spec=spec,`, section banners).
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ALGORITHMS = ("sac", "td3", "iql", "cql", "bc", "td3_bc")
PUNCTUATION_ONLY = re.compile(r"^[\s()\[\]{},:;.\"'`]*$")
IMPORT = re.compile(r"^(import [\w.]+|from [\w.]+ import )")
TARGET = 30.0


def counted_lines(path: str) -> list[str]:
    """The stripped lines of a file that count (not blank, not only punctuation)."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not PUNCTUATION_ONLY.match(line)]


def import_block(lines: list[str]) -> tuple[int, int]:
    """`(start, stop)`: the counted lines of the module's import block are `lines[start:stop]`."""
    start, stop, inside = None, 0, False
    for i, line in enumerate(lines):
        if IMPORT.match(line):
            start = i if start is None else start
            stop, inside = i + 1, line.endswith("(")
        elif inside and re.match(r"^\w+( as \w+)?,?$", line):  # a name in `from x import (`
            stop = i + 1
        elif start is not None:
            break
    return (start or 0), stop


def in_blocks(lines: list[str], others: set[tuple[str, ...]], k: int) -> int:
    """How many of `lines` lie in a run of `k` consecutive lines that is in `others`."""
    marked = [False] * len(lines)
    for i in range(len(lines) - k + 1):
        if tuple(lines[i:i + k]) in others:
            marked[i:i + k] = [True] * k
    return sum(marked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", nargs="*", default=(), choices=ALGORITHMS,
                        help="also print the shared lines of these files")
    parser.add_argument("--block", type=int, default=4, help="run length of a copied block")
    args = parser.parse_args()
    lines = {n: counted_lines(os.path.join(ROOT, "algorithms", f"{n}.py")) for n in ALGORITHMS}
    files_with = Counter(line for n in ALGORITHMS for line in set(lines[n]))  # once per file
    blocks_of = {n: import_block(lines[n]) for n in ALGORITHMS}
    no_imports = {n: lines[n][:blocks_of[n][0]] + lines[n][blocks_of[n][1]:] for n in ALGORITHMS}
    body = {n: lines[n][blocks_of[n][1]:] for n in ALGORITHMS}  # the code after the imports
    runs = {n: {tuple(b[i:i + args.block]) for i in range(len(b) - args.block + 1)}
            for n, b in body.items()}
    print(f"{'file':<12}{'lines':>6}{'shared':>8}{'share':>8}{'no imports':>12}{'blocks':>8}")
    for n in ALGORITHMS:
        shared = sum(files_with[line] > 1 for line in lines[n])
        shared_code = sum(files_with[line] > 1 for line in no_imports[n])
        others = set().union(*(r for m, r in runs.items() if m != n))
        blocks = in_blocks(body[n], others, args.block)
        over = "" if 100 * shared / len(lines[n]) <= TARGET else f"  > {TARGET:g}%"
        print(f"{n + '.py':<12}{len(lines[n]):>6}{shared:>8}{100 * shared / len(lines[n]):>7.1f}%"
              f"{100 * shared_code / len(no_imports[n]):>11.1f}%"
              f"{100 * blocks / len(body[n]):>7.1f}%{over}")
    for n in args.show:
        print(f"\n{n}.py, shared lines:")
        print("\n".join(f"  {line}" for line in lines[n] if files_with[line] > 1))


if __name__ == "__main__":
    main()

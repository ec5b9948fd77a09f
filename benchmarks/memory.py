"""Resident memory of a SAC run around each log, evaluation and checkpoint (growth after warm-up).

Run:  python benchmarks/memory.py --total-steps 30000 --checkpoint-interval 5000

Trains SAC on Pendulum-v1 in this process (start steps 1000, evaluation every 2500 steps, no
progress bar) and reads this process's RSS (`/proc/self/status`, Linux) before and after
every `Run.log`, `Run.evaluate` and `Run.save`. Prints the RSS at the checkpoints, and the
growth from the end of the first checkpoint (warm-up: the first evaluation and the first
checkpoint compile what they need) to the end of the run, as a percentage.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import eqxrl
import eqxrl.run.harness as harness
from eqxrl.algorithms import sac


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def record_around(events: list, name: str) -> None:
    """Wrap `Run.<name>` to append `(name, step, rss before, rss after)` at each call."""
    original = getattr(harness.Run, name)

    def wrapped(self, *args, **kwargs):
        before = rss_mb()
        out = original(self, *args, **kwargs)
        events.append((name, self.progress.step, before, rss_mb()))
        return out

    setattr(harness.Run, name, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-steps", type=int, default=30_000)
    parser.add_argument("--checkpoint-interval", type=int, default=5_000)
    args = parser.parse_args()
    events: list = []
    for name in ("log", "evaluate", "save"):
        record_around(events, name)
    with tempfile.TemporaryDirectory() as tmp:
        config = sac.Config(run=eqxrl.OnlineRun(
            env_id="Pendulum-v1", total_steps=args.total_steps, start_steps=1000,
            eval_interval=2500, checkpoint_interval=args.checkpoint_interval, progress=False,
            tensorboard=False, run_dir=f"{tmp}/run"))
        start = time.perf_counter()
        sac.main(config)
    saves = [e for e in events if e[0] == "save"]
    for _, step, before, after in saves:
        print(f"checkpoint at step {step:>7}: RSS {before:7.1f} -> {after:7.1f} MB")
    warm, end = saves[0][3], events[-1][3]
    print(f"after warm-up (end of the first checkpoint): {warm:.1f} MB; at the end: {end:.1f} MB; "
          f"growth {100 * (end - warm) / warm:+.1f}% ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

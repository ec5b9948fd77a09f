"""The subcommands of `eqxrl-collect` (`eqxrl.tools.collect`): each a frozen dataclass whose
fields are its flags, checked when it is made."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Output:
    output: str
    """where to write: a .hdf5/.h5 file (D4RL style), or a folder for a Minari dataset"""
    seed: int = 0
    """seed of env resets and policy keys: the same seed gives the same dataset"""
    ref_min_score: float | None = None
    """return of a random policy for normalised scores; default: measured (--ref-episodes)"""
    ref_max_score: float | None = None
    """expert return for normalised scores; default: the deterministic return of
    --reference-run's policy (policy/replay: of --run-dir's policy, so give an expert run
    or this flag when the data is not expert)"""
    reference_run: str | None = None
    """run folder of the expert policy that defines --ref-max-score"""
    ref_episodes: int = 10
    """episodes over which reference returns are averaged"""
    progress: bool = True
    """show a progress bar (the `wrote ...` line is printed either way)"""
    overwrite: bool = False
    """replace --output if it exists (otherwise an existing output is refused)"""

    def __post_init__(self):
        if self.ref_episodes < 1:
            raise ValueError(f"--ref-episodes must be >= 1, got {self.ref_episodes}.")
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0 (numpy's seeds are unsigned), got {self.seed}.")
        if None not in (self.ref_min_score, self.ref_max_score) and not (
                self.ref_min_score < self.ref_max_score):
            raise ValueError(
                f"--ref-min-score ({self.ref_min_score}) must be below --ref-max-score "
                f"({self.ref_max_score}): they are the random and the expert return.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Random(_Output):
    """A dataset of uniformly random actions ("random")."""

    env_id: str
    """gymnasium environment id (continuous actions)"""
    num_steps: int = 1_000_000
    """transitions to collect"""

    def __post_init__(self):
        super().__post_init__()
        if self.num_steps < 1:
            raise ValueError(f"--num-steps must be >= 1, got {self.num_steps}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy(_Output):
    """A dataset of a trained run's policy ("medium", "expert")."""

    run_dir: str
    """run folder of train_online (config.json and checkpoints/)"""
    step: int | None = None
    """checkpoint step to use; default: the newest"""
    agent: int | None = None
    """which agent of a run of several (seeds, grid points): its index in summary.json"""
    num_steps: int = 1_000_000
    """transitions to collect"""
    deterministic: bool = False
    """act with the policy's mode instead of sampling from it"""
    noise_std: float = 0.0
    """std of Gaussian noise added to each action (before clipping to [-1, 1])"""
    epsilon: float = 0.0
    """probability of a uniformly random action at each step"""

    def __post_init__(self):
        super().__post_init__()
        if self.num_steps < 1:
            raise ValueError(f"--num-steps must be >= 1, got {self.num_steps}.")
        if self.noise_std < 0:
            raise ValueError(f"--noise-std must be >= 0, got {self.noise_std}.")
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"--epsilon must be in [0, 1], got {self.epsilon}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Replay(_Output):
    """A trained run's replay buffer as a dataset ("medium-replay")."""

    run_dir: str
    """run folder of train_online (config.json and checkpoints/)"""
    step: int | None = None
    """checkpoint step to use; default: the newest"""
    agent: int | None = None
    """which agent of a run of several (seeds, grid points): its index in summary.json"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Concat:
    """Datasets of one env joined end to end ("medium-expert")."""

    inputs: tuple[str, ...]
    """datasets to join, in order (.hdf5/.h5 files or Minari folders)"""
    output: str
    """where to write: a .hdf5/.h5 file (D4RL style), or a folder for a Minari dataset"""
    ref_min_score: float | None = None
    """random-policy return; default: that of the inputs (which must agree)"""
    ref_max_score: float | None = None
    """expert return; default: that of the inputs (which must agree)"""
    overwrite: bool = False
    """replace --output if it exists (otherwise an existing output is refused)"""

    def __post_init__(self):
        if len(self.inputs) < 1:
            raise ValueError("--inputs needs at least one dataset.")

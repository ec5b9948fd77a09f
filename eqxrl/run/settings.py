"""The run settings every algorithm shares: `RunConfig`, and its online, offline and on-policy
forms.

An algorithm's `Config` holds its own hyperparameters and one run configuration, `run`: an
`OnlineRun` (gymnasium env, env-step budget, replay buffer) or an `OfflineRun` (dataset,
update budget). Annotated with `tyro.conf.arg(name="")`, the run settings are flat
command-line flags (`--env-id`, `--seed`, `--total-steps`) beside the algorithm's own:

    @dataclasses.dataclass(frozen=True)
    class Config:
        run: Annotated[OnlineRun, tyro.conf.arg(name="")] = OnlineRun()
        actor_lr: float = 3e-4
        \"\"\"actor learning rate\"\"\"

        def __post_init__(self):
            positive(self, "actor_lr")

The loops read only `config.run`; the algorithm reads only its own fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Literal

import tyro

from eqxrl.core.checks import ConfigError, at_least, fail, only_with, within
from eqxrl.run.processes import check_processes


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of a training run that every algorithm shares (what the loops read)."""

    env_id: str | None = None
    """gymnasium environment id (offline: None reads it from the dataset's metadata)"""
    seed: int = 0
    """seed for network init, exploration, batch sampling, env resets and evaluation"""
    num_seeds: int = 1
    """agents trained as one program (vmapped; offline, see --agents-layout), with seeds
    --seed, --seed + 1, ... A numeric hyperparameter given several values (--critic-lr 3e-4
    1e-3) adds a grid: every seed at every combination of values"""
    seeds: tuple[int, ...] | None = None
    """an explicit list of seeds, one agent each (instead of --seed and --num-seeds)"""
    grid: Annotated[tuple[tuple[str, tuple[float | int, ...]], ...], tyro.conf.Suppress] = ()
    """hyperparameter grid, filled by the command line from flags given several values
    (`--critic-lr 3e-4 1e-3`): ((field, values), ...); every point trains every seed"""
    devices: int = 0
    """devices to use: agents are split over them (one agent: its batch is); 0 uses every
    visible device. A resumed run may use another number (its state is resharded)"""
    num_processes: int = 1
    """processes of a multi-process run (jax.distributed), one per host or per GPU"""
    process_id: int | None = None
    """this process's index in a multi-process run (None: detected on a cluster)"""
    coordinator: str | None = None
    """HOST:PORT of process 0 in a multi-process run (None: detected on a cluster)"""
    process_timeout: int = 300
    """seconds a multi-process run waits at start for all of its processes to join"""
    eval_interval: int = 10_000
    """steps (online: env steps; offline: updates) between evaluations"""
    eval_episodes: int = 10
    """episodes per evaluation of the deterministic policy (one vectorised env)"""
    log_interval: int = 1_000
    """steps between training-metric logs"""
    checkpoint_interval: int = 50_000
    """steps between checkpoints (one is always written at the end and on Ctrl-C)"""
    keep_checkpoints: int = 2
    """how many recent checkpoints to keep"""
    run_dir: str | None = None
    """output folder (must not exist yet); default runs/<algo>__<env>__s<seed>__<time>"""
    resume: str | None = None
    """a run folder to continue from its newest checkpoint; with --total-steps (or
    --total-updates) it extends a finished run. Other flags that would change the run are refused"""
    tensorboard: bool = True
    """write TensorBoard events"""
    wandb: bool = False
    """also log to Weights & Biases (pip install 'eqxrl[wandb]')"""
    wandb_project: str = "eqxrl"
    """W&B project"""
    wandb_entity: str | None = None
    """W&B entity (user or team); None uses your default"""
    wandb_group: str | None = None
    """W&B group, for example one per sweep"""
    nan_check: bool = False
    """stop with an error naming the metric and step when a metric becomes NaN or inf, and at
    the first NaN or inf action (the learner's) or observation or reward (the env's), naming the
    agent and env step"""
    progress: bool = True
    """show a progress bar and evaluation lines"""

    def __post_init__(self):
        at_least(self, 1, "eval_interval", "eval_episodes", "log_interval")
        at_least(self, 1, "checkpoint_interval", "keep_checkpoints", "num_seeds")
        at_least(self, 0, "devices", "seed")
        at_least(self, 1, "num_processes", "process_timeout")
        check_processes(self)
        if self.seeds is not None:
            if not self.seeds:
                fail("seeds", "one or more seeds", self.seeds)
            if min(self.seeds) < 0:
                fail("seeds", "seeds >= 0 (numpy's seeds are unsigned)", self.seeds)
            if len(set(self.seeds)) != len(self.seeds):
                fail("seeds", "distinct seeds", self.seeds, "Each agent needs its own seed.")
            if self.num_seeds != 1 and self.num_seeds != len(self.seeds):
                raise ConfigError(
                    f"--seeds {' '.join(map(str, self.seeds))} gives {len(self.seeds)} agents, "
                    f"but --num-seeds is {self.num_seeds}: give one of the two."
                )
        for name, values in self.grid:
            if len(values) < 2:
                fail(name, "two or more values in a grid", values)
            if len(set(values)) != len(values):
                fail(name, "distinct values in a grid", values,
                     "Equal values would train identical agents; for more seeds per value "
                     "use --num-seeds.")

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seed of each agent of one grid point: --seeds, or --seed ... --seed + N - 1."""
        if self.seeds is not None:
            return tuple(self.seeds)
        return tuple(range(self.seed, self.seed + self.num_seeds))


@dataclasses.dataclass(frozen=True)
class OnlineRun(RunConfig):
    """Run settings of the online loop: a gymnasium env stepped on the host, a replay buffer."""

    env_id: str | None = "HalfCheetah-v5"
    """gymnasium environment id, or a JAX-native one (gymnax:Pendulum-v1, brax:ant): then the
    whole loop is compiled, env included"""
    total_steps: int = 1_000_000
    """environment steps to train for"""
    start_steps: int = 10_000
    """steps of uniform random actions before learning starts (< --total-steps)"""
    batch_size: int = 256
    """transitions per gradient update"""
    buffer_size: int = 1_000_000
    """replay buffer capacity (rows)"""
    utd: int = 1
    """updates per learning call (one compiled lax.scan); with --update-every 1, updates per
    env step"""
    update_every: int = 1
    """env steps between learning calls: the update-to-data ratio is utd / update_every
    (DQN's classic one update every 4 steps is --utd 1 --update-every 4)"""
    offline_data: str = ""
    """a D4RL-style HDF5 file or Minari dataset that fills --offline-fraction of every batch,
    the rest coming from the replay buffer (RLPD's symmetric sampling); empty: none"""
    offline_fraction: float = 0.5
    """fraction of each batch drawn from --offline-data"""

    def __post_init__(self):
        RunConfig.__post_init__(self)
        if not self.env_id:
            fail("env_id", "a gymnasium environment id", self.env_id)
        at_least(self, 1, "total_steps", "start_steps", "batch_size", "buffer_size", "utd",
                 "update_every")
        within(self, "offline_fraction", 0, 1)
        only_with(self, bool(self.offline_data), "--offline-data PATH", "offline_fraction")
        if self.resume is not None and self.run_dir != self.resume:
            return  # flags beside --resume: checked once merged with the saved run's config
        agents = len(self.seed_list) * math.prod(len(v) for _, v in self.grid)
        if self.num_processes > 1 and agents == 1:
            raise ConfigError(
                f"--num-processes {self.num_processes} with one agent: the online loops split "
                "agents over processes, each stepping its own agents' envs; train several "
                "(--num-seeds N, at least one per process) or use one process.")
        if self.start_steps >= self.total_steps:
            raise ConfigError(
                f"--start-steps ({self.start_steps}) must be < --total-steps "
                f"({self.total_steps}), or the run never learns; lower --start-steps."
            )
        if self.log_interval % self.update_every:
            fit = self.log_interval - self.log_interval % self.update_every or self.update_every
            raise ConfigError(
                f"--log-interval ({self.log_interval}) must be a multiple of --update-every "
                f"({self.update_every}): metrics are logged on steps that learn; use "
                f"--log-interval {fit}."
            )
        if self.batch_size > self.buffer_size:
            raise ConfigError(
                f"--batch-size ({self.batch_size}) must not exceed --buffer-size "
                f"({self.buffer_size})."
            )

    @property
    def budget(self) -> int:
        """The run's length in its unit (env steps)."""
        return self.total_steps


@dataclasses.dataclass(frozen=True)
class OfflineRun(RunConfig):
    """Run settings of the offline loop: a fixed dataset on the device, evaluation in an env."""

    dataset: str = ""
    """path to a D4RL-style HDF5 file or a Minari dataset (required unless --resume)"""
    preset: Literal["locomotion", "antmaze", "none"] = "none"
    """data preprocessing: locomotion scales rewards by 1000/(max−min episode return), antmaze
    subtracts 1 from rewards; both clip actions to ±(1 − 1e-5)"""
    rescale_actions: bool = False
    """map the env's action bounds [low, high] to [-1, 1] (for datasets stored in env units)"""
    total_updates: int = 1_000_000
    """gradient updates to train for"""
    batch_size: int = 256
    """transitions per gradient update"""
    updates_per_call: int = 1_000
    """updates per compiled call (a lax.scan that samples its batches inside)"""
    eval_interval: int = 5_000
    """updates between evaluations"""
    checkpoint_interval: int = 100_000
    """updates between checkpoints (one is always written at the end and on Ctrl-C)"""
    agents_layout: Literal["auto", "vmap", "unrolled"] = "auto"
    """how several agents' updates run: vmapped, or written out one after another in one program
    (on one device). auto: unrolled for 2-8 agents on one CPU device, where vmapped matmuls and
    batch gathers measured slower (benchmarks/seeds.py), vmapped otherwise"""
    lazy_images: bool = False
    """leave the dataset's image observations on disk (an HDF5 file, or a Minari dataset in its
    hdf5 format) and read each batch's rows from the file (pixel datasets larger than memory;
    one process, any number of devices)"""

    def __post_init__(self):
        RunConfig.__post_init__(self)
        # --dataset is checked when the run starts (`prepare_dataset`), so that an algorithm's
        # Config can have an `OfflineRun(...)` default, which has no dataset yet.
        at_least(self, 1, "total_updates", "batch_size", "updates_per_call")
        if self.lazy_images and self.num_processes > 1:
            raise ConfigError(
                f"--lazy-images reads batches on this host; it does not combine with "
                f"--num-processes {self.num_processes}. Load the dataset into memory (drop "
                "--lazy-images) or run one process (its devices may be several: --devices).")

    @property
    def budget(self) -> int:
        """The run's length in its unit (gradient updates)."""
        return self.total_updates


@dataclasses.dataclass(frozen=True)
class OnPolicyRun(RunConfig):
    """Run settings of the on-policy loop: `num_envs` envs stepped `num_steps` times per
    rollout, one update per rollout (gymnasium vector envs on the host, or a JAX-native env
    compiled with the loop)."""

    env_id: str | None = "CartPole-v1"
    """gymnasium environment id, or a JAX-native one (gymnax:CartPole-v1, brax:ant): then the
    whole loop is compiled, env included"""
    total_steps: int = 500_000
    """environment steps to train for, over all envs (rounded down to whole rollouts)"""
    num_envs: int = 8
    """envs stepped together; a rollout has num_envs × num_steps transitions"""
    num_steps: int = 128
    """steps of each env per rollout"""
    eval_interval: int = 50_000
    """env steps between evaluations (at the end of the rollout that crosses each multiple)"""
    log_interval: int = 10_000
    """env steps between training-metric logs"""
    checkpoint_interval: int = 100_000
    """env steps between checkpoints (one is always written at the end and on Ctrl-C)"""

    def __post_init__(self):
        RunConfig.__post_init__(self)
        if not self.env_id:
            fail("env_id", "a gymnasium or JAX-native environment id", self.env_id)
        at_least(self, 1, "total_steps", "num_envs", "num_steps")
        if self.resume is not None and self.run_dir != self.resume:
            return  # flags beside --resume: checked once merged with the saved run's config
        if self.total_steps < self.rollout_size:
            raise ConfigError(
                f"--total-steps ({self.total_steps}) is less than one rollout (--num-envs "
                f"{self.num_envs} × --num-steps {self.num_steps} = {self.rollout_size}): raise "
                "--total-steps or shorten the rollout."
            )

    @property
    def rollout_size(self) -> int:
        """Transitions per rollout (num_envs × num_steps)."""
        return self.num_envs * self.num_steps

    @property
    def batch_size(self) -> int:
        """What one update sees: a whole rollout (split over devices for one agent)."""
        return self.rollout_size

    @property
    def budget(self) -> int:
        """The run's length in env steps: whole rollouts, at most --total-steps."""
        return self.total_steps // self.rollout_size * self.rollout_size


# Settings that may differ between a run and its resumption: they do not change what is learned.
BUDGET_FIELDS = ("total_steps", "total_updates")


PLACEMENT_FIELDS = ("devices", "num_processes", "process_id", "coordinator", "process_timeout")


VOLATILE_FIELDS = ("run_dir", "resume", "progress", *PLACEMENT_FIELDS, *BUDGET_FIELDS)

"""The run settings every algorithm shares, and the checks every `Config` uses.

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
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import tyro


class ConfigError(ValueError):
    """A setting that cannot be honoured; the message names the flag. The command line prints
    it as `error: ...` (exit code 2) instead of a traceback."""


def flag(name: str) -> str:
    """The command-line flag of a config field: `actor_lr` -> `--actor-lr`."""
    return "--" + name.replace("_", "-")


def _fail(name: str, expected: str, value: Any, hint: str = "") -> None:
    hint = " " + hint if hint else ""
    raise ConfigError(f"{flag(name)} must be {expected}, got {value!r}.{hint}")


def at_least(config: Any, minimum: int, *names: str) -> None:
    """Require each named integer field to be >= `minimum`."""
    for name in names:
        if not getattr(config, name) >= minimum:
            _fail(name, f">= {minimum}", getattr(config, name))


def positive(config: Any, *names: str) -> None:
    """Require each named field to be finite and > 0 (learning rates, temperatures)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            _fail(name, "a finite number > 0", value)


def non_negative(config: Any, *names: str) -> None:
    """Require each named field to be finite and >= 0 (weights, noise scales)."""
    for name in names:
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            _fail(name, "a finite number >= 0", value)


def within(
    config: Any, name: str, low: int | float, high: int | float, *, open_low: bool = False,
    open_high: bool = False,
) -> None:
    """Require a field to lie in the interval from `low` to `high` (closed unless told)."""
    value = getattr(config, name)
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (math.isfinite(value) and above and below):
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        _fail(name, f"in {interval}", value)


def ordered(config: Any, lower: str, upper: str) -> None:
    """Require `config.lower <= config.upper` (for example log-std clips)."""
    a, b = getattr(config, lower), getattr(config, upper)
    if not (math.isfinite(a) and math.isfinite(b) and a <= b):
        raise ConfigError(f"{flag(lower)} ({a}) must be finite and <= {flag(upper)} ({b}).")


def layer_sizes(config: Any, name: str = "hidden_dims") -> None:
    """Require a non-empty tuple of positive layer sizes."""
    sizes: Sequence[int] = getattr(config, name)
    if not sizes or min(sizes) < 1:
        _fail(name, "one or more positive layer sizes", sizes)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings of a training run that every algorithm shares (what the loops read)."""

    env_id: str | None = None
    """gymnasium environment id (offline: None reads it from the dataset's metadata)"""
    seed: int = 0
    """seed for network init, exploration, batch sampling, env resets and evaluation"""
    num_seeds: int = 1
    """agents trained as one vmapped program, with seeds --seed, --seed + 1, ... A numeric
    hyperparameter given several values (--critic-lr 3e-4 1e-3) adds a grid: every seed at
    every combination of values"""
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
    """stop with an error naming the metric and step when a metric becomes NaN or inf"""
    progress: bool = True
    """show a progress bar and evaluation lines"""

    def __post_init__(self):
        at_least(self, 1, "eval_interval", "eval_episodes", "log_interval")
        at_least(self, 1, "checkpoint_interval", "keep_checkpoints", "num_seeds")
        at_least(self, 0, "devices")
        at_least(self, 1, "num_processes")
        if self.process_id is not None:
            within(self, "process_id", 0, self.num_processes - 1)
        if self.seeds is not None:
            if not self.seeds:
                _fail("seeds", "one or more seeds", self.seeds)
            if len(set(self.seeds)) != len(self.seeds):
                _fail("seeds", "distinct seeds", self.seeds, "Each agent needs its own seed.")
            if self.num_seeds != 1 and self.num_seeds != len(self.seeds):
                raise ConfigError(
                    f"--seeds {' '.join(map(str, self.seeds))} gives {len(self.seeds)} agents, "
                    f"but --num-seeds is {self.num_seeds}: give one of the two."
                )
        for name, values in self.grid:
            if len(values) < 2:
                _fail(name, "two or more values in a grid", values)

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

    def __post_init__(self):
        RunConfig.__post_init__(self)
        if not self.env_id:
            _fail("env_id", "a gymnasium environment id", self.env_id)
        at_least(self, 1, "total_steps", "start_steps", "batch_size", "buffer_size", "utd",
                 "update_every")
        if self.resume is not None and self.run_dir != self.resume:
            return  # flags beside --resume: checked once merged with the saved run's config
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
    lazy_images: bool = False
    """leave the dataset's image observations on disk (an HDF5 file, or a Minari dataset in its
    hdf5 format) and read each batch's rows from the file (pixel datasets larger than memory;
    one process, any number of devices)"""

    def __post_init__(self):
        RunConfig.__post_init__(self)
        # --dataset is checked when the run starts (`prepare_dataset`), so that an algorithm's
        # Config can have an `OfflineRun(...)` default, which has no dataset yet.
        at_least(self, 1, "total_updates", "batch_size", "updates_per_call")

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
            _fail("env_id", "a gymnasium or JAX-native environment id", self.env_id)
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
PLACEMENT_FIELDS = ("devices", "num_processes", "process_id", "coordinator")
VOLATILE_FIELDS = ("run_dir", "resume", "progress", *PLACEMENT_FIELDS, *BUDGET_FIELDS)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-normal dict of a (nested) dataclass config; tuples become lists."""
    def normal(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: normal(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [normal(v) for v in value]
        return value

    return normal(config)


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Rebuild a (nested) dataclass config from `to_dict`'s output; unknown keys are errors."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{where} has fields {unknown} that {cls.__name__} does not know.")
    kwargs = {}
    for name, value in values.items():
        kind = _dataclass_in(hints[name])
        if kind is not None and isinstance(value, dict):
            kwargs[name] = from_dict(kind, value, f"{where}.{name}")
        else:
            kwargs[name] = _tuples(value)
    return cls(**kwargs)


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples they were (nested ones too, as in `grid`)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass inside a type hint such as `Annotated[OnlineRun, ...]`, if any."""
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def flat_fields(config: Any, prefix: str = "") -> dict[str, Any]:
    """`{field: value}` of a nested config with nested names joined by dots (`run.seed`)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out |= flat_fields(value, f"{prefix}{f.name}.")
        else:
            out[prefix + f.name] = value
    return out


def defaults(cls: type) -> dict[str, Any]:
    """The default of every (nested) field of a config class, as `flat_fields` names them."""
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            out |= {f"{f.name}.{k}": v for k, v in flat_fields(default).items()}
        else:
            out[f.name] = default
    return out


def identity(config: Any) -> dict[str, Any]:
    """The config as a JSON dict without the settings a resumed run may change."""
    values = to_dict(config)
    run = values.get("run", {})
    return values | {"run": {k: v for k, v in run.items() if k not in VOLATILE_FIELDS}}

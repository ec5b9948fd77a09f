"""Make offline datasets (D4RL-style HDF5, or Minari) from policies and training runs.

  random         uniformly random actions             ("random")
  policy         a trained run's policy, optionally noisy  ("medium", "expert")
  replay         a trained run's replay buffer        ("medium-replay")
  concat         datasets joined end to end           ("medium-expert")

  eqxrl-collect random --env-id Hopper-v5 --num-steps 1000000 --output data/h-random.hdf5
  eqxrl-collect policy --run-dir runs/hopper --output data/hopper-expert.hdf5
  eqxrl-collect replay --run-dir runs/hopper_medium --output data/h-mreplay.hdf5
  eqxrl-collect concat --inputs data/a.hdf5 data/b.hdf5 --output data/ab.hdf5

(or `python -m eqxrl.tools.collect`). An output ending in .hdf5/.h5 is a D4RL-style file, any
other a Minari dataset folder (`pip install minari`), checked first. `eqxrl.datasets.rollouts`
rolls the episodes out (actions in [-1, 1], a pure function of --seed)."""

from __future__ import annotations

import dataclasses
import os
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tyro
from jaxtyping import Array, Float, PRNGKeyArray

from eqxrl.core.checks import ConfigError
from eqxrl.core.types import Obs
from eqxrl.data.dataset import Dataset
from eqxrl.datasets.episodes import concatenate, episode_returns, with_episode_cuts
from eqxrl.datasets.files import check_writable, load_dataset, save_dataset
from eqxrl.datasets.info import DatasetError, DatasetInfo
from eqxrl.datasets.rollouts import (
    PolicyFn,
    add_noise,
    collect_episodes,
    env_spec,
    random_policy,
    rollout_returns,
)
from eqxrl.run.cli import command_line_errors
from eqxrl.run.load import LoadedRun, load_run
from eqxrl.tools.collect_options import Concat as Concat
from eqxrl.tools.collect_options import Policy as Policy
from eqxrl.tools.collect_options import Random as Random
from eqxrl.tools.collect_options import Replay as Replay


def run_policy(
    run: LoadedRun, deterministic: bool = False, noise_std: float = 0.0, epsilon: float = 0.0
) -> PolicyFn:
    """The run's policy (sampled, or its mode with `deterministic`), with optional noise."""

    def policy(obs: Obs, key: PRNGKeyArray) -> Float[Array, "*action"]:
        batch = jax.tree.map(lambda x: jnp.asarray(x)[None], obs)
        return run.act(batch, key, deterministic=deterministic)[0]

    return add_noise(policy, noise_std, epsilon, run.spec)


def replay_dataset(run: LoadedRun) -> Dataset:
    """The run's replay buffer (`load_run(..., buffer=True)`), oldest row first, with its
    episode ends marked."""
    if run.buffer is None:
        raise ValueError(f"{run.run_dir!r} was loaded without its buffer: use buffer=True.")
    return with_episode_cuts(run.buffer.to_dataset())


def _agreed(values: list, name: str) -> Any:
    distinct = sorted({v for v in values if v is not None}, key=str)
    if len(distinct) > 1:
        fix = ("concat joins datasets of one env: give --inputs of the same env"
               if name == "env_id" else f"pass --{name.replace('_', '-')} to choose")
        raise DatasetError(f"concat: the inputs disagree on {name} ({distinct}); {fix}.")
    return distinct[0] if distinct else None


def _concat(config: Concat) -> tuple[Dataset, DatasetInfo]:
    loaded = [load_dataset(path) for path in config.inputs]
    infos = [info for _, info in loaded]
    low = config.ref_min_score
    high = config.ref_max_score
    info = DatasetInfo(
        env_id=_agreed([i.env_id for i in infos], "env_id"),
        ref_min_score=low
        if low is not None
        else _agreed([i.ref_min_score for i in infos], "ref_min_score"),
        ref_max_score=high
        if high is not None
        else _agreed([i.ref_max_score for i in infos], "ref_max_score"),
        source="concat " + " + ".join(config.inputs),
    )
    return concatenate([d for d, _ in loaded]), info


def make(
    config: Random | Policy | Replay | Concat, algorithm: ModuleType | None = None
) -> tuple[Dataset, DatasetInfo]:
    """Build the dataset and info that `config` describes (without writing them).

    `algorithm` is the module that trained the run folders; by default the module each run
    recorded in its config.json.
    """
    if isinstance(config, Concat):
        dataset, info = _concat(config)
        return dataset, dataclasses.replace(info, num_episodes=int(episode_returns(dataset).size))
    run = None
    if isinstance(config, Random):
        env_id = config.env_id
        dataset = collect_episodes(
            env_id,
            random_policy(env_spec(env_id)),
            config.num_steps,
            config.seed,
            progress=config.progress,
        )
        source = "random"
    else:
        run = load_run(config.run_dir, config.step, algorithm, buffer=isinstance(config, Replay),
                       agent=config.agent)
        env_id = run.config.run.env_id
        if isinstance(config, Policy):
            policy = run_policy(run, config.deterministic, config.noise_std, config.epsilon)
            dataset = collect_episodes(
                env_id, policy, config.num_steps, config.seed, progress=config.progress
            )
            mode = "mode" if config.deterministic else "sampled"
            source = (
                f"policy {config.run_dir} step {run.step} ({mode}, noise_std "
                f"{config.noise_std}, epsilon {config.epsilon})"
            )
        else:
            dataset = replay_dataset(run)
            source = f"replay buffer {config.run_dir} step {run.step}"
    low, high = config.ref_min_score, config.ref_max_score
    if low is None:
        spec = env_spec(env_id)
        low = float(
            np.mean(rollout_returns(env_id, random_policy(spec), config.ref_episodes, config.seed))
        )
    reference_dir = config.reference_run or (run.run_dir if run is not None else None)
    if high is None and reference_dir is not None:
        # An explicit --reference-run means its newest checkpoint, even when it is --run-dir
        # (a medium dataset from an older --step of the expert's own run).
        expert = (
            run
            if run is not None and config.reference_run is None
            else load_run(reference_dir, algorithm=algorithm)
        )
        if expert.config.run.env_id != env_id:
            raise ValueError(
                f"--reference-run {reference_dir!r} is a run on "
                f"{expert.config.run.env_id!r}, but the data is from {env_id!r}."
            )
        high = float(
            np.mean(
                rollout_returns(
                    env_id, run_policy(expert, deterministic=True), config.ref_episodes, config.seed
                )
            )
        )
    info = DatasetInfo(
        env_id=env_id,
        ref_min_score=low,
        ref_max_score=high,
        num_episodes=int(episode_returns(dataset).size),
        source=source,
    )
    return dataset, info


def main(
    config: Random | Policy | Replay | Concat, algorithm: ModuleType | None = None
) -> DatasetInfo:
    """Make the dataset, write it to `config.output`, print a summary, and return its info."""
    if os.path.lexists(config.output) and not config.overwrite:
        raise ConfigError(
            f"--output {config.output!r} already exists; pass --overwrite to replace it, or "
            "choose another path.")
    check_writable(config.output, "--output")  # before minutes of collection, not after
    dataset, info = make(config, algorithm)
    save_dataset(config.output, dataset, info)
    returns = np.asarray(episode_returns(dataset))  # said with --no-progress too: where it went
    line = (
        f"wrote {config.output}: {dataset.size} transitions, {info.num_episodes} episodes, "
        f"episode return {returns.mean():.1f} ± {returns.std():.1f} "
        f"(reference min {info.ref_min_score}, max {info.ref_max_score})"
    )
    if info.reference is not None:
        line += f", normalised {float(np.mean(info.normalized_score(returns))):.1f}"
    print(line)
    return info


def cli(args: list[str] | None = None) -> DatasetInfo:
    """Parse the command line (or `args`) and run `main`."""
    config = tyro.extras.subcommand_cli_from_dict(
        {"random": Random, "policy": Policy, "replay": Replay, "concat": Concat},
        description=__doc__,
        args=args,
    )
    with command_line_errors():
        return main(config)


if __name__ == "__main__":
    cli()

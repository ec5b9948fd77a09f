# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Offline RL from a collected dataset
#
# This notebook makes a small dataset, writes it as a D4RL-style HDF5 file, trains IQL on it
# without touching the env, then loads the trained policy from its run folder and plays one
# episode with it. The data comes from a short SAC run on Pendulum-v1, rolled out with a little
# noise: what the project calls a "medium" dataset, from a policy part-way trained.
#
# Everything is tiny (5,000 SAC steps, 5,000 transitions, 2,000 IQL updates, 64×64 networks)
# so that the notebook runs in CI in well under a minute. The offline results on the
# Benchmarks page (`benchmarks/README.md`) show what a real budget looks like: the usual D4RL
# protocol is 1M updates; on hopper-medium (200,000 transitions) IQL scored 19.8 after 30k
# updates and 114.8 after 100k (normalised, 100 = the expert SAC policy).

# %%
import os
import tempfile

import h5py
import numpy as np

import eqxrl
from eqxrl.algorithms import iql, sac
from eqxrl.tools import collect

work = tempfile.mkdtemp()

# %% [markdown]
# ## A behaviour policy
#
# A short SAC run (see the notebook on training SAC), with learning rates of 1e-3 so that 5,000
# steps get somewhere, gives a policy much better than random and short of the −120.0 that the
# Results page reports for 15,000 steps. Its run folder is all that the collection needs.

# %%
sac_dir = os.path.join(work, "sac")
sac_config = sac.Config(
    run=eqxrl.OnlineRun(env_id="Pendulum-v1", total_steps=5_000, start_steps=1_000,
                        eval_interval=5_000, eval_episodes=5, run_dir=sac_dir, progress=False),
    hidden_dims=(64, 64), actor_lr=1e-3, critic_lr=1e-3,
)
eqxrl.print_summary(sac.main(sac_config))

# %% [markdown]
# ## Collecting the dataset
#
# `eqxrl.tools.collect` is the module behind the `eqxrl-collect` command; its `main` takes the
# same options as the command line, as a dataclass. This call is
# `eqxrl-collect policy --run-dir SAC_DIR --output FILE --num-steps 5000 --noise-std 0.1`:
# 5,000 transitions of the run's policy, sampled and with N(0, 0.1²) noise added to each
# action. A file name ending in `.hdf5` gives a D4RL-style file.
#
# The file also records two reference returns for the normalised score (0 and 100): a random
# policy's, and the run's deterministic policy's, each the mean over `ref_episodes` (10)
# episodes. Here the "expert" is the short SAC run itself, so 100 means as good as that run,
# not a solved Pendulum.

# %%
path = os.path.join(work, "pendulum-medium.hdf5")
info = collect.main(collect.Policy(run_dir=sac_dir, output=path, num_steps=5_000,
                                   noise_std=0.1, progress=False))

# %% [markdown]
# Any HDF5 reader opens the file: the D4RL arrays (with `next_observations`; `terminals` for
# true ends, `timeouts` for time limits) and the dataset's info as attributes.

# %%
with h5py.File(path, "r") as f:
    for name, array in f.items():
        print(f"{name:18s} {array.dtype} {array.shape}")
    print(dict(f.attrs))

# %% [markdown]
# `eqxrl.load_dataset` reads it back as a `Dataset` of `Transition`s and its `DatasetInfo`;
# `eqxrl.episode_returns` gives the return of each episode in it, and the info turns returns
# into normalised scores.

# %%
dataset, info = eqxrl.load_dataset(path)
returns = np.asarray(eqxrl.episode_returns(dataset))
print(dataset.size, "transitions,", returns.size, "episodes")
print(f"episode return {returns.mean():.1f} ± {returns.std():.1f}, "
      f"normalised {info.normalized_score(returns).mean():.1f}")

# %% [markdown]
# ## Training IQL on the file
#
# An offline run takes `eqxrl.OfflineRun` settings: the dataset file, a budget in updates, and
# `updates_per_call` updates per compiled `lax.scan`. The env id for evaluation is read from the
# file. IQL's default preset, `locomotion`, scales rewards by 1000 over the range of the
# dataset's episode returns. The command line equivalent is
# `python algorithms/iql.py --dataset FILE --total-updates 2000 --updates-per-call 500
# --eval-interval 500 --eval-episodes 5 --hidden-dims 64 64`.

# %%
iql_dir = os.path.join(work, "iql")
iql_config = iql.Config(
    run=eqxrl.OfflineRun(dataset=path, total_updates=2_000, updates_per_call=500,
                         eval_interval=500, eval_episodes=5, run_dir=iql_dir, progress=False),
    hidden_dims=(64, 64),
)
summary = iql.main(iql_config)
eqxrl.print_summary(summary)

# %% [markdown]
# ## Using the trained policy
#
# `eqxrl.load_policy` reads the run folder's config and newest checkpoint and returns a jitted
# deterministic policy and the run's config. It takes one observation or a batch. The env is
# made with `eqxrl.make_env`, whose actions lie in [−1, 1] as the policy's do.

# %%
policy, config = eqxrl.load_policy(iql_dir)
env = eqxrl.make_env(config.run.env_id)
obs, _ = env.reset(seed=100)
episode_return, done = 0.0, False
while not done:
    obs, reward, terminated, truncated, _ = env.step(np.asarray(policy(obs)))
    episode_return += float(reward)
    done = terminated or truncated
print(f"one episode of {config.run.env_id}: return {episode_return:.1f}, "
      f"normalised {float(info.normalized_score(episode_return)):.1f}")

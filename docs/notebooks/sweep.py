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
# # A hyperparameter sweep as one vmapped run
#
# This notebook trains SAC on Pendulum-v1 at three critic learning rates with two seeds each:
# six agents in one run, as one compiled program vmapped over the agents (the guide "Many seeds
# and grids"). It then plots the evaluation curve of each grid point.
#
# The budget is tiny (5,000 env steps per agent, 1,000 of them random, 64×64 networks) so that
# the notebook runs in about a minute on a CPU. The Results page gives a budget that
# learns: SAC with its default 256×256 networks reached −120.0 on Pendulum-v1 after 15,000
# steps (1,000 random; seed 0), where a random policy scores about −1200.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import eqxrl
from eqxrl.algorithms import sac

# %% [markdown]
# ## Seeds and a grid
#
# `num_seeds=2` trains seeds 0 and 1 (`seeds=(...)` lists them instead). `grid` gives a field
# several values; every seed is trained at every value, and with several fields at every
# combination. On the command line the same run is
# `python algorithms/sac.py --env-id Pendulum-v1 --critic-lr 1e-4 1e-3 3e-3 --num-seeds 2 ...`,
# where a flag given several values fills `grid`.
#
# Only the fields a `Config` marks `eqxrl.Swept` may vary: they reach `init` as array leaves of
# an `eqxrl.Hyper`, so every agent shares one program (learning rates live in the optimiser
# state). The actor's learning rate is fixed at 1e-3 here so that the short run moves.

# %%
run_dir = os.path.join(tempfile.mkdtemp(), "sac-lr-sweep")
config = sac.Config(
    run=eqxrl.OnlineRun(
        env_id="Pendulum-v1", total_steps=5_000, start_steps=1_000, eval_interval=1_000,
        eval_episodes=5, num_seeds=2, grid=(("critic_lr", (1e-4, 1e-3, 3e-3)),),
        run_dir=run_dir, progress=False,
    ),
    hidden_dims=(64, 64),
    actor_lr=1e-3,
)

# %% [markdown]
# `eqxrl.run.agents_for` lists the agents a config describes (and checks its grid): grid
# points in the order of the values, every seed at each.

# %%
agents = eqxrl.run.agents_for(config)
for index, (seed, point) in enumerate(zip(agents.seeds, agents.points, strict=True)):
    print(f"agent {index}: seed {seed}, {dict(point)}")

# %% [markdown]
# A field that changes the program, such as a layer size or the number of critics, is not
# marked, and a grid over it is refused before anything is built, with the list of the fields
# that may vary:

# %%
try:
    bad = sac.Config(run=eqxrl.OnlineRun(env_id="Pendulum-v1", grid=(("num_critics", (2, 4)),),
                                         run_dir=os.path.join(tempfile.mkdtemp(), "refused")),
                     hidden_dims=(64, 64))
    sac.main(bad)
except Exception as e:
    print(type(e).__name__, e)

# %% [markdown]
# ## Training
#
# Each agent steps its own gymnasium env, seeded as a single run with its seed would be; acting,
# storing and learning are vmapped over the six agents. The summary gives the mean over agents
# and, per grid point, the final evaluation's mean and spread over its seeds.

# %%
summary = sac.main(config)
eqxrl.print_summary(summary)

# %% [markdown]
# `summary["agents"]` lists each agent: its index (what `eqxrl.load_policy(run_dir, agent=i)`
# takes), seed, grid values and returns.

# %%
for agent in summary["agents"]:
    print(f"agent {agent['agent']}: seed {agent['seed']}, critic lr {agent['critic_lr']:g}, "
          f"final {agent['final_eval_return']:.1f}, best {agent['best_eval_return']:.1f}")

# %% [markdown]
# ## Curves per grid point
#
# Each agent has its own rows in `eval.csv`, with the columns `agent`, `seed` and one per grid
# field. Below, each grid point's mean over its seeds, with the seeds' range as a band.
# `python -m eqxrl.tools.plot RUN_DIR --out grid.png` draws the same kind of figure from the
# command line.

# %%
evals = eqxrl.run.read_metrics(os.path.join(run_dir, "eval.csv"))
fig, ax = plt.subplots(figsize=(6.5, 4))
for lr in np.unique(evals["critic_lr"]):
    rows = evals["critic_lr"] == lr
    steps = np.unique(evals["step"][rows])
    # one row per seed at each evaluation step
    returns = np.stack([evals["return_mean"][rows & (evals["step"] == s)] for s in steps])
    ax.plot(steps, returns.mean(axis=1), marker="o", label=f"critic lr {lr:g}")
    ax.fill_between(steps, returns.min(axis=1), returns.max(axis=1), alpha=0.2)
ax.set_xlabel("env steps")
ax.set_ylabel("evaluation return (5 episodes)")
ax.set_title("SAC on Pendulum-v1: mean and range over 2 seeds")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# On two CPU cores a vmapped run is not much faster than the same agents one after another:
# the benchmarks (`benchmarks/README.md`, `seeds.py`) measured 1.40× the sequential rate for
# five SAC agents on Pendulum-v1, because the update is compute-bound and only the per-step
# overhead is shared. What it saves is bookkeeping: the sweep is one process, one compilation
# and one run folder instead of six. With several devices the agents are split over them
# (`devices`). To use one agent afterwards, `eqxrl.load_policy` and `eqxrl.load_run` take
# `agent=` and `eqxrl-collect` takes `--agent`.

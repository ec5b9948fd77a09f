"""eqxrl: a pure-functional reinforcement-learning backbone in JAX + Equinox.

Set the environment variable EQXRL_TYPECHECK=1 before importing eqxrl to check every
jaxtyping annotation of the package at run time with beartype (shape bugs fail at trace time).
"""

import os as _os

if _os.environ.get("EQXRL_TYPECHECK", "0") not in ("", "0", "false", "False"):
    from jaxtyping import install_import_hook as _install_import_hook

    _install_import_hook(["eqxrl"], "beartype.beartype")

from .core import EnvSpec as EnvSpec
from .core import Hyper as Hyper
from .core import Metrics as Metrics
from .core import NStepTransition as NStepTransition
from .core import Obs as Obs
from .core import Rollout as Rollout
from .core import SarsaTransition as SarsaTransition
from .core import Swept as Swept
from .core import Transition as Transition
from .core import hyper_of as hyper_of
from .core import jit as jit
from .core import prefixed as prefixed
from .core import tree_stack as tree_stack
from .core import tree_unstack as tree_unstack
from .data import Dataset as Dataset
from .data import Normalizer as Normalizer
from .data import ReplayBuffer as ReplayBuffer
from .data import ReturnScaler as ReturnScaler
from .data import RunningNormalizer as RunningNormalizer
from .datasets import DatasetError as DatasetError
from .datasets import DatasetInfo as DatasetInfo
from .datasets import episode_ends as episode_ends
from .datasets import episode_returns as episode_returns
from .datasets import load_dataset as load_dataset
from .datasets import preprocess as preprocess
from .datasets import save_dataset as save_dataset
from .envs import JaxEnv as JaxEnv
from .envs import evaluate as evaluate
from .envs import make_env as make_env
from .envs import make_eval_envs as make_eval_envs
from .envs import make_jax_env as make_jax_env
from .envs import normalized_score as normalized_score
from .envs import spec_from_env as spec_from_env
from .loops import OfflineHooks as OfflineHooks
from .loops import OffPolicyHooks as OffPolicyHooks
from .loops import check_algorithm as check_algorithm
from .loops import train_compiled as train_compiled
from .loops import train_offline as train_offline
from .loops import train_offline_online as train_offline_online
from .loops import train_on_policy as train_on_policy
from .loops import train_online as train_online
from .nn import ADAM as ADAM
from .nn import ADAM_LINEAR_DECAY as ADAM_LINEAR_DECAY
from .nn import ADAMW as ADAMW
from .nn import MLP as MLP
from .nn import BatchRenorm as BatchRenorm
from .nn import BatchRenormMLP as BatchRenormMLP
from .nn import CategoricalPolicy as CategoricalPolicy
from .nn import DeterministicPolicy as DeterministicPolicy
from .nn import DiscreteQFunction as DiscreteQFunction
from .nn import Ensemble as Ensemble
from .nn import GaussianPolicy as GaussianPolicy
from .nn import HyperCategoricalQ as HyperCategoricalQ
from .nn import HyperGaussianPolicy as HyperGaussianPolicy
from .nn import HyperTrunk as HyperTrunk
from .nn import QFunction as QFunction
from .nn import QuantileQFunction as QuantileQFunction
from .nn import RunningStats as RunningStats
from .nn import SimbaMLP as SimbaMLP
from .nn import TanhMultivariateNormalDiag as TanhMultivariateNormalDiag
from .nn import TrainState as TrainState
from .nn import ValueFunction as ValueFunction
from .nn import WithEncoder as WithEncoder
from .nn import check_one_agent as check_one_agent
from .nn import flatten_obs as flatten_obs
from .nn import polyak as polyak
from .nn import project_weights as project_weights
from .nn import value_and_grad as value_and_grad
from .rl import LogScalar as LogScalar
from .rl import Networks as Networks
from .rl import TemperatureLoss as TemperatureLoss
from .rl import categorical_projection as categorical_projection
from .rl import categorical_support as categorical_support
from .rl import categorical_td_loss as categorical_td_loss
from .rl import categorical_value as categorical_value
from .rl import clipped_policy_loss as clipped_policy_loss
from .rl import critic_td_loss as critic_td_loss
from .rl import discrete_q as discrete_q
from .rl import ensemble_logits as ensemble_logits
from .rl import ensemble_q as ensemble_q
from .rl import ensemble_quantiles as ensemble_quantiles
from .rl import every as every
from .rl import gae as gae
from .rl import greedy_actions as greedy_actions
from .rl import normalised as normalised
from .rl import normalised_batch as normalised_batch
from .rl import observe_batch as observe_batch
from .rl import policy_actions as policy_actions
from .rl import q_ensemble as q_ensemble
from .rl import quantile_huber_loss as quantile_huber_loss
from .rl import quantile_midpoints as quantile_midpoints
from .rl import quantile_td_target as quantile_td_target
from .rl import reset_networks as reset_networks
from .rl import sample_actions as sample_actions
from .rl import scheduled_reset as scheduled_reset
from .rl import smoothed_target_action as smoothed_target_action
from .rl import td_target as td_target
from .rl import temperature_loss as temperature_loss
from .rl import truncated_quantiles as truncated_quantiles
from .rl import value_loss as value_loss
from .run import CheckpointError as CheckpointError
from .run import Finetune as Finetune
from .run import LoadedRun as LoadedRun
from .run import Logger as Logger
from .run import OfflineRun as OfflineRun
from .run import OnlineRun as OnlineRun
from .run import OnPolicyRun as OnPolicyRun
from .run import RunConfig as RunConfig
from .run import cli as cli
from .run import load_policy as load_policy
from .run import load_run as load_run
from .run import print_summary as print_summary

__version__ = "0.1.0"

# The public names of this package (the API reference documents these).
__all__ = [
    "EnvSpec", "Hyper", "Metrics", "NStepTransition", "Obs", "Rollout", "SarsaTransition", "Swept",
    "Transition", "hyper_of", "jit", "prefixed", "tree_stack", "tree_unstack", "Dataset",
    "Normalizer", "ReplayBuffer", "ReturnScaler", "RunningNormalizer", "DatasetError",
    "DatasetInfo", "episode_ends", "episode_returns", "load_dataset", "preprocess", "save_dataset",
    "JaxEnv", "evaluate", "make_env", "make_eval_envs", "make_jax_env", "normalized_score",
    "spec_from_env", "OfflineHooks", "OffPolicyHooks", "check_algorithm", "train_compiled",
    "train_offline", "train_offline_online", "train_on_policy", "train_online", "ADAM",
    "ADAM_LINEAR_DECAY", "ADAMW", "MLP", "BatchRenorm", "BatchRenormMLP", "CategoricalPolicy",
    "DeterministicPolicy", "DiscreteQFunction", "Ensemble", "GaussianPolicy", "HyperCategoricalQ",
    "HyperGaussianPolicy", "HyperTrunk", "QFunction", "QuantileQFunction", "RunningStats",
    "SimbaMLP", "TanhMultivariateNormalDiag", "TrainState", "ValueFunction", "WithEncoder",
    "check_one_agent", "flatten_obs", "polyak", "project_weights", "value_and_grad", "LogScalar",
    "Networks", "categorical_projection", "categorical_support", "categorical_td_loss",
    "categorical_value", "clipped_policy_loss", "critic_td_loss", "discrete_q", "ensemble_logits",
    "ensemble_q", "ensemble_quantiles", "every", "gae", "greedy_actions", "normalised",
    "normalised_batch", "observe_batch", "policy_actions", "q_ensemble", "quantile_huber_loss",
    "quantile_midpoints", "quantile_td_target", "reset_networks", "sample_actions",
    "scheduled_reset", "smoothed_target_action", "td_target", "temperature_loss", "TemperatureLoss",
    "truncated_quantiles", "value_loss", "CheckpointError", "Finetune", "LoadedRun", "Logger",
    "OfflineRun", "OnlineRun", "OnPolicyRun", "RunConfig", "cli", "load_policy", "load_run",
    "print_summary"
]

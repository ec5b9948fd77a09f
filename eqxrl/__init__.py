"""eqxrl: a pure-functional reinforcement-learning backbone in JAX + Equinox.

Set the environment variable EQXRL_TYPECHECK=1 before importing eqxrl to check every
jaxtyping annotation of the package at run time with beartype (shape bugs fail at trace time).
"""

import os as _os

if _os.environ.get("EQXRL_TYPECHECK", "0") not in ("", "0", "false", "False"):
    from jaxtyping import install_import_hook as _install_import_hook

    _install_import_hook(["eqxrl"], "beartype.beartype")

from .blocks import ADAM as ADAM
from .blocks import LogScalar as LogScalar
from .blocks import clipped_policy_loss as clipped_policy_loss
from .blocks import critic_td_loss as critic_td_loss
from .blocks import discrete_q as discrete_q
from .blocks import ensemble_q as ensemble_q
from .blocks import every as every
from .blocks import gae as gae
from .blocks import greedy_actions as greedy_actions
from .blocks import policy_actions as policy_actions
from .blocks import prefixed as prefixed
from .blocks import q_ensemble as q_ensemble
from .blocks import sample_actions as sample_actions
from .blocks import smoothed_target_action as smoothed_target_action
from .blocks import td_target as td_target
from .blocks import temperature_loss as temperature_loss
from .blocks import value_loss as value_loss
from .checkpoints import CheckpointError as CheckpointError
from .cli import cli as cli
from .cli import print_summary as print_summary
from .compiled import train_compiled as train_compiled
from .config import OfflineRun as OfflineRun
from .config import OnlineRun as OnlineRun
from .config import OnPolicyRun as OnPolicyRun
from .config import RunConfig as RunConfig
from .data import Dataset as Dataset
from .data import Normalizer as Normalizer
from .data import ReplayBuffer as ReplayBuffer
from .datasets import DatasetError as DatasetError
from .datasets import DatasetInfo as DatasetInfo
from .datasets import episode_ends as episode_ends
from .datasets import episode_returns as episode_returns
from .datasets import load_dataset as load_dataset
from .datasets import preprocess as preprocess
from .datasets import save_dataset as save_dataset
from .envs import EnvSpec as EnvSpec
from .envs import make_env as make_env
from .envs import spec_from_env as spec_from_env
from .evaluation import evaluate as evaluate
from .evaluation import make_eval_envs as make_eval_envs
from .evaluation import normalized_score as normalized_score
from .jaxenvs import JaxEnv as JaxEnv
from .jaxenvs import make_jax_env as make_jax_env
from .jit import jit as jit
from .load import LoadedRun as LoadedRun
from .load import load_policy as load_policy
from .load import load_run as load_run
from .logging import Logger as Logger
from .networks import MLP as MLP
from .networks import CategoricalPolicy as CategoricalPolicy
from .networks import DeterministicPolicy as DeterministicPolicy
from .networks import DiscreteQFunction as DiscreteQFunction
from .networks import Ensemble as Ensemble
from .networks import GaussianPolicy as GaussianPolicy
from .networks import QFunction as QFunction
from .networks import TanhMultivariateNormalDiag as TanhMultivariateNormalDiag
from .networks import ValueFunction as ValueFunction
from .networks import WithEncoder as WithEncoder
from .networks import flatten_obs as flatten_obs
from .offline import train_offline as train_offline
from .online import train_online as train_online
from .onpolicy import train_on_policy as train_on_policy
from .train_state import TrainState as TrainState
from .train_state import polyak as polyak
from .train_state import value_and_grad as value_and_grad
from .tree import tree_stack as tree_stack
from .tree import tree_unstack as tree_unstack
from .types import Metrics as Metrics
from .types import NStepTransition as NStepTransition
from .types import Obs as Obs
from .types import Rollout as Rollout
from .types import Transition as Transition

__version__ = "0.1.0"

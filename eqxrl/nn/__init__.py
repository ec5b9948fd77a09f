"""Networks and their training state: MLPs, ensembles, batch renormalisation with running
statistics, SimBa residual networks, heads, policies, `TrainState`, the shared optimisers.
"""


from .heads import DiscreteQFunction as DiscreteQFunction
from .heads import QFunction as QFunction
from .heads import QuantileQFunction as QuantileQFunction
from .heads import ValueFunction as ValueFunction
from .heads import WithEncoder as WithEncoder
from .hyper_heads import HyperCategoricalQ as HyperCategoricalQ
from .hyper_heads import HyperGaussianPolicy as HyperGaussianPolicy
from .hyper_heads import HyperHead as HyperHead
from .hyperspherical import HyperBlock as HyperBlock
from .hyperspherical import HyperEmbedding as HyperEmbedding
from .hyperspherical import HyperLinear as HyperLinear
from .hyperspherical import HyperTrunk as HyperTrunk
from .hyperspherical import Scaler as Scaler
from .hyperspherical import l2_normalize as l2_normalize
from .hyperspherical import project_weights as project_weights
from .mlp import MLP as MLP
from .mlp import Ensemble as Ensemble
from .mlp import dense as dense
from .mlp import flatten_obs as flatten_obs
from .mlp import linear_product as linear_product
from .normalization import BatchRenorm as BatchRenorm
from .normalization import BatchRenormMLP as BatchRenormMLP
from .normalization import RunningStats as RunningStats
from .normalization import split_stats as split_stats
from .normalization import with_stats_of as with_stats_of
from .optim import ADAM as ADAM
from .optim import ADAM_LINEAR_DECAY as ADAM_LINEAR_DECAY
from .optim import ADAMW as ADAMW
from .policies import Categorical as Categorical
from .policies import CategoricalPolicy as CategoricalPolicy
from .policies import DeterministicPolicy as DeterministicPolicy
from .policies import GaussianPolicy as GaussianPolicy
from .policies import MultivariateNormalDiag as MultivariateNormalDiag
from .policies import TanhMultivariateNormalDiag as TanhMultivariateNormalDiag
from .simba import ResidualBlock as ResidualBlock
from .simba import SimbaMLP as SimbaMLP
from .train_state import TrainState as TrainState
from .train_state import check_one_agent as check_one_agent
from .train_state import polyak as polyak
from .train_state import trainable as trainable
from .train_state import value_and_grad as value_and_grad

# The public names of this package (the API reference documents these).
__all__ = [
    "DiscreteQFunction", "QFunction", "QuantileQFunction", "ValueFunction", "WithEncoder",
    "HyperCategoricalQ", "HyperGaussianPolicy", "HyperHead", "HyperBlock", "HyperEmbedding",
    "HyperLinear", "HyperTrunk", "Scaler", "l2_normalize", "project_weights", "MLP", "Ensemble",
    "dense", "flatten_obs", "linear_product", "BatchRenorm", "BatchRenormMLP", "RunningStats",
    "split_stats", "with_stats_of", "ADAM", "ADAM_LINEAR_DECAY", "ADAMW", "Categorical",
    "CategoricalPolicy", "DeterministicPolicy", "GaussianPolicy", "MultivariateNormalDiag",
    "TanhMultivariateNormalDiag", "ResidualBlock", "SimbaMLP", "TrainState", "check_one_agent",
    "polyak", "trainable", "value_and_grad"
]

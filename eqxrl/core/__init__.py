"""Core: the types, specs, checks and jit every other layer builds on; imports no other eqxrl
layer.
"""


from .checks import ConfigError as ConfigError
from .checks import at_least as at_least
from .checks import changed_flags as changed_flags
from .checks import flag as flag
from .checks import layer_sizes as layer_sizes
from .checks import non_negative as non_negative
from .checks import only_with as only_with
from .checks import ordered as ordered
from .checks import positive as positive
from .checks import within as within
from .hyper import SWEPT as SWEPT
from .hyper import Hyper as Hyper
from .hyper import Swept as Swept
from .hyper import hyper_of as hyper_of
from .hyper import swept_fields as swept_fields
from .jit import jit as jit
from .jit import merge as merge
from .jit import split as split
from .metrics import prefixed as prefixed
from .seeds import derived_seed as derived_seed
from .spec import EnvSpec as EnvSpec
from .tree import tree_stack as tree_stack
from .tree import tree_unstack as tree_unstack
from .types import FloatScalar as FloatScalar
from .types import HyperValue as HyperValue
from .types import Key as Key
from .types import Metrics as Metrics
from .types import NStepTransition as NStepTransition
from .types import Obs as Obs
from .types import Rollout as Rollout
from .types import SarsaTransition as SarsaTransition
from .types import Transition as Transition

# The public names of this package (the API reference documents these).
__all__ = [
    "ConfigError", "at_least", "changed_flags", "flag", "layer_sizes", "non_negative", "only_with",
    "ordered", "positive", "within", "SWEPT", "Hyper", "Swept", "hyper_of", "swept_fields", "jit",
    "merge", "split", "prefixed", "derived_seed", "EnvSpec", "tree_stack", "tree_unstack",
    "FloatScalar", "HyperValue", "Key", "Metrics", "NStepTransition", "Obs", "Rollout",
    "SarsaTransition", "Transition"
]

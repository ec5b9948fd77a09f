"""Offline datasets: the D4RL-style HDF5 and Minari formats, episodes and preprocessing, and
rollouts of policies into datasets.
"""


from .d4rl import D4RL_REFERENCE as D4RL_REFERENCE
from .d4rl import REQUIRED_KEYS as REQUIRED_KEYS
from .d4rl import d4rl_reference as d4rl_reference
from .d4rl import from_d4rl_dict as from_d4rl_dict
from .d4rl import named_leaves as named_leaves
from .d4rl import to_d4rl_dict as to_d4rl_dict
from .episodes import PRESETS as PRESETS
from .episodes import check_unit_actions as check_unit_actions
from .episodes import clip_actions as clip_actions
from .episodes import concatenate as concatenate
from .episodes import episode_cuts as episode_cuts
from .episodes import episode_ends as episode_ends
from .episodes import episode_returns as episode_returns
from .episodes import obs_normalizer as obs_normalizer
from .episodes import preprocess as preprocess
from .episodes import preset_rewards as preset_rewards
from .episodes import rescale_actions as rescale_actions
from .episodes import scale_rewards_by_return_range as scale_rewards_by_return_range
from .episodes import shift_rewards as shift_rewards
from .episodes import with_episode_cuts as with_episode_cuts
from .episodes import with_next_actions as with_next_actions
from .files import check_writable as check_writable
from .files import load_dataset as load_dataset
from .files import save_dataset as save_dataset
from .hdf5 import load_hdf5 as load_hdf5
from .hdf5 import save_hdf5 as save_hdf5
from .info import DatasetError as DatasetError
from .info import DatasetInfo as DatasetInfo
from .minari import load_minari as load_minari
from .minari_save import save_minari as save_minari
from .rollouts import add_noise as add_noise
from .rollouts import collect_episodes as collect_episodes
from .rollouts import env_spec as env_spec
from .rollouts import episode_seed as episode_seed
from .rollouts import random_policy as random_policy

# The public names of this package (the API reference documents these).
__all__ = [
    "D4RL_REFERENCE", "REQUIRED_KEYS", "d4rl_reference", "from_d4rl_dict", "named_leaves",
    "to_d4rl_dict", "PRESETS", "check_unit_actions", "clip_actions", "concatenate", "episode_cuts",
    "episode_ends", "episode_returns", "obs_normalizer", "preprocess", "preset_rewards",
    "rescale_actions", "scale_rewards_by_return_range", "shift_rewards", "with_episode_cuts",
    "with_next_actions", "check_writable", "load_dataset", "save_dataset", "load_hdf5", "save_hdf5",
    "DatasetError", "DatasetInfo", "load_minari", "save_minari", "add_noise", "collect_episodes",
    "env_spec", "episode_seed", "random_policy"
]

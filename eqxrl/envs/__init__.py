"""Environments: gymnasium envs with eqxrl's wrappers, pixel and Atari envs, JAX-native envs
(gymnax, Brax), and evaluation.
"""


from .evaluation import evaluate as evaluate
from .evaluation import make_eval_envs as make_eval_envs
from .evaluation import normalized_score as normalized_score
from .gym import make_env as make_env
from .gym import pixel_env_options as pixel_env_options
from .gym import spec_from_env as spec_from_env
from .native import EnvState as EnvState
from .native import JaxEnv as JaxEnv
from .native import Stepped as Stepped
from .native import is_jax_env_id as is_jax_env_id
from .native import make_evaluator as make_evaluator
from .native import make_jax_env as make_jax_env
from .native import rollout_returns as rollout_returns
from .pixels import ActionRepeat as ActionRepeat
from .pixels import configure_headless_rendering as configure_headless_rendering
from .pixels import make_atari_env as make_atari_env
from .pixels import make_pixel_env as make_pixel_env
from .pixels import mark_frame_stack as mark_frame_stack
from .pixels import resize_frame as resize_frame

# The public names of this package (the API reference documents these).
__all__ = [
    "evaluate", "make_eval_envs", "normalized_score", "make_env", "pixel_env_options",
    "spec_from_env", "EnvState", "JaxEnv", "Stepped", "is_jax_env_id", "make_evaluator",
    "make_jax_env", "rollout_returns", "ActionRepeat", "configure_headless_rendering",
    "make_atari_env", "make_pixel_env", "mark_frame_stack", "resize_frame"
]

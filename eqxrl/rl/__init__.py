"""RL mathematics that several algorithms share: critic targets and losses, actions and log-
probabilities, the entropy temperature, quantile critics, on-policy advantages and losses,
schedules, and the network family (MLP or SimBa), weight decay and resets of the off-policy
algorithms.
"""


from .actors import LogScalar as LogScalar
from .actors import TemperatureLoss as TemperatureLoss
from .actors import policy_actions as policy_actions
from .actors import sample_actions as sample_actions
from .actors import temperature_loss as temperature_loss
from .critics import CriticFn as CriticFn
from .critics import critic_td_loss as critic_td_loss
from .critics import discrete_q as discrete_q
from .critics import ensemble_q as ensemble_q
from .critics import greedy_actions as greedy_actions
from .critics import q_ensemble as q_ensemble
from .critics import smoothed_target_action as smoothed_target_action
from .critics import td_target as td_target
from .distributional import categorical_projection as categorical_projection
from .distributional import categorical_support as categorical_support
from .distributional import categorical_td_loss as categorical_td_loss
from .distributional import categorical_value as categorical_value
from .distributional import ensemble_logits as ensemble_logits
from .networks import Networks as Networks
from .networks import normalised as normalised
from .networks import normalised_batch as normalised_batch
from .networks import observe_batch as observe_batch
from .networks import reset_networks as reset_networks
from .networks import scheduled_reset as scheduled_reset
from .onpolicy import clipped_policy_loss as clipped_policy_loss
from .onpolicy import gae as gae
from .onpolicy import value_loss as value_loss
from .quantiles import ensemble_quantiles as ensemble_quantiles
from .quantiles import quantile_huber_loss as quantile_huber_loss
from .quantiles import quantile_midpoints as quantile_midpoints
from .quantiles import quantile_td_target as quantile_td_target
from .quantiles import truncated_quantiles as truncated_quantiles
from .schedules import AGENTS as AGENTS
from .schedules import every as every

# The public names of this package (the API reference documents these).
__all__ = [
    "LogScalar", "policy_actions", "sample_actions", "temperature_loss", "TemperatureLoss",
    "CriticFn",
    "critic_td_loss", "discrete_q", "ensemble_q", "greedy_actions", "q_ensemble",
    "smoothed_target_action", "td_target", "categorical_projection", "categorical_support",
    "categorical_td_loss", "categorical_value", "ensemble_logits", "Networks", "normalised",
    "normalised_batch", "observe_batch", "reset_networks", "scheduled_reset", "clipped_policy_loss",
    "gae", "value_loss", "ensemble_quantiles", "quantile_huber_loss", "quantile_midpoints",
    "quantile_td_target", "truncated_quantiles", "AGENTS", "every"
]

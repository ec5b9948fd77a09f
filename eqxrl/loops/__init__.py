"""Training loops: host and compiled off-policy, offline, on-policy; `train_online` chooses host or
compiled from the env id.
"""


from .compiled import train_compiled as train_compiled
from .contract import Algorithm as Algorithm
from .contract import OfflineAlgorithm as OfflineAlgorithm
from .contract import OfflineHooks as OfflineHooks
from .contract import OffPolicyAlgorithm as OffPolicyAlgorithm
from .contract import OffPolicyHooks as OffPolicyHooks
from .contract import OnPolicyAlgorithm as OnPolicyAlgorithm
from .contract import check_algorithm as check_algorithm
from .finetune import joined_evals as joined_evals
from .finetune import train_offline_online as train_offline_online
from .offline import prepare_dataset as prepare_dataset
from .offline import train_offline as train_offline
from .online import train_online as train_online
from .onpolicy import train_on_policy as train_on_policy

# The public names of this package (the API reference documents these).
__all__ = [
    "train_compiled", "Algorithm", "OfflineAlgorithm", "OfflineHooks", "OffPolicyAlgorithm",
    "OffPolicyHooks", "OnPolicyAlgorithm", "check_algorithm", "joined_evals",
    "train_offline_online", "prepare_dataset", "train_offline", "train_online", "train_on_policy"
]

"""Training loops: host and compiled off-policy, offline, on-policy; `train_online` chooses host or
compiled from the env id.
"""


from .compiled import train_compiled as train_compiled
from .host import train_online as train_online
from .offline import prepare_dataset as prepare_dataset
from .offline import train_offline as train_offline
from .onpolicy import train_on_policy as train_on_policy

"""ResNet-v1 (He et al. 2016, torchvision layout) and ResNet-v2 / BiT (Kolesnikov et al. 2020).

The models live in `resnet_v1` (with its norms in `normalization`) and `resnet_v2`; this
module keeps the names importable from `eqxrl.vision.resnet`.
"""

from eqxrl.vision.normalization import BatchNorm as BatchNorm
from eqxrl.vision.resnet_v1 import ResNetV1 as ResNetV1
from eqxrl.vision.resnet_v2 import ResNetV2 as ResNetV2

__all__ = ["BatchNorm", "ResNetV1", "ResNetV2"]

"""Vision for eqxrl: image encoders, preprocessing, pretrained weights and augmentations."""

from eqxrl.vision.augmentations import augment_batch as augment_batch
from eqxrl.vision.augmentations import color_jitter as color_jitter
from eqxrl.vision.augmentations import compose as compose
from eqxrl.vision.augmentations import gaussian_blur as gaussian_blur
from eqxrl.vision.augmentations import gaussian_kernel as gaussian_kernel
from eqxrl.vision.augmentations import random_flip as random_flip
from eqxrl.vision.augmentations import random_shift as random_shift
from eqxrl.vision.augmentations import solarize as solarize
from eqxrl.vision.encoders import ENCODERS as ENCODERS
from eqxrl.vision.encoders import AtariEncoder as AtariEncoder
from eqxrl.vision.encoders import ImpalaEncoder as ImpalaEncoder
from eqxrl.vision.encoders import make_encoder as make_encoder
from eqxrl.vision.mae import MAE as MAE
from eqxrl.vision.mae import patchify as patchify
from eqxrl.vision.mae import unpatchify as unpatchify
from eqxrl.vision.normalization import BatchNorm as BatchNorm
from eqxrl.vision.normalization import FrozenBatchNorm as FrozenBatchNorm
from eqxrl.vision.obs_encoder import EncoderConfig as EncoderConfig
from eqxrl.vision.obs_encoder import ObsEncoder as ObsEncoder
from eqxrl.vision.obs_encoder import encoded as encoded
from eqxrl.vision.obs_encoder import has_images as has_images
from eqxrl.vision.obs_encoder import is_image as is_image
from eqxrl.vision.pooling import Flatten as Flatten
from eqxrl.vision.pooling import GlobalAveragePool as GlobalAveragePool
from eqxrl.vision.pooling import SpatialLearnedEmbeddings as SpatialLearnedEmbeddings
from eqxrl.vision.pooling import SpatialSoftmax as SpatialSoftmax
from eqxrl.vision.pooling import make_pooling as make_pooling
from eqxrl.vision.preprocess import IMAGENET_MEAN as IMAGENET_MEAN
from eqxrl.vision.preprocess import IMAGENET_STD as IMAGENET_STD
from eqxrl.vision.preprocess import PixelEncoder as PixelEncoder
from eqxrl.vision.preprocess import normalize as normalize
from eqxrl.vision.preprocess import resize as resize
from eqxrl.vision.preprocess import stack_frames as stack_frames
from eqxrl.vision.preprocess import to_float as to_float
from eqxrl.vision.pretrained import load_encoder as load_encoder
from eqxrl.vision.pretrained import read_state_dict as read_state_dict
from eqxrl.vision.pretrained import resnet_from_torchvision as resnet_from_torchvision
from eqxrl.vision.pretrained import save_encoder as save_encoder
from eqxrl.vision.resnet_v1 import ResNetV1 as ResNetV1
from eqxrl.vision.resnet_v2 import ResNetV2 as ResNetV2
from eqxrl.vision.vit import VIT_SIZES as VIT_SIZES
from eqxrl.vision.vit import ViT as ViT

# The public names of this package (the API reference documents these).
__all__ = [
    "augment_batch", "color_jitter", "compose", "gaussian_blur", "gaussian_kernel", "random_flip",
    "random_shift", "solarize", "ENCODERS", "AtariEncoder", "ImpalaEncoder", "make_encoder", "MAE",
    "patchify", "unpatchify", "BatchNorm", "FrozenBatchNorm", "EncoderConfig", "ObsEncoder",
    "encoded", "has_images", "is_image", "Flatten", "GlobalAveragePool",
    "SpatialLearnedEmbeddings", "SpatialSoftmax", "make_pooling", "IMAGENET_MEAN", "IMAGENET_STD",
    "PixelEncoder", "normalize", "resize", "stack_frames", "to_float", "load_encoder",
    "read_state_dict", "resnet_from_torchvision", "save_encoder", "ResNetV1", "ResNetV2",
    "VIT_SIZES", "ViT"
]

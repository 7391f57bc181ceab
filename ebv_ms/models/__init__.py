"""Models: backbones (mindcv ResNet-50 / Swin-T, ``small_cnn``, ``small_mlp``), heads, the classifier."""
from .backbones import BACKBONES, SmallCNN, SmallMLP, create_backbone
from .classifier import HEADS, Classifier, create_classifier
from .heads import EBVHead, FCHead, FixedRandomHead, FrozenVectorHead, random_unit_vectors
from . import mindcv_zoo  # noqa: F401 - registers ebv_resnet50 / ebv_swin_tiny with mindcv

__all__ = ["BACKBONES", "HEADS", "SmallCNN", "SmallMLP", "create_backbone", "Classifier",
           "create_classifier", "EBVHead", "FCHead", "FixedRandomHead", "FrozenVectorHead",
           "random_unit_vectors"]

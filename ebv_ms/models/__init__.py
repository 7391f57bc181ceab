"""Models: backbones (mindcv ResNet-50 / Swin-T, ``small_cnn``), heads, the classifier factory."""
from .backbones import BACKBONES, SmallCNN, create_backbone
from .classifier import (EBV_PARAM, HEADS, Classifier, check_ebv_matches, create_classifier,
                         create_classifier_from_config, ebv_from_checkpoint)
from .heads import EBVHead, FCHead, FixedRandomHead, FrozenVectorHead, random_unit_vectors

__all__ = ["BACKBONES", "HEADS", "EBV_PARAM", "SmallCNN", "create_backbone", "Classifier",
           "create_classifier", "create_classifier_from_config", "check_ebv_matches",
           "ebv_from_checkpoint", "EBVHead", "FCHead", "FixedRandomHead", "FrozenVectorHead",
           "random_unit_vectors"]

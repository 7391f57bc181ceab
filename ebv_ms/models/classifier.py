"""`create_classifier`: backbone -> (projection to d) -> head, and EBV checkpoint checks.

Heads: ``ebv`` (projection F -> d, then the frozen EBVs, logits cos/tau), ``fc`` (learned
F -> N), ``fixed_random_dot`` / ``fixed_random_cos`` (projection F -> d, then frozen random unit
vectors with scale S). For mindcv backbones the projection / FC layer is the backbone's own last
linear layer (ResNet-50 built with num_classes=d, as in the paper).
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ..ebv.ebvset import EBVError, EBVSet
from .backbones import create_backbone
from .heads import EBVHead, FCHead, FixedRandomHead, matrix_checksum

__all__ = ["Classifier", "create_classifier", "create_classifier_from_config", "HEADS",
           "check_ebv_matches", "ebv_from_checkpoint", "EBV_PARAM"]

HEADS = ("ebv", "fc", "fixed_random_dot", "fixed_random_cos")
EBV_PARAM = "head.ebv"  # name of the frozen EBV matrix in checkpoints


class Classifier(nn.Cell):
    """images (B, C, H, W) -> logits (B, N). Parts: ``backbone``, ``projection``, ``head``."""

    def __init__(self, backbone: nn.Cell, projection: Optional[nn.Cell], head: nn.Cell,
                 backbone_name: str = "", head_name: str = ""):
        super().__init__()
        self.backbone = backbone
        self.projection = projection if projection is not None else nn.Identity()
        self.head = head
        self.has_projection = projection is not None
        self.backbone_name = backbone_name
        self.head_name = head_name

    @property
    def ebv_checksum(self) -> Optional[str]:
        """Checksum of the EBV set in the head (``EBVSet.checksum()``), None for other heads."""
        return self.head.checksum if isinstance(self.head, EBVHead) else None

    def embed(self, x):
        """The embedding the head sees (B, d) (backbone features for the FC head)."""
        return self.projection(self.backbone(x))

    def construct(self, x):
        return self.head(self.projection(self.backbone(x)))

    def predict(self, x):
        """Predicted class (int32, (B,)): for the EBV head, the nearest EBV by cosine."""
        return ops.cast(ops.argmax(self(x), dim=-1), ms.int32)


def create_classifier(backbone: str, head: str, num_classes: int, embed_dim: Optional[int] = None,
                      ebv: Union[EBVSet, np.ndarray, None] = None, tau: float = 0.07,
                      scale: Optional[float] = None, ebv_dtype: str = "float32",
                      pretrained: Union[bool, str] = False, backbone_checkpoint: Optional[str] = None,
                      head_seed: int = 0, in_channels: int = 3,
                      backbone_kwargs: Optional[Mapping] = None) -> Classifier:
    """Build a classifier mapping images (B,3,H,W) float32 to logits (B, num_classes).

    backbone: "resnet50" | "swin_tiny" | "small_cnn" (or another mindcv model name).
    head: "ebv" (needs ``ebv``, an EBVSet with N=num_classes) | "fc" | "fixed_random_dot" |
    "fixed_random_cos". ``embed_dim`` is d (default: the EBV set's d); ignored by "fc".
    ``tau``: EBV temperature. ``scale``: S of the fixed random heads (default 1 for dot, 1/tau
    for cos, i.e. the EBV head's scale). ``ebv_dtype``: storage of the frozen matrix
    (float32 | float16). ``pretrained``: mindcv download (True) or a local checkpoint path;
    ``backbone_checkpoint``: local checkpoint path. ``head_seed``: seed of the random vectors.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}: use one of {', '.join(HEADS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    kwargs = dict(backbone_kwargs or {})

    if head == "fc":
        feats, num_features, linear = create_backbone(backbone, num_classes, pretrained,
                                                      backbone_checkpoint, in_channels, **kwargs)
        return Classifier(feats, None, FCHead(num_features, num_classes, dense=linear), backbone, head)

    if head == "ebv":
        if ebv is None:
            raise ValueError("head='ebv' needs an EBV set: pass ebv=EBVSet (load_ebv / create_ebv)")
        if not isinstance(ebv, EBVSet):
            ebv = EBVSet(np.asarray(ebv))
        if ebv.num_classes != num_classes:
            raise EBVError(f"the EBV set has {ebv.num_classes} vectors but num_classes={num_classes}; "
                           f"use an EBV set with one vector per class")
        if embed_dim is not None and embed_dim != ebv.dim:
            raise EBVError(f"the EBV set has dimension d={ebv.dim} but embed_dim={embed_dim}; "
                           f"set model.embed_dim={ebv.dim} or use a {num_classes} x {embed_dim} EBV set")
        dim = ebv.dim
    else:
        if embed_dim is None:
            raise ValueError(f"head={head!r} needs embed_dim (d of the random class vectors)")
        dim = int(embed_dim)

    feats, num_features, projection = create_backbone(backbone, dim, pretrained,
                                                      backbone_checkpoint, in_channels, **kwargs)
    if head == "ebv":
        head_cell: nn.Cell = EBVHead(ebv, tau=tau, storage_dtype=ebv_dtype)
    else:
        mode = "dot" if head == "fixed_random_dot" else "cos"
        if scale is None:
            scale = 1.0 if mode == "dot" else 1.0 / tau
        head_cell = FixedRandomHead(num_classes, dim, mode=mode, scale=scale, seed=head_seed,
                                    storage_dtype=ebv_dtype)
    return Classifier(feats, projection, head_cell, backbone, head)


def create_classifier_from_config(model_cfg: Mapping, ebv: Optional[EBVSet] = None) -> Classifier:
    """``create_classifier(**cfg.model, ebv=ebv)``; the ``model`` config section mirrors its args."""
    return create_classifier(ebv=ebv, **dict(model_cfg))


def _checkpoint_params(ckpt) -> dict:
    if isinstance(ckpt, str):
        return ms.load_checkpoint(ckpt)
    if isinstance(ckpt, nn.Cell):
        return dict(ckpt.parameters_and_names())
    return dict(ckpt)


def _find_ebv(params: Mapping, where: str):
    keys = [k for k in params if k == EBV_PARAM or k.endswith("." + EBV_PARAM)]
    if not keys:
        raise EBVError(f"{where} has no EBV matrix ('{EBV_PARAM}'): it was not trained with an EBV head")
    value = params[keys[0]]
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)


def ebv_from_checkpoint(ckpt) -> EBVSet:
    """The EBV set stored in a checkpoint (path, parameter dict or Cell), as float32 EBVSet."""
    where = ckpt if isinstance(ckpt, str) else "the checkpoint"
    mat = _find_ebv(_checkpoint_params(ckpt), where).astype(np.float32)
    return EBVSet(mat, method="checkpoint")


def check_ebv_matches(ckpt, ebv: EBVSet) -> str:
    """Raise EBVError unless ``ebv`` is the EBV set stored in ``ckpt`` (path / param dict / Cell).

    Call this before loading a checkpoint into a model built with an EBV file: a model trained
    against one set of EBVs gives meaningless predictions against another. Returns the checksum.
    """
    where = ckpt if isinstance(ckpt, str) else "the checkpoint"
    stored = _find_ebv(_checkpoint_params(ckpt), where)
    given = ebv.vectors if isinstance(ebv, EBVSet) else np.asarray(ebv, dtype=np.float32)
    stored_sum = matrix_checksum(stored)
    given_sum = ebv.checksum() if isinstance(ebv, EBVSet) else matrix_checksum(given)
    if stored.shape != given.shape or not np.array_equal(stored, given.astype(stored.dtype)):
        raise EBVError(
            f"EBV mismatch: {where} was trained with a {stored.shape[0]} x {stored.shape[1]} EBV set "
            f"(checksum {stored_sum}, stored {stored.dtype}) but the EBV file given is "
            f"{given.shape[0]} x {given.shape[1]} (checksum {given_sum}). Use the EBV file the model "
            f"was trained with, or give no EBV file: the checkpoint carries its own EBV matrix.")
    return given_sum

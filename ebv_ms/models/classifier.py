"""`create_classifier`: backbone -> (projection to d) -> head, and parameter counts. For mindcv
backbones the projection / FC layer is the backbone's own last linear layer."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Union

import numpy as np
from mindspore import nn

from ..config import HEADS
from ..ebv.ebvset import EBVError, EBVSet
from .backbones import create_backbone
from .heads import EBVHead, FCHead, FixedRandomHead, FrozenVectorHead


class Classifier(nn.Cell):
    """images (B, C, H, W) -> logits (B, N). Parts: ``backbone``, ``projection``, ``head``."""

    def __init__(self, backbone: nn.Cell, projection: Optional[nn.Cell], head: nn.Cell):
        super().__init__()
        self.backbone = backbone
        self.projection = projection if projection is not None else nn.Identity()
        self.head = head
        self.has_projection = projection is not None

    @property
    def ebv_checksum(self) -> Optional[str]:  # None for the heads without an EBV set
        return self.head.checksum if isinstance(self.head, EBVHead) else None

    def construct(self, x):
        return self.head(self.projection(self.backbone(x)))

    predict = FrozenVectorHead.predict  # for the EBV head: the nearest EBV by cosine


def create_classifier(backbone: str, head: str, num_classes: int, embed_dim: Optional[int] = None,
                      ebv: Union[EBVSet, np.ndarray, None] = None, tau: float = 0.07,
                      scale: Optional[float] = None, ebv_dtype: str = "float32",
                      pretrained: Union[bool, str] = False, backbone_checkpoint: Optional[str] = None,
                      head_seed: int = 0, in_channels: int = 3,
                      backbone_kwargs: Optional[Mapping] = None) -> Classifier:
    """The config's ``model`` section -> the network: ``ebv`` (F -> d, the frozen EBVs, cos/tau),
    ``fc`` (learned F -> N), ``fixed_random_dot`` / ``_cos`` (frozen random unit vectors, scale S:
    default 1 for dot, 1/tau for cos). ``embed_dim`` is d (default: the EBV set's)."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}: use one of {', '.join(HEADS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
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
    elif head != "fc":
        if embed_dim is None:
            raise ValueError(f"head={head!r} needs embed_dim (d of the random class vectors)")
        dim = int(embed_dim)
    feats, num_features, linear = create_backbone(backbone, num_classes if head == "fc" else dim,
        pretrained, backbone_checkpoint, in_channels, **dict(backbone_kwargs or {}))
    if head == "fc":
        return Classifier(feats, None, FCHead(num_features, num_classes, dense=linear))
    if head == "ebv":
        return Classifier(feats, linear, EBVHead(ebv, tau=tau, storage_dtype=ebv_dtype))
    mode = head.rsplit("_", 1)[1]  # fixed_random_dot | fixed_random_cos
    scale = scale if scale is not None else 1.0 if mode == "dot" else 1.0 / tau
    return Classifier(feats, linear,
                      FixedRandomHead(num_classes, dim, mode, scale, head_seed, ebv_dtype))


PARTS = ("backbone", "projection", "head")


@dataclass
class PartCount:
    """``frozen``: the fixed class vectors; ``buffers``: BatchNorm statistics (not in the paper)."""
    trainable: int = 0
    frozen: int = 0
    buffers: int = 0


def count_cell(cell: nn.Cell) -> PartCount:
    out = PartCount()
    for name, p in cell.parameters_and_names():
        kind = "trainable" if p.requires_grad else \
            "buffers" if name.endswith(("moving_mean", "moving_variance")) else "frozen"
        setattr(out, kind, getattr(out, kind) + int(p.size))
    return out


def parameter_totals(net: Classifier) -> Dict[str, int]:
    """The counts summed over the parts; ``total`` = trainable + frozen, as in the paper."""
    c = count_cell(net)
    return {"total": c.trainable + c.frozen, **asdict(c)}

"""Backbones: mindcv models (ResNet-50, Swin-T, any other mindcv name), ``small_cnn``, ``small_mlp``.
Their last linear layer is the projection to d of the fixed heads (as in the paper: ResNet-50
built with num_classes=d), or the FC head; for mindcv models it is the model's own
``classifier``, so weights stay compatible with mindcv's model zoo."""
from __future__ import annotations

import inspect
import os
from typing import Optional, Tuple, Union

import mindcv.models
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..ckpt_file import CheckpointError, read_entries
from ..config import BACKBONE_ALIASES, BACKBONES, is_backbone
from ..errors import ModelError


class SmallCNN(nn.Cell):
    """Conv blocks (BN, ReLU, max-pools between) + global average pool, for tests and the CPU
    demo (~93k parameters at 32-64-128: a few ms per 64-image 32x32 step). Inputs >= 8x8."""

    def __init__(self, in_channels: int = 3, widths=(32, 64, 128)):
        super().__init__()
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, pad_mode="same", has_bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2, 2))
            c = w
        self.features = nn.SequentialCell(layers)
        self.num_features = c

    def construct(self, x):
        return ops.mean(self.features(x), axis=(2, 3))


class SmallMLP(nn.Cell):
    """Flatten + (Dense, BN, ReLU) blocks (``grayscale``: channels averaged first), for CPU
    benchmarks: a train step at batch 128, 32x32 takes 0.15 s, ``small_cnn`` 16.4 s (docs/training.md)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, widths=(1024, 1024),
                 grayscale: bool = False):
        super().__init__()
        self.grayscale = bool(grayscale)
        c = (1 if self.grayscale else in_channels) * int(image_size) ** 2
        layers = [nn.Flatten()]
        for w in widths:
            layers += [nn.Dense(c, w, has_bias=False), nn.BatchNorm1d(w), nn.ReLU()]
            c = w
        self.features = nn.SequentialCell(layers)
        self.num_features = c

    def construct(self, x):
        if self.grayscale:
            x = ops.mean(x, axis=1, keep_dims=True)
        return self.features(x)


_OWN = {"small_cnn": SmallCNN, "small_mlp": SmallMLP}


def _load_backbone_checkpoint(model: nn.Cell, path: str, name: str) -> None:
    """Load a local mindcv/MindSpore checkpoint; classifier weights of another size are skipped."""
    key = "config key 'model.backbone_checkpoint'"
    if not os.path.isfile(path):
        raise ModelError(f"{key}: file not found: {path}")
    try:  # not ms.load_checkpoint: crafted dims crashed it (SIGSEGV / SIGABRT, a file from the web)
        entries = read_entries(path, f"is it a checkpoint of mindcv's {name}?")
    except CheckpointError as exc:
        raise ModelError(f"{key}: {exc}") from None
    own = {k: tuple(p.shape) for k, p in model.parameters_and_names()}
    params = {k: ms.Parameter(v, name=k) for k, v in entries.items() if isinstance(v, np.ndarray)
              and not (k.startswith("classifier.") and own.get(k, v.shape) != v.shape)}
    try:
        not_loaded, _ = ms.load_param_into_net(model, params)
    except RuntimeError as exc:  # a parameter of the same name and another shape
        not_loaded = [' '.join(str(exc).split())[:160]]
    missing = [k for k in not_loaded if not k.startswith("classifier.")]
    if missing:
        raise ModelError(f"{key}: {path} does not fit backbone {name}: {len(missing)} parameter(s) "
                         f"missing, e.g. {missing[:3]}; is it a checkpoint of mindcv's {name}?")


def _check_own_kwargs(name: str, in_channels: int, kwargs: dict) -> None:
    """Refuse bad arguments before building, and weights beyond this machine's memory."""
    key, sig = "config key 'model.backbone_kwargs'", inspect.signature(_OWN[name])
    try:
        args = sig.bind(in_channels=in_channels, **kwargs)
    except TypeError as exc:
        takes = ", ".join(p for p in sig.parameters if p != "in_channels")
        raise ModelError(f"{key}: {name} takes {takes} ({exc})") from None
    args.apply_defaults()
    a = args.arguments
    widths, size, mlp = a["widths"], a.get("image_size", 1), name == "small_mlp"
    ints = lambda v: all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)  # noqa: E731
    # small_mlp with widths [] is flatten -> projection: a linear model without BatchNorm (the
    # 2-rank == 1-rank equivalence test needs one)
    if not (isinstance(widths, (list, tuple)) and (widths or mlp) and ints(widths)) or not ints([size]):
        raise ModelError(f"{key}: {name} needs widths as a list of positive integers and a "
                         f"positive image_size, got {kwargs}")
    c, k = ((1 if a.get("grayscale") else in_channels) * size * size, 1) if mlp else (in_channels, 9)
    weights = sum(k * i * o for i, o in zip([c, *widths], widths))
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if 4 * weights > ram:
        raise ModelError(f"{key}: {name} with {kwargs} has {weights:,} weights "
                         f"({4 * weights / 2**30:,.1f} GiB of float32); this machine has "
                         f"{ram / 2**30:,.1f} GiB: use smaller widths")


def create_backbone(name: str, out_dim: int, pretrained: Union[bool, str] = False,
                    checkpoint_path: Optional[str] = None, in_channels: int = 3,
                    **kwargs) -> Tuple[nn.Cell, int, nn.Dense]:
    """(features: images -> (B, F), F, last linear layer F -> out_dim). ``pretrained=True``
    downloads mindcv's weights; ``checkpoint_path`` (or ``pretrained="/a.ckpt"``) loads local ones."""
    name = BACKBONE_ALIASES.get(name, name)
    if isinstance(pretrained, str):
        checkpoint_path, pretrained = pretrained, False
    if name in _OWN:
        if pretrained:
            raise ModelError(f"{name} has no pretrained weights; set model.pretrained=false")
        _check_own_kwargs(name, in_channels, kwargs)
        model = _OWN[name](in_channels=in_channels, **kwargs)
    elif not is_backbone(name):
        raise ModelError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)} "
                         f"or another mindcv model name")
    else:
        try:
            model = mindcv.models.create_model(name, num_classes=out_dim, pretrained=bool(pretrained),
                                               in_channels=in_channels, **kwargs)
        except Exception as exc:  # noqa: BLE001 - mindcv raises URLError/OSError/... when offline
            if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
                raise ModelError(f"config key 'model.backbone_kwargs': mindcv's {name} does not take "
                                 f"{exc}".replace("got an unexpected keyword argument", "")) from None
            if pretrained:
                raise ModelError(
                    f"could not load pretrained weights for {name} ({type(exc).__name__}: {exc}). "
                    "pretrained=True downloads them from the internet; offline, download the mindcv "
                    f"checkpoint elsewhere and pass it as model.backbone_checkpoint=/path/{name}.ckpt"
                    " (with pretrained=false)") from exc
            raise
    if checkpoint_path:
        _load_backbone_checkpoint(model, checkpoint_path, name)
    if name in _OWN:
        return model, model.num_features, nn.Dense(model.num_features, out_dim)
    linear = getattr(model, "classifier", None)
    if not isinstance(linear, nn.Dense):
        raise ModelError(f"mindcv model {name} has no 'classifier' Dense layer; not usable as a backbone here")
    model.classifier = nn.Identity()
    return model, int(linear.in_channels), linear

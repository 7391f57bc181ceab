"""A trained network from a checkpoint, ready for inference: the one place export and predict
load checkpoints (``load_network``).

Everything it needs comes from the engine's public API (``load_checkpoint`` /
``restore_checkpoint``, ``resolve_ebv``, ``build_network``); keeping it in one function means
a change of checkpoint layout is wired here once, not in every entry point.
"""
from __future__ import annotations

import json
import logging
import os
from typing import List, Optional, Sequence, Tuple

from ebv_ms.data.presets import IMAGENET_MEAN, IMAGENET_STD

from ebv_ms.engine.builders import eval_sizes  # the evaluation transform's sizes, one rule

__all__ = ["load_network", "eval_sizes", "input_spec", "read_class_names"]

_log = logging.getLogger("ebv_ms")


def read_class_names(ckpt: str, num_classes: int) -> Tuple[List[str], Optional[str]]:
    """Class names from ``classes.json`` next to ``ckpt`` (train.py writes it into the run's
    folder); ``(["0", ..., "N-1"], None)`` with a warning when there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "classes.json")
    if not os.path.isfile(path):
        _log.warning("no classes.json next to %s: classes are shown as their index numbers "
                     "(copy the run's classes.json beside the checkpoint to get names)", ckpt)
        return [str(i) for i in range(num_classes)], None
    with open(path, encoding="utf-8") as f:
        names = json.load(f).get("class_names") or []
    if len(names) != num_classes:
        from ebv_ms.config import ConfigError
        raise ConfigError(f"{path} names {len(names)} classes but the checkpoint's model has "
                          f"{num_classes}; it belongs to another run: copy that run's classes.json "
                          "beside the checkpoint")
    return [str(n) for n in names], path


def input_spec(cfg, batch: int) -> dict:
    """What the exported graph expects as input (written beside every export)."""
    resize, crop = eval_sizes(cfg)
    return {
        "name": "image", "shape": [int(batch), int(cfg.model.in_channels), crop, crop],
        "dtype": "float32", "layout": "NCHW", "color": "RGB",
        "preprocessing": [
            "decode to RGB uint8 (H, W, 3)",
            f"resize the shorter side to {resize} (bilinear)",
            f"centre-crop {crop} x {crop}",
            "x = (pixel - mean) / std per channel, with pixel in 0..255",
            "HWC -> CHW, stack to (batch, 3, H, W)"],
        "resize": resize, "crop": crop, "interpolation": "bilinear",
        "mean": [round(m * 255.0, 4) for m in IMAGENET_MEAN],
        "std": [round(s * 255.0, 4) for s in IMAGENET_STD],
        "same_as": "ebv_ms.data.presets.create_transforms('eval', ...) as used by eval.py",
    }


def load_network(ckpt: str, overrides: Sequence[str] = (), config: Optional[str] = None):
    """``(cfg, network, class_names)`` from a checkpoint written by train.py.

    ``overrides`` are ``key.sub=value`` strings on top of the checkpoint's own config (e.g.
    ``device_target=CPU``, ``eval.test_size=256``, ``model.ebv_dtype=float16``); ``config`` a
    YAML applied first (needed for a plain weights file). The network is in inference mode
    (``set_train(False)``); MindSpore's context (device, mode, seed) is set from the config.
    """
    from ebv_ms.config import ConfigError, load_config
    from ebv_ms.engine.builders import build_network, setup_context
    from ebv_ms.engine.checkpoint import load_checkpoint, restore_checkpoint
    from ebv_ms.engine.ebv_source import checkpoint_ebv

    state = load_checkpoint(ckpt)
    if state.config is None and not config:
        raise ConfigError(f"{ckpt} records no config (not written by train.py); pass --config "
                          "with the model/data settings it was trained with")
    cfg = load_config(config, list(overrides), base=state.config)
    setup_context(cfg)
    # the set inside the checkpoint, next to it, or rebuilt from its recipe; verified by checksum
    ebv = checkpoint_ebv(state, cfg)
    network = build_network(cfg, ebv)
    _match_frozen_dtypes(state, network)
    restore_checkpoint(state, network)
    network.set_train(False)
    names, _ = read_class_names(ckpt, int(cfg.model.num_classes))
    return cfg, network, names


def _match_frozen_dtypes(state, network) -> None:
    """A frozen class-vector matrix stored in another dtype than the network holds it (e.g.
    ``model.ebv_dtype=float16`` asked for an fp32-trained checkpoint, to halve an export):
    cast the stored copy. Trainable weights are never cast: a mismatch there stays an error."""
    import mindspore as ms
    for p in network.get_parameters():
        saved = state.params.get(p.name)
        if p.requires_grad or saved is None or saved.dtype == p.dtype:
            continue
        state.params[p.name] = ms.Parameter(ms.Tensor(saved.asnumpy().astype(
            ms.dtype_to_nptype(p.dtype))), name=p.name, requires_grad=False)

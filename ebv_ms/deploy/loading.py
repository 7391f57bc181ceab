"""A trained network from a checkpoint, ready for inference (``load_network``, used by export
and predict), with its class names: the ones the checkpoint records, which ``classes.json``
beside it (if any) must repeat exactly, so a replaced or permuted file is refused.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence

from ebv_ms.data.presets import IMAGENET_MEAN, IMAGENET_STD

from ebv_ms.engine.builders import eval_sizes  # the evaluation transform's sizes, one rule

__all__ = ["load_network", "eval_sizes", "input_spec", "class_names"]

_log = logging.getLogger("ebv_ms")


def class_names(state, num_classes: int) -> List[str]:
    """The checkpoint's class names, checked against ``classes.json`` beside it; without a
    record, that file's; without either, ``["0", ..., "N-1"]`` with a warning."""
    import os
    from ebv_ms.engine.checkpoint import CheckpointError
    from ebv_ms.engine.run_folder import read_class_names
    folder = os.path.dirname(os.path.abspath(state.path))
    names, beside = state.class_names, read_class_names(folder)
    if names is not None:
        if beside is not None and beside != names:
            raise CheckpointError(f"{os.path.join(folder, 'classes.json')} does not list the "
                                  f"{len(names)} classes {state.path} records, in its order (it "
                                  "was replaced or reordered): put the run's own classes.json "
                                  "beside the checkpoint, or remove it")
        return list(names)
    names = beside
    if names is None:
        _log.warning("no classes.json next to %s: classes are shown as their index numbers "
                     "(copy the run's classes.json beside the checkpoint to get names)", state.path)
        return [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise CheckpointError(f"{os.path.join(folder, 'classes.json')} names {len(names)} classes "
                              f"but the checkpoint's model has {num_classes}; it belongs to another "
                              "run: copy that run's classes.json beside the checkpoint")
    return names


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
    from ebv_ms.engine.builders import setup_context
    from ebv_ms.engine.checkpoint import checkpoint_config, load_checkpoint, network_from_checkpoint
    state = load_checkpoint(ckpt)
    cfg = checkpoint_config(state, config, overrides)
    names = class_names(state, int(cfg.model.num_classes))
    setup_context(cfg)
    network, _ = network_from_checkpoint(state, cfg)
    network.set_train(False)
    return cfg, network, names

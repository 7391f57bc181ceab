"""From a checkpoint to use: ``load_network`` (the engine's one checkpoint loader, for inference),
export (MindIR / ONNX / AIR), predict on images. See docs/deploy.md."""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence

from ebv_ms.engine.builders import eval_sizes, setup_context  # noqa: F401 (eval_sizes: predict)
from ebv_ms.engine.checkpoint import (CheckpointError, checkpoint_config, load_checkpoint,
                                      network_from_checkpoint)
from ebv_ms.engine.run_folder import read_class_names


def class_names(state, num_classes: int) -> List[str]:
    """The checkpoint's class names, which a ``classes.json`` beside it must repeat exactly; else
    that file's; else ``["0", ..., "N-1"]`` with a warning."""
    folder = os.path.dirname(os.path.abspath(state.path))
    names, beside = state.class_names, read_class_names(folder)
    if names is not None:
        if beside is not None and beside != names:
            raise CheckpointError(f"{os.path.join(folder, 'classes.json')} does not list the "
                                  f"{len(names)} classes {state.path} records, in its order (it "
                                  "was replaced or reordered): put the run's own classes.json "
                                  "beside the checkpoint, or remove it")
        return list(names)
    if beside is None:
        logging.getLogger("ebv_ms").warning(
            "no classes.json next to %s: classes are shown as their index numbers (copy the "
            "run's classes.json beside the checkpoint to get names)", state.path)
        return [str(i) for i in range(num_classes)]
    if len(beside) != num_classes:
        raise CheckpointError(f"{os.path.join(folder, 'classes.json')} names {len(beside)} classes "
                              f"but the checkpoint's model has {num_classes}; it belongs to another "
                              "run: copy that run's classes.json beside the checkpoint")
    return beside


def load_network(ckpt: str, overrides: Sequence[str] = (), config: Optional[str] = None):
    """``(cfg, network in inference mode, class_names)`` from a checkpoint written by train.py;
    ``config`` (a YAML, needed for a plain weights file), then ``overrides`` (``key.sub=value``)
    go on top of the checkpoint's config, which sets MindSpore's context."""
    state = load_checkpoint(ckpt)
    cfg = checkpoint_config(state, config, overrides)
    names = class_names(state, int(cfg.model.num_classes))
    setup_context(cfg)
    network, _ = network_from_checkpoint(state, cfg)
    network.set_train(False)
    return cfg, network, names

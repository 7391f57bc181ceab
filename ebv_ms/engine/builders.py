"""What a run is made of, built from the config: context, data, network and step functions.

Shared by ``train.py`` (through ``Trainer``) and ``eval.py``, so both build the same data
pipeline, network and compiled steps from the same keys. Each builder reads one config section
and calls that section's factory (``create_dataset``, ``create_classifier``, ``create_loss``,
``create_optimizer``, ``create_scheduler``, ``build_train_step``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Tuple

import numpy as np

import mindspore as ms

from .train_step import build_eval_step, build_train_step, create_loss_scaler, resolve_amp_level

__all__ = ["MODES", "setup_context", "init_parallel", "build_data", "build_network",
           "build_eval", "build_training", "TrainParts", "EvalParts", "is_jit", "resolve_amp",
           "scaler_params"]

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}


def setup_context(cfg) -> None:
    """Device, execution mode (graph | pynative) and the global seed, from a validated config."""
    from ebv_ms.device import set_device
    set_device(cfg.device_target)  # and this rank's card (DEVICE_ID) on GPU/Ascend
    ms.set_context(mode=MODES[cfg.mode])
    ms.set_seed(cfg.seed)
    np.random.seed(cfg.seed)


def init_parallel(cfg) -> Tuple[int, int]:
    """(rank, world_size); sets the data-parallel context when launched by mpirun/msrun."""
    from .distributed import init_distributed
    return init_distributed(cfg)


def is_jit(cfg) -> bool:
    """Steps are compiled with ``ms.jit`` in ``mode: graph``."""
    return cfg.mode == "graph"


def eval_sizes(cfg) -> Tuple[int, int]:
    """(resize, crop) of the evaluation transform, as ``build_data`` sets it (and exports record it):
    ``eval.test_size`` S gives (round(S / 0.875), S); otherwise ``data.eval_resize`` /
    ``data.eval_crop``, defaulting to ``image_size / 0.875`` and ``image_size``."""
    size = cfg.eval.get("test_size")
    if size:
        return round(size / 0.875), size
    d = cfg.data
    return d.eval_resize or round(d.image_size / 0.875), d.eval_crop or d.image_size


def build_data(cfg, split: str, batch_size: int, is_training: bool, num_shards: int = 1,
               shard_id: int = 0):
    """``create_dataset`` with the ``data`` section; ``eval.test_size`` S sets the evaluation
    transform to resize S/0.875 then centre-crop S (the usual 256 -> 224 ratio)."""
    from ebv_ms.data import create_dataset
    data_cfg = dict(cfg.data)
    if cfg.eval.get("test_size") and not is_training:
        data_cfg["eval_resize"], data_cfg["eval_crop"] = eval_sizes(cfg)
    return create_dataset(data_cfg, split, batch_size, is_training, num_shards=num_shards,
                          shard_id=shard_id, seed=cfg.seed,
                          num_classes=cfg.model.num_classes)


def build_network(cfg, ebv=None, amp_level: str = "O0"):
    """``create_classifier`` with the ``model`` section as its arguments, plus the EBV set;
    cast for mixed precision by ``models.amp.apply_mixed_precision`` unless ``amp_level`` is O0."""
    from ebv_ms.models import create_classifier
    network = create_classifier(ebv=ebv, **cfg.model.to_dict())
    from ebv_ms.models.amp import apply_mixed_precision
    return apply_mixed_precision(network, amp_level)  # the embedding and head stay fp32


@dataclass
class EvalParts:
    """This rank's shard of the evaluation split and the compiled top-k step over it."""

    dataset: Any
    info: Any                  # DatasetInfo: shard padding, bad samples
    step: Any                  # images -> (B, k) class indices, best first


def build_eval(cfg, network, rank: int = 0, world_size: int = 1) -> EvalParts:
    """The ``eval.split`` shard of this rank (``eval.batch_size`` per device) and its step."""
    ds, info = build_data(cfg, cfg.eval.split, cfg.eval.batch_size, False,
                          num_shards=world_size, shard_id=rank)
    return EvalParts(ds, info, build_eval_step(network, min(5, cfg.model.num_classes), jit=is_jit(cfg)))


@dataclass
class TrainParts:
    """Per-step lr list, optimizer, loss scaler and the compiled train step."""

    lrs: List[float]
    optimizer: Any
    scaler: Any
    step: Any                  # (images, labels) -> (loss, finite)


def build_training(cfg, network, steps_per_epoch: int, amp_level: str) -> TrainParts:
    """``loss``, ``scheduler``, ``optim`` and ``train`` sections -> the parts of one step."""
    from ebv_ms.loss import create_loss
    from ebv_ms.optim import create_optimizer
    from ebv_ms.scheduler import create_scheduler
    t, s, o = cfg.train, cfg.scheduler, cfg.optim
    loss_fn = create_loss(**dict(cfg.loss))
    lrs = create_scheduler(steps_per_epoch, t.epochs, o.lr, name=s.name,
                           warmup_epochs=s.warmup_epochs, warmup_factor=s.warmup_factor,
                           min_lr=s.min_lr)
    optimizer = create_optimizer(network, opt=o.opt, lr=lrs,
                                 weight_decay=o.weight_decay, momentum=o.momentum,
                                 nesterov=o.nesterov, filter_bias_and_bn=o.filter_bias_and_bn,
                                 betas=tuple(o.betas), eps=o.eps)
    scaler = create_loss_scaler(t.loss_scale, amp_level, t.loss_scale_value)
    step = build_train_step(network, loss_fn, optimizer, jit=is_jit(cfg), loss_scaler=scaler,
                            clip_grad_norm=t.clip_grad_norm)
    return TrainParts(lrs, optimizer, scaler, step)


def scaler_params(scaler) -> dict:
    """The loss scaler's state as Parameters (saved under ``loss_scale/`` in checkpoints)."""
    if scaler is None or not hasattr(scaler, "scale_value"):
        return {}
    out = {"scale_value": scaler.scale_value}
    if hasattr(scaler, "counter"):
        out["counter"] = scaler.counter
    return out


def resolve_amp(cfg) -> str:
    """``train.amp_level`` for this device (auto -> O2 on GPU/Ascend, O0 on CPU)."""
    return resolve_amp_level(cfg.train.amp_level, cfg.device_target)


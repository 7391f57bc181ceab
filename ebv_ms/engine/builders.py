"""What a run is made of (context, data, network, step functions), from each config section's
factory; shared by ``Trainer`` and ``eval.py``."""
from __future__ import annotations

from collections import namedtuple
from typing import Tuple

import mindspore as ms

from .train_step import build_eval_step, build_train_step, create_loss_scaler

EvalParts = namedtuple("EvalParts", "dataset info step")  # step: images -> (B, k) top-k indices


def setup_context(cfg) -> None:
    from ebv_ms.device import set_device
    set_device(cfg.device_target)
    ms.set_context(mode={"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}[cfg.mode])
    ms.set_seed(cfg.seed)  # numpy's global seed too


def eval_sizes(cfg) -> Tuple[int, int]:
    """(resize, crop) of the evaluation transform: ``eval.test_size`` S gives (S / 0.875, S); else
    ``data.eval_resize`` / ``eval_crop``, by default ``image_size`` / 0.875 and ``image_size``."""
    size, d = cfg.eval.get("test_size"), cfg.data
    if size:
        return round(size / 0.875), size
    return d.eval_resize or round(d.image_size / 0.875), d.eval_crop or d.image_size


def build_data(cfg, split: str, batch_size: int, is_training: bool, num_shards: int = 1,
               shard_id: int = 0):
    from ebv_ms.data import create_dataset
    data_cfg = dict(cfg.data)
    if cfg.eval.get("test_size") and not is_training:
        data_cfg["eval_resize"], data_cfg["eval_crop"] = eval_sizes(cfg)
    return create_dataset(data_cfg, split, batch_size, is_training, num_shards=num_shards,
                          shard_id=shard_id, seed=cfg.seed, num_classes=cfg.model.num_classes)


def build_network(cfg, ebv=None, amp_level: str = "O0"):
    from ebv_ms.models import create_classifier
    from ebv_ms.models.amp import apply_mixed_precision
    return apply_mixed_precision(create_classifier(ebv=ebv, **cfg.model.to_dict()), amp_level)


def build_eval(cfg, network, rank: int = 0, world_size: int = 1) -> EvalParts:
    ds, info = build_data(cfg, cfg.eval.split, cfg.eval.batch_size, False, world_size, rank)
    return EvalParts(ds, info, build_eval_step(network, min(5, cfg.model.num_classes),
                                               jit=cfg.mode == "graph"))


def build_training(cfg, network, steps_per_epoch: int, amp_level: str) -> tuple:
    """The ``loss``, ``scheduler``, ``optim`` and ``train`` sections -> (lr per step, optimizer,
    loss scaler, ``step(images, labels) -> (loss, finite)``)."""
    from ebv_ms.loss import create_loss
    from ebv_ms.optim import create_optimizer
    from ebv_ms.scheduler import create_scheduler
    t, o = cfg.train, cfg.optim  # the sections' keys are the factories' arguments
    loss_fn = create_loss(**dict(cfg.loss))
    lrs = create_scheduler(steps_per_epoch, t.epochs, o.lr, **dict(cfg.scheduler))
    optimizer = create_optimizer(network, **{**o, "lr": lrs, "betas": tuple(o.betas)})
    scaler = create_loss_scaler(t.loss_scale, amp_level, t.loss_scale_value)
    step = build_train_step(network, loss_fn, optimizer, jit=cfg.mode == "graph",
                            loss_scaler=scaler, clip_grad_norm=t.clip_grad_norm)
    return lrs, optimizer, scaler, step


def scaler_params(scaler) -> dict:
    """The loss scaler's state as Parameters (saved under ``loss_scale/`` in checkpoints)."""
    return {k: getattr(scaler, k) for k in ("scale_value", "counter") if hasattr(scaler, k)}

"""`create_optimizer`: momentum SGD or AdamW over the trainable parameters only.

The fixed class vectors are frozen (``requires_grad=False``) parameters, so taking
``network.trainable_params()`` keeps them out of the optimizer: never updated nor decayed.
"""
from __future__ import annotations

from typing import Iterable, Sequence, Union

from mindspore import nn
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from ..config import OPTIMIZERS

__all__ = ["create_optimizer", "OPTIMIZERS"]


def _is_no_decay(param) -> bool:
    """Biases and norm layers' gamma/beta (1-D tensors) get no weight decay."""
    name = param.name.lower()
    return (param.ndim <= 1 or name.endswith((".bias", ".beta", ".gamma"))
            or "norm" in name.split(".")[-1])


def create_optimizer(model_or_params: Union[nn.Cell, Iterable], opt: str = "sgd",
                     lr: Union[float, Sequence[float], LearningRateSchedule] = 0.1,
                     weight_decay: float = 1e-4, momentum: float = 0.9, nesterov: bool = False,
                     filter_bias_and_bn: bool = True, betas: Sequence[float] = (0.9, 0.999),
                     eps: float = 1e-8, loss_scale: float = 1.0) -> nn.Optimizer:
    """``opt`` "sgd" (momentum) or "adamw"; ``lr`` a float, a per-step list (``create_scheduler``)
    or a LearningRateSchedule."""
    if isinstance(model_or_params, nn.Cell):
        params = list(model_or_params.trainable_params())
    else:
        params = [p for p in model_or_params if getattr(p, "requires_grad", True)]
    if not params:
        raise ValueError("create_optimizer: the model has no trainable parameters")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not isinstance(lr, LearningRateSchedule):
        lr = [float(x) for x in lr] if isinstance(lr, (list, tuple)) else float(lr)
    weight_decay = float(weight_decay)
    if not filter_bias_and_bn or weight_decay == 0.0:
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        groups = [{"params": [p for p in params if not _is_no_decay(p)], "weight_decay": weight_decay},
                  {"params": [p for p in params if _is_no_decay(p)], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    name = str(opt).lower()
    if name in ("sgd", "momentum"):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        return nn.Momentum(groups, learning_rate=lr, momentum=float(momentum),
                           use_nesterov=bool(nesterov), loss_scale=float(loss_scale))
    if name == "adamw":
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers, got {betas!r}")
        if loss_scale != 1.0:
            raise ValueError("adamw does not take a fixed optimizer loss scale; scale the loss instead")
        return nn.AdamWeightDecay(groups, learning_rate=lr, beta1=float(betas[0]),
                                  beta2=float(betas[1]), eps=float(eps))
    raise ValueError(f"unknown optimizer {opt!r}; choose one of {', '.join(OPTIMIZERS)}")

"""`create_optimizer`: momentum SGD or AdamW over the trainable parameters only, so the frozen
class vectors are never updated nor decayed."""
from __future__ import annotations

from typing import Sequence, Union

from mindspore import nn

from ..config import OPTIMIZERS


def _is_no_decay(param) -> bool:
    """Biases and norm layers' gamma/beta (1-D tensors) get no weight decay."""
    name = param.name.lower()
    return (param.ndim <= 1 or name.endswith((".bias", ".beta", ".gamma"))
            or "norm" in name.split(".")[-1])


def create_optimizer(network: nn.Cell, opt: str = "sgd", lr: Union[float, Sequence[float]] = 0.1,
                     weight_decay: float = 1e-4, momentum: float = 0.9, nesterov: bool = False,
                     filter_bias_and_bn: bool = True, betas: Sequence[float] = (0.9, 0.999),
                     eps: float = 1e-8) -> nn.Optimizer:
    """``opt`` "sgd" (momentum) or "adamw"; ``lr`` a float or a per-step list (``create_scheduler``)."""
    params = list(network.trainable_params())
    if not params:
        raise ValueError("create_optimizer: the model has no trainable parameters")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    lr = [float(x) for x in lr] if isinstance(lr, (list, tuple)) else float(lr)
    decay = float(weight_decay)
    off = [bool(filter_bias_and_bn and decay and _is_no_decay(p)) for p in params]
    groups = [{"params": [p for p, o in zip(params, off) if o == skip],
               "weight_decay": 0.0 if skip else decay} for skip in (False, True) if skip in off]
    name = str(opt).lower()
    if name in ("sgd", "momentum"):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        return nn.Momentum(groups, learning_rate=lr, momentum=float(momentum),
                           use_nesterov=bool(nesterov))
    if name == "adamw":
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers, got {betas!r}")
        return nn.AdamWeightDecay(groups, learning_rate=lr, beta1=float(betas[0]),
                                  beta2=float(betas[1]), eps=float(eps))
    raise ValueError(f"unknown optimizer {opt!r}; choose one of {', '.join(OPTIMIZERS)}")

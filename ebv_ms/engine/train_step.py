"""One optimizer step as a (optionally ``ms.jit``-compiled) function.

``mindspore.value_and_grad`` over the trainable parameters; gradients are all-reduced (mean)
with ``nn.DistributedGradReducer`` whenever the auto-parallel context says data parallel (set
by ``ebv_ms.engine.distributed.init_distributed`` under mpirun/msrun); fp16 loss scaling with
``mindspore.amp`` loss scalers (a step whose gradients overflow is skipped, as MindSpore's own
``TrainOneStepWithLossScaleCell`` does); optional global-norm clipping.
"""
from __future__ import annotations

from typing import Optional

import mindspore as ms
from mindspore import nn, ops
from mindspore import amp

__all__ = ["build_train_step", "build_eval_step", "create_loss_scaler", "resolve_amp_level",
           "grad_reducer_for", "AMP_LEVELS", "LOSS_SCALES"]

AMP_LEVELS = ("auto", "O0", "O1", "O2", "O3")
LOSS_SCALES = ("auto", "dynamic", "static", "none")

_PARALLEL = ("data_parallel", "hybrid_parallel")


def resolve_amp_level(amp_level: str, device_target: str) -> str:
    """``auto`` -> O2 on GPU/Ascend (fp16 compute, fp32 BN/master weights), O0 on CPU."""
    level = str(amp_level)
    if level == "auto":
        return "O0" if device_target == "CPU" else "O2"
    if level not in AMP_LEVELS:
        raise ValueError(f"amp_level must be one of {', '.join(AMP_LEVELS)}, got {amp_level!r}")
    return level


def create_loss_scaler(kind: str, amp_level: str, value: float = 65536.0):
    """``auto``: dynamic scaling when amp uses fp16 (O1-O3), none in fp32 (O0)."""
    kind = str(kind)
    if kind == "auto":
        kind = "none" if amp_level == "O0" else "dynamic"
    if kind == "none":
        return None
    if kind == "dynamic":
        return amp.DynamicLossScaler(scale_value=float(value), scale_factor=2, scale_window=1000)
    if kind == "static":
        return amp.StaticLossScaler(scale_value=float(value))
    raise ValueError(f"loss scale kind must be one of {', '.join(LOSS_SCALES)}, got {kind!r}")


def grad_reducer_for(params) -> Optional[nn.Cell]:
    """A mean all-reduce over ranks when running data parallel, else None."""
    mode = ms.get_auto_parallel_context("parallel_mode")
    if mode in _PARALLEL:
        from mindspore.communication import get_group_size
        return nn.DistributedGradReducer(params, mean=True, degree=get_group_size())
    return None


def build_train_step(network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, *,
                     jit: bool = True, loss_scaler=None, clip_grad_norm: float = 0.0):
    """``step(images, labels) -> (loss, finite)``: forward, backward, all-reduce, update."""
    weights = optimizer.parameters
    reducer = grad_reducer_for(weights)
    scaler = loss_scaler
    clip = float(clip_grad_norm or 0.0)

    def forward(images, labels):
        logits = ops.cast(network(images), ms.float32)
        loss = loss_fn(logits, labels)
        scaled = scaler.scale(loss) if scaler is not None else loss
        return scaled, loss

    grad_fn = ms.value_and_grad(forward, None, weights, has_aux=True)

    def step(images, labels):
        (_, loss), grads = grad_fn(images, labels)
        if reducer is not None:
            grads = reducer(grads)
        if scaler is None:
            if clip > 0:
                grads = ops.clip_by_global_norm(grads, clip)
            loss = ops.depend(loss, optimizer(grads))
            return loss, ops.ones((), ms.bool_)
        grads = scaler.unscale(grads)
        finite = amp.all_finite(grads)
        if finite:
            if clip > 0:
                grads = ops.clip_by_global_norm(grads, clip)
            loss = ops.depend(loss, optimizer(grads))
        scaler.adjust(finite)
        return loss, finite

    return ms.jit(step) if jit else step


def build_eval_step(network: nn.Cell, k: int, *, jit: bool = True):
    """``step(images) -> (B, k) int32`` indices of the k highest logits, best first."""

    def step(images):
        logits = ops.cast(network(images), ms.float32)
        return ops.topk(logits, k)[1]

    return ms.jit(step) if jit else step

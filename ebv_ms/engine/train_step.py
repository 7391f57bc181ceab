"""One optimizer step as compiled functions: gradients mean-all-reduced under data parallel, fp16
loss scaling (an overflowing step is skipped), optional global-norm clipping; the stall guard."""
from __future__ import annotations

import os
from typing import Optional

import mindspore as ms
from mindspore import Tensor, amp, nn, ops
from mindspore.ops.operations.math_ops import NPUClearFloatStatusV2

from ebv_ms.errors import DivergenceError
from ebv_ms.config import AMP_LEVELS


def resolve_amp_level(amp_level: str, device_target: str) -> str:
    """``auto`` -> O2 on GPU/Ascend (fp16 compute, fp32 BN/master weights), O0 on CPU."""
    if amp_level == "auto":
        return "O0" if device_target == "CPU" else "O2"
    if amp_level not in AMP_LEVELS:
        raise ValueError(f"amp_level must be one of {', '.join(AMP_LEVELS)}, got {amp_level!r}")
    return amp_level


def create_loss_scaler(kind: str, amp_level: str, value: float = 65536.0):
    """``kind`` (``train.loss_scale``) ``auto``: dynamic when amp uses fp16 (O1-O3), none in O0."""
    if kind == "auto":
        kind = "none" if amp_level == "O0" else "dynamic"
    if kind == "dynamic":
        return amp.DynamicLossScaler(scale_value=float(value), scale_factor=2, scale_window=1000)
    return amp.StaticLossScaler(scale_value=float(value)) if kind == "static" else None


def grad_reducer_for(params) -> Optional[nn.Cell]:
    if ms.get_auto_parallel_context("parallel_mode") in ("data_parallel", "hybrid_parallel"):
        from mindspore.communication import get_group_size
        return nn.DistributedGradReducer(params, mean=True, degree=get_group_size())
    return None


def _reads_status_register() -> bool:
    """True where ``amp.all_finite`` reads the NPU float-status register (910A, 910B in
    SATURATION_MODE): the step clears it before its forward, as TrainOneStepWithLossScaleCell does."""
    if ms.get_context("device_target") != "Ascend":
        return False
    from mindspore._c_expression import MSContext  # what mindspore.amp itself queries
    soc = MSContext.get_instance()
    if soc.ascend_soc_supports_feature("amp_loss_scale_train_classic_target"):  # 910A
        return True
    return (soc.ascend_soc_supports_feature("train_hq_dtype_line")  # 910B
            and os.environ.get("MS_ASCEND_CHECK_OVERFLOW_MODE") == "SATURATION_MODE")


class SkippedStepGuard:
    """Raise after ``max_steps`` (0: never) consecutive skipped steps at the lowest loss scale: a
    forward that itself overflows fp16 never recovers, and the run would idle for days."""

    def __init__(self, max_steps: int, min_scale: float = 1.0):
        if int(max_steps) < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        self.max_steps, self.min_scale, self.count = int(max_steps), float(min_scale), 0

    @classmethod
    def for_scaler(cls, loss_scaler, max_steps: int) -> Optional["SkippedStepGuard"]:
        if loss_scaler is None:
            return None
        return cls(max_steps, 1.0 if isinstance(loss_scaler, amp.DynamicLossScaler) else
                   float(loss_scaler.scale_value.asnumpy()))

    def __call__(self, finite: bool, scale) -> None:
        """After each step; ``scale`` (float or scalar Tensor) is read only for a skipped one."""
        at_floor = not finite and float(scale) <= self.min_scale
        self.count = self.count + 1 if at_floor else 0
        if self.max_steps and self.count >= self.max_steps:
            raise DivergenceError(
                f"training stalled: {self.count} consecutive steps had non-finite gradients with "
                f"the loss scale at its minimum ({self.min_scale:g}), so none of them updated the "
                "model (fp16 overflow in the forward pass, not in the scaled gradients). Lower "
                "optim.lr, set train.amp_level=O0, or raise train.max_skipped_steps to wait "
                "longer; the last checkpoint holds the last good epoch")


def build_train_step(network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, *,
                     jit: bool = True, loss_scaler=None, clip_grad_norm: float = 0.0):
    """``step(images, labels) -> (loss, finite)``. With a scaler, two compiled functions and the
    ``if finite`` in Python: inside one graph MindSpore copied every parameter the forward reads,
    2 GB of device memory and 4 GB of copying per step for the frozen 100k x 5000 matrix."""
    weights, scaler, clip = optimizer.parameters, loss_scaler, float(clip_grad_norm or 0.0)
    reducer = grad_reducer_for(weights)
    clear_status = scaler is not None and _reads_status_register()

    def forward(images, labels):
        logits = ops.cast(network(images), ms.float32)
        loss = loss_fn(logits, labels)
        return (scaler.scale(loss) if scaler is not None else loss), loss

    grad_fn = ms.value_and_grad(forward, None, weights, has_aux=True)

    def update(grads):
        return optimizer(ops.clip_by_global_norm(grads, clip) if clip > 0 else grads)

    if scaler is None:
        def fused(images, labels):
            (_, loss), grads = grad_fn(images, labels)
            if reducer is not None:
                grads = reducer(grads)
            return ops.depend(loss, update(grads))

        fused_step = ms.jit(fused) if jit else fused
        return lambda images, labels: (fused_step(images, labels), True)

    def scaled_grads(images, labels):
        if clear_status:  # see _reads_status_register
            status = ops.depend(Tensor([0] * 8, ms.int32), images)
            images = ops.depend(images, NPUClearFloatStatusV2()(status))
        (_, loss), grads = grad_fn(images, labels)
        if reducer is not None:
            grads = reducer(grads)
        grads = scaler.unscale(grads)
        finite = amp.all_finite(grads)
        if clear_status and reducer is not None:
            # the register is per device: agree across ranks (no rank's "not finite" flag set)
            finite = ops.AllReduce()(ops.cast(ops.logical_not(finite), ms.float32)) < 0.5
        scaler.adjust(finite)
        return loss, finite, grads

    grads_step = ms.jit(scaled_grads) if jit else scaled_grads
    apply_step = ms.jit(update) if jit else update

    def step(images, labels):
        loss, finite, grads = grads_step(images, labels)
        finite = bool(finite.asnumpy())
        if finite:
            # mutable: a tuple of tensors passed as constants would recompile the graph each step
            apply_step(ms.mutable(grads))
        return loss, finite

    return step


def build_eval_step(network: nn.Cell, k: int, *, jit: bool = True):
    """``step(images) -> (B, k) int32`` indices of the k highest logits, best first."""

    def step(images):
        return ops.topk(ops.cast(network(images), ms.float32), k)[1]

    return ms.jit(step) if jit else step

"""One optimizer step as (optionally ``ms.jit``-compiled) functions, and the stall guard.

``mindspore.value_and_grad`` over the trainable parameters; gradients are all-reduced (mean)
with ``nn.DistributedGradReducer`` whenever the auto-parallel context says data parallel (set
by ``ebv_ms.engine.distributed.init_distributed`` under mpirun/msrun); fp16 loss scaling with
``mindspore.amp`` loss scalers (a step whose gradients overflow is skipped, as MindSpore's own
``TrainOneStepWithLossScaleCell`` does); optional global-norm clipping. ``SkippedStepGuard``
stops a run whose steps all overflow even at the lowest loss scale.
"""
from __future__ import annotations

import os
from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore import amp
from mindspore.ops.operations.math_ops import NPUClearFloatStatusV2

from ebv_ms.errors import DivergenceError
from ebv_ms.config import AMP_LEVELS, LOSS_SCALES

__all__ = ["build_train_step", "build_eval_step", "create_loss_scaler", "resolve_amp_level",
           "grad_reducer_for", "SkippedStepGuard", "AMP_LEVELS", "LOSS_SCALES"]

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


def _reads_status_register() -> bool:
    """True where ``amp.all_finite`` reads the NPU float-status register instead of the values.

    On Ascend 910A (and 910B with ``MS_ASCEND_CHECK_OVERFLOW_MODE=SATURATION_MODE``) MindSpore
    2.10's ``all_finite`` returns "no overflow since the register was last cleared" and clears it
    after reading; anything between two steps (evaluation under amp, the optimizer update after
    the check) would count against the next step. So the step clears it before its forward, as
    ``nn.TrainOneStepWithLossScaleCell.start_overflow_check`` does. Elsewhere (CPU, GPU, 910B in
    its default INF/NAN mode) ``all_finite`` checks the gradient values themselves.
    """
    if ms.get_context("device_target") != "Ascend":
        return False
    from mindspore._c_expression import MSContext  # what mindspore.amp itself queries
    soc = MSContext.get_instance()
    if soc.ascend_soc_supports_feature("amp_loss_scale_train_classic_target"):  # 910A
        return True
    return (soc.ascend_soc_supports_feature("train_hq_dtype_line")  # 910B
            and os.environ.get("MS_ASCEND_CHECK_OVERFLOW_MODE") == "SATURATION_MODE")


def _all_ranks_finite(finite):
    """Finite on every rank (sum of the per-rank "not finite" flags is 0)."""
    bad = ops.AllReduce()(ops.cast(ops.logical_not(finite), ms.float32))
    return bad < 0.5


class SkippedStepGuard:
    """Raise after ``max_steps`` consecutive skipped steps with the loss scale at its floor.

    A skipped step normally halves the dynamic scale and the next one succeeds. A run whose
    forward pass itself overflows fp16 never recovers: the scale falls to its floor (1 for
    ``DynamicLossScaler``, the fixed value for ``StaticLossScaler``) and every later step is
    skipped, so without this the run goes on for days doing nothing. ``max_steps`` 0 disables.
    """

    def __init__(self, max_steps: int, min_scale: float = 1.0):
        if int(max_steps) < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        self.max_steps = int(max_steps)
        self.min_scale = float(min_scale)
        self.count = 0

    @classmethod
    def for_scaler(cls, loss_scaler, max_steps: int) -> Optional["SkippedStepGuard"]:
        """The guard for a ``create_loss_scaler`` result (None: no scaler, nothing is skipped)."""
        if loss_scaler is None:
            return None
        floor = 1.0 if isinstance(loss_scaler, amp.DynamicLossScaler) else \
            float(loss_scaler.scale_value.asnumpy())
        return cls(max_steps, floor)

    def __call__(self, finite: bool, scale) -> None:
        """After each step: ``finite`` as returned by it, ``scale`` the loss scale now (float or
        a scalar Tensor such as ``scaler.scale_value``; only read when the step was skipped)."""
        if finite:
            self.count = 0
            return
        scale = float(scale.asnumpy()) if hasattr(scale, "asnumpy") else float(scale)
        self.count = self.count + 1 if scale <= self.min_scale else 0
        if self.max_steps and self.count >= self.max_steps:
            raise DivergenceError(
                f"training stalled: {self.count} consecutive steps had non-finite gradients with "
                f"the loss scale at its minimum ({self.min_scale:g}), so none of them updated the "
                "model (fp16 overflow in the forward pass, not in the scaled gradients). Lower "
                "optim.lr, set train.amp_level=O0, or raise train.max_skipped_steps to wait "
                "longer; the last checkpoint holds the last good epoch")


def build_train_step(network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer, *,
                     jit: bool = True, loss_scaler=None, clip_grad_norm: float = 0.0):
    """``step(images, labels) -> (loss, finite)``: forward, backward, all-reduce, update.

    ``loss`` stays on the device (reading it waits for the step: the loop reads a whole log
    interval at once); ``finite`` is a Python bool, False when the step was skipped.

    Without a loss scaler this is one compiled function and every step is applied. With one it
    is two: ``grads`` (forward, backward, all-reduce, unscale, finiteness, scale update) and
    ``apply`` (clip, optimizer), and Python calls ``apply`` only when the gradients are finite. A
    data-dependent ``if`` inside one compiled step makes MindSpore copy every parameter the
    forward reads before the branch (``TensorMove(Load(head.ebv))`` in the CPU IR): for the
    frozen 100k x 5000 matrix that is 2 GB of device memory and 4 GB of copying per step. The
    split costs one host read of ``finite`` per step (the only one a step makes).
    """
    weights = optimizer.parameters
    reducer = grad_reducer_for(weights)
    scaler = loss_scaler
    clip = float(clip_grad_norm or 0.0)
    clear_status = scaler is not None and _reads_status_register()

    def forward(images, labels):
        logits = ops.cast(network(images), ms.float32)
        loss = loss_fn(logits, labels)
        scaled = scaler.scale(loss) if scaler is not None else loss
        return scaled, loss

    grad_fn = ms.value_and_grad(forward, None, weights, has_aux=True)

    def update(grads):
        if clip > 0:
            grads = ops.clip_by_global_norm(grads, clip)
        return optimizer(grads)

    if scaler is None:
        def fused(images, labels):
            (_, loss), grads = grad_fn(images, labels)
            if reducer is not None:
                grads = reducer(grads)
            return ops.depend(loss, update(grads))

        fused_step = ms.jit(fused) if jit else fused

        def step(images, labels):
            return fused_step(images, labels), True

        return step

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
            # the register is per device: agree across ranks, or one rank skips and others step
            finite = _all_ranks_finite(finite)
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
        logits = ops.cast(network(images), ms.float32)
        return ops.topk(logits, k)[1]

    return ms.jit(step) if jit else step

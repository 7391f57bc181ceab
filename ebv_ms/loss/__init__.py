"""`create_loss`: cross-entropy over head logits (the temperature is in them: cos/tau), with
label smoothing and soft (mixup) targets; in fp32: at tau=0.007 logits reach +-143 and exp()
of those overflows fp16."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops


class EBVLoss(nn.Cell):
    """loss(logits (B, N), target): int labels (B,) or soft targets (B, N). With label smoothing
    eps the target distribution is (1 - eps) * t + eps / N for both."""

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.label_smoothing = float(label_smoothing)
        self.reduction = reduction

    def construct(self, logits, target):
        logp = ops.log_softmax(ops.cast(logits, ms.float32), -1)
        eps = self.label_smoothing
        if target.ndim == 1:
            idx = ops.cast(target, ms.int32).reshape(-1, 1)
            nll = -ops.gather_elements(logp, 1, idx).squeeze(1)
            loss = nll * (1.0 - eps) - ops.mean(logp, -1) * eps if eps > 0 else nll
        else:
            t = ops.cast(target, ms.float32)
            if eps > 0:
                t = t * (1.0 - eps) + eps / logp.shape[-1]
            loss = -ops.sum(t * logp, -1)
        if self.reduction == "none":
            return loss
        return ops.mean(loss) if self.reduction == "mean" else ops.sum(loss)


create_loss = EBVLoss  # the training loss of every head kind (EBV, FC, fixed random)

"""`create_scheduler`: the per-step learning-rate list (linear warm-up, then cosine).

The paper's recipe: lr rises linearly from ``lr x warmup_factor`` (0.01) over the first
``warmup_epochs`` (5) epochs, then follows a half cosine towards ``min_lr`` (reached one step after the last).
A plain list (one value per optimizer step) is what MindSpore optimizers index with their
``global_step``, which is saved in checkpoints, so a resumed run continues on the same curve.
"""
from __future__ import annotations

import math
from typing import List

__all__ = ["create_scheduler", "warmup_cosine_lr", "SCHEDULERS"]

from ..config import SCHEDULERS  # noqa: E402 - the one list, with the config keys


def warmup_cosine_lr(lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 5,
                     warmup_factor: float = 0.01, min_lr: float = 0.0) -> List[float]:
    """One lr per step for ``epochs x steps_per_epoch`` steps."""
    total = int(steps_per_epoch) * int(epochs)
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total)
    out = []
    for s in range(total):
        if s < warmup:
            out.append(lr * (warmup_factor + (1.0 - warmup_factor) * s / warmup))
        else:
            span = max(total - warmup, 1)
            t = (s - warmup) / span
            out.append(min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * t)))
    return out


def create_scheduler(steps_per_epoch: int, epochs: int, lr: float, name: str = "warmup_cosine",
                     warmup_epochs: float = 5, warmup_factor: float = 0.01,
                     min_lr: float = 0.0) -> List[float]:
    """Per-step lr list for ``create_optimizer(lr=...)``; ``name`` is warmup_cosine | constant."""
    if steps_per_epoch < 1:
        raise ValueError(f"create_scheduler: steps_per_epoch must be >= 1, got {steps_per_epoch} "
                         "(is the dataset smaller than one batch?)")
    if epochs < 1:
        raise ValueError(f"create_scheduler: epochs must be >= 1, got {epochs}")
    if not lr > 0:  # also refuses nan
        raise ValueError(f"create_scheduler: lr must be > 0, got {lr}")
    if not (warmup_epochs >= 0 and 0.0 <= warmup_factor <= 1.0):
        raise ValueError("create_scheduler: warmup_epochs >= 0 and warmup_factor in [0, 1] "
                         f"required, got {warmup_epochs}, {warmup_factor}")
    if name == "warmup_cosine":
        return warmup_cosine_lr(lr, steps_per_epoch, epochs, warmup_epochs, warmup_factor, min_lr)
    if name == "constant":
        return [float(lr)] * (steps_per_epoch * epochs)
    raise ValueError(f"create_scheduler: unknown scheduler {name!r}; choose one of "
                     f"{', '.join(SCHEDULERS)}")

"""`create_scheduler`: the paper's per-step learning rates: linear from ``lr x warmup_factor``
over ``warmup_epochs``, then a half cosine towards ``min_lr`` (reached one step after the last).
(mindcv's create_scheduler agrees for the configs, not for fractional or run-long warm-ups.)"""
from __future__ import annotations

import math
from typing import List

from ..config import SCHEDULERS


def create_scheduler(steps_per_epoch: int, epochs: int, lr: float, name: str = "warmup_cosine",
                     warmup_epochs: float = 5, warmup_factor: float = 0.01,
                     min_lr: float = 0.0) -> List[float]:
    """One lr per step for ``create_optimizer(lr=...)``; ``name`` is warmup_cosine | constant."""
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
    total = int(steps_per_epoch) * int(epochs)
    if name == "constant":
        return [float(lr)] * total
    if name != "warmup_cosine":
        raise ValueError(f"create_scheduler: unknown scheduler {name!r}; choose one of "
                         f"{', '.join(SCHEDULERS)}")
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total)
    span = max(total - warmup, 1)
    return [lr * (warmup_factor + (1.0 - warmup_factor) * s / warmup) if s < warmup
            else min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (s - warmup) / span))
            for s in range(total)]

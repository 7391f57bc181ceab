"""Top-k accuracy counting (on device: only the k best class indices leave it)."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def topk_correct(topk_idx: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """How many rows have their label among the first k of ``topk_idx`` (B, K sorted best-first)."""
    labels = np.asarray(labels).reshape(-1, 1)
    hit = np.asarray(topk_idx) == labels
    return {k: int(hit[:, :k].any(axis=1).sum()) for k in ks}


class AccuracyMeter:
    """Accumulates top-k hits over batches; ``result()`` gives percentages."""

    def __init__(self, ks: Sequence[int] = (1, 5)):
        self.ks = tuple(ks)
        self.correct = {k: 0 for k in self.ks}
        self.count = 0

    def update(self, topk_idx: np.ndarray, labels: np.ndarray) -> None:
        for k, c in topk_correct(topk_idx, labels, self.ks).items():
            self.correct[k] += c
        self.count += int(np.asarray(labels).shape[0])

    def result(self) -> Dict[str, float]:
        n = max(self.count, 1)
        out = {f"top{k}": 100.0 * self.correct[k] / n for k in self.ks}
        out.update({f"correct{k}": self.correct[k] for k in self.ks})
        out["num_samples"] = self.count
        return out

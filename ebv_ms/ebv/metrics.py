"""Coherence and angle statistics of an EBV set, blockwise in float64: never the N x N Gram
matrix (memory W plus two row blocks), so 100k x 5000 is measured exactly on a laptop."""
from __future__ import annotations

import math
from contextlib import closing
from dataclasses import dataclass
from typing import Optional

import numpy as np


def welch_bound(num_classes: int, dim: int) -> float:
    """Lowest coherence any N unit vectors in R^d can have: sqrt((N-d)/(d(N-1))), 0 if N <= d."""
    n, d = int(num_classes), int(dim)
    if n <= d or n < 2:
        return 0.0
    return math.sqrt((n - d) / (d * (n - 1)))


@dataclass
class PairStats:
    """Statistics over all pairs i < j of the rows (normalised)."""

    num_classes: int
    dim: int
    coherence: float            # max |cos|
    min_angle_deg: float        # paper's "Min. Ang.": arccos(coherence)
    mean_delta_angle_deg: float  # paper's "Ave. Del. Ang.": mean |arccos(c_ij) - 90|
    welch_bound: float
    num_pairs: int
    hist_counts: Optional[np.ndarray] = None  # angle histogram (degrees), if asked for
    hist_edges: Optional[np.ndarray] = None

    def report(self) -> str:
        return "\n".join([
            f"N (classes)          : {self.num_classes}",
            f"d (dimension)        : {self.dim}",
            f"coherence max|cos|   : {self.coherence:.5f}",
            f"min angle (deg)      : {self.min_angle_deg:.2f}",
            f"ave. del. ang. (deg) : {self.mean_delta_angle_deg:.3f}",
            f"Welch bound          : {self.welch_bound:.5f}",
        ])


def _pair_cosines(w: np.ndarray, block_size: int):
    """Float64 cosine blocks covering each pair i < j once; row block i is normalised once,
    column blocks j >= i on the fly."""
    def unit_rows64(block):
        b = np.asarray(block, dtype=np.float64)
        return b / np.linalg.norm(b, axis=1, keepdims=True)

    n, block_size = w.shape[0], max(1, int(block_size))
    for i0 in range(0, n, block_size):
        a = unit_rows64(w[i0:i0 + block_size])
        for j0 in range(i0, n, block_size):
            c = a @ (a if j0 == i0 else unit_rows64(w[j0:j0 + block_size])).T
            yield (c[np.triu_indices(c.shape[0], k=1)] if j0 == i0 else c).ravel()


def coherence(w: np.ndarray, block_size: int = 2048) -> float:
    """max_{i<j} |cos(w_i, w_j)| in float64 (0.0 for a single vector)."""
    w = np.asarray(w)
    return max([0.0] + [float(np.abs(c).max()) for c in _pair_cosines(w, block_size) if c.size])


def pairwise_stats(w: np.ndarray, block_size: int = 2048, bins: Optional[int] = None,
                   progress: bool = False) -> PairStats:
    """Coherence, the paper's Min. Ang. and Ave. Del. Ang. (|arccos c - 90 deg| = arcsin |c|: one
    arcsin per pair), Welch bound, and with ``bins`` an angle histogram over [0, 180] degrees."""
    from ebv_ms.progress import progress_bar
    w = np.asarray(w)
    n, d = w.shape
    best, delta_sum, count = 0.0, 0.0, 0
    edges = np.linspace(0.0, 180.0, bins + 1) if bins else None
    counts = np.zeros(bins, dtype=np.int64) if bins else None
    k = -(-n // max(1, int(block_size)))  # row blocks
    with closing(progress_bar(total=k * (k + 1) // 2, desc="pair stats", unit="block",
                              disable=not progress, dynamic_ncols=True)) as bar:
        for c in _pair_cosines(w, block_size):
            if c.size:
                np.clip(c, -1.0, 1.0, out=c)
                if bins:
                    counts += np.histogram(np.degrees(np.arccos(c)), bins=edges)[0]
                np.abs(c, out=c)
                best = max(best, float(c.max()))
                delta_sum += float(np.arcsin(c, out=c).sum())
                count += c.size
                bar.set_postfix(coherence=f"{best:.5f}", refresh=False)
            bar.update(1)
    min_angle = math.degrees(math.acos(min(best, 1.0)))
    mean_delta = math.degrees(delta_sum / count) if count else 0.0
    return PairStats(n, d, best, min_angle, mean_delta, welch_bound(n, d), count, counts, edges)

"""Coherence and angle statistics of an EBV set, blockwise in float64: never the N x N Gram
matrix (memory W plus two row blocks), so 100k x 5000 is measured exactly on a laptop."""
from __future__ import annotations

import math
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


def _iter_pair_blocks(w: np.ndarray, block_size: int, progress: bool, desc: str):
    """Yield (float64 cosine block, progress bar or None) covering each pair i < j once; row
    block i is normalised once, column blocks j >= i on the fly."""
    def unit_rows64(block):
        b = np.asarray(block, dtype=np.float64)
        return b / np.linalg.norm(b, axis=1, keepdims=True)

    n = w.shape[0]
    block_size = max(1, int(block_size))
    starts = list(range(0, n, block_size))
    bar = None
    if progress:
        from ebv_ms.progress import progress_bar
        bar = progress_bar(total=len(starts) * (len(starts) + 1) // 2, desc=desc, unit="block",
                   dynamic_ncols=True)
    try:
        for bi, i0 in enumerate(starts):
            a = unit_rows64(w[i0:i0 + block_size])
            for j0 in starts[bi:]:
                b = a if j0 == i0 else unit_rows64(w[j0:j0 + block_size])
                c = a @ b.T
                if j0 == i0:
                    c = c[np.triu_indices(c.shape[0], k=1)]
                yield c.ravel(), bar
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def coherence(w: np.ndarray, block_size: int = 2048, progress: bool = False) -> float:
    """max_{i<j} |cos(w_i, w_j)| in float64 (0.0 for a single vector)."""
    w = np.asarray(w)
    if w.shape[0] < 2:
        return 0.0
    best = 0.0
    for c, bar in _iter_pair_blocks(w, block_size, progress, "coherence"):
        if c.size:
            best = max(best, float(np.abs(c).max()))
            if bar is not None:
                bar.set_postfix(coherence=f"{best:.5f}", refresh=False)
    return best


def pairwise_stats(w: np.ndarray, block_size: int = 2048, bins: Optional[int] = None,
                   progress: bool = False) -> PairStats:
    """Coherence, paper's Min. Ang. and Ave. Del. Ang., Welch bound (and an angle histogram).

    |arccos(c) - 90 deg| = arcsin(|c|), so the Ave. Del. Ang. needs one arcsin per pair; the
    arccos for the histogram (``bins`` equal bins over [0, 180] degrees) is only taken if asked.
    """
    w = np.asarray(w)
    n, d = w.shape
    best, delta_sum, count = 0.0, 0.0, 0
    edges = np.linspace(0.0, 180.0, bins + 1) if bins else None
    counts = np.zeros(bins, dtype=np.int64) if bins else None
    for c, bar in _iter_pair_blocks(w, block_size, progress, "pair stats"):
        if not c.size:
            continue
        np.clip(c, -1.0, 1.0, out=c)
        if bins:
            counts += np.histogram(np.degrees(np.arccos(c)), bins=edges)[0]
        np.abs(c, out=c)
        best = max(best, float(c.max()))
        delta_sum += float(np.arcsin(c, out=c).sum())
        count += c.size
        if bar is not None:
            bar.set_postfix(coherence=f"{best:.5f}", refresh=False)
    min_angle = math.degrees(math.acos(min(best, 1.0)))
    mean_delta = math.degrees(delta_sum / count) if count else 0.0
    return PairStats(n, d, best, min_angle, mean_delta, welch_bound(n, d), count, counts, edges)

"""The EBV set itself: the container, metrics (coherence, angles) and file formats."""
from .ebvset import EBVSet, EBVError
from .metrics import PairStats, coherence, pairwise_stats, welch_bound

__all__ = ["EBVSet", "EBVError", "PairStats", "coherence", "pairwise_stats", "welch_bound"]

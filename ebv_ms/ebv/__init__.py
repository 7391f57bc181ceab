"""The EBV set itself: the container, metrics (coherence, angles) and file formats."""
from .ebvset import EBVSet, EBVError
from .metrics import PairStats, coherence, pairwise_stats, welch_bound
from .formats import SUPPORTED_EXTENSIONS, load_ebv, save_ebv
from .safe_pickle import UnsafePickleError

__all__ = ["EBVSet", "EBVError", "PairStats", "coherence", "pairwise_stats", "welch_bound",
           "load_ebv", "save_ebv", "SUPPORTED_EXTENSIONS", "UnsafePickleError"]

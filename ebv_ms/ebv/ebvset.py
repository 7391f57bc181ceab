"""`EBVSet`: an N x d matrix of unit class vectors plus how it was made."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import EBVMSError


class EBVError(EBVMSError, ValueError):
    """A matrix or file that is not a usable EBV set (wrong rank, NaN, zero rows, ...)."""


@dataclass
class EBVSet:
    """N unit vectors in R^d (float32 rows), the coherence target ``alpha``, ``method`` and ``seed``.
    ``vectors`` is read-only and cannot be replaced: the checksum (1-2 s at 100k x 5000) is
    cached, and the frozen head may share the buffer."""

    vectors: np.ndarray
    alpha: Optional[float] = None
    method: str = "unknown"
    seed: Optional[int] = None
    extra: dict = field(default_factory=dict)
    _checksum: Optional[str] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        vectors = validate_matrix(self.vectors)
        vectors.flags.writeable = False
        object.__setattr__(self, "vectors", vectors)

    def __setattr__(self, name, value):
        if name == "vectors" and "vectors" in self.__dict__:
            raise AttributeError("EBVSet.vectors cannot be replaced (a set does not change after "
                                 "it is made); make a new EBVSet")
        object.__setattr__(self, name, value)

    @property
    def num_classes(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def checksum(self) -> str:
        """The set's identity in checkpoints: ``matrix_checksum`` of its vectors (cached)."""
        if self._checksum is None:
            self._checksum = matrix_checksum(self.vectors)
        return self._checksum

    def __repr__(self) -> str:
        return (f"EBVSet(N={self.num_classes}, d={self.dim}, alpha={self.alpha}, "
                f"method={self.method!r}, seed={self.seed}, checksum={self.checksum()})")


def matrix_checksum(mat) -> str:
    """sha256 (hex, 16 chars) of shape + float32 bytes of an N x d matrix."""
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    h = hashlib.sha256(f"{mat.shape[0]}x{mat.shape[1]}:".encode())
    h.update(memoryview(mat).cast("B"))   # the buffer itself: tobytes() would copy W (2 GB at 100k x 5000)
    return h.hexdigest()[:16]


def validate_matrix(w) -> np.ndarray:
    """Check ``w`` is a finite real N x d matrix with non-zero rows; return float32 unit rows."""
    try:
        arr = np.asarray(w)
    except Exception as exc:  # noqa: BLE001 - anything that is not array-like
        raise EBVError(f"not an array of numbers: {type(w).__name__} ({exc})") from exc
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise EBVError(f"EBV matrix must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise EBVError(f"EBV matrix must be 2-D (num_classes x dim), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise EBVError(f"EBV matrix is empty: shape {arr.shape}")
    src = arr
    arr = arr.astype(np.float32, copy=False)
    # Row blocks of ~4M elements: temporaries stay a few MB even for 100k x 5000.
    step = max(1, (1 << 22) // arr.shape[1])
    norms = np.empty(arr.shape[0], dtype=np.float64)
    for i in range(0, arr.shape[0], step):
        blk = arr[i:i + step]
        # float64 sums without a float64 copy of the block (einsum casts in small buffers)
        norms[i:i + step] = np.sqrt(np.einsum("ij,ij->i", blk, blk, dtype=np.float64))
    # exact: float32 squares (< 1.2e77) summed in float64 cannot overflow; NaN, inf carry through
    bad = ~np.isfinite(norms)
    if bad.any():
        raise EBVError(f"EBV matrix has NaN/inf in {int(bad.sum())} row(s), first row {int(np.argmax(bad))}")
    zero = norms < 1e-12
    if zero.any():
        raise EBVError(f"EBV matrix has {int(zero.sum())} zero row(s), first row {int(np.argmax(zero))}")
    if np.abs(norms - 1.0).max() > 1e-6:
        # normalise in place when arr is already our own copy, never the caller's array
        own = arr is not src and arr.flags.c_contiguous and not np.may_share_memory(arr, src)
        out = arr if own else np.empty(arr.shape, dtype=np.float32)
        for i in range(0, arr.shape[0], step):
            out[i:i + step] = arr[i:i + step] / norms[i:i + step, None]
        arr = out
    return np.ascontiguousarray(arr)


def degeneracy(vectors: np.ndarray) -> str:
    """'' for a usable set, else why it cannot separate its classes (identical rows, d = 1).
    Rows hashed on their first 64 columns, matches confirmed: ~1 % of a 100k x 5000 load."""
    n, d = vectors.shape
    if d == 1 and n > 1:
        return (f"dimension d=1: every vector is +1 or -1, so at most 2 of the {n} classes can be "
                "told apart")
    cols = min(d, 64)
    weights = np.random.default_rng(0).integers(1, 1 << 61, 64, dtype=np.uint64)[:cols] | 1
    keys = np.empty(n, dtype=np.uint64)
    for i in range(0, n, 8192):  # row blocks: no N x 64 uint64 temporaries (100 MB at 100k)
        bits = np.ascontiguousarray(vectors[i:i + 8192, :cols]).view(np.uint32).astype(np.uint64)
        keys[i:i + 8192] = (bits * weights).sum(axis=1)  # wraps mod 2^64: a hash, not a number
    order = np.argsort(keys, kind="stable")
    same = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    pairs = [(int(order[k]), int(order[k + 1])) for k in same
             if np.array_equal(vectors[order[k]], vectors[order[k + 1]])]
    if pairs:
        i, j = min(tuple(sorted(p)) for p in pairs)
        return (f"{len(pairs)} row(s) duplicate another (e.g. rows {i} and {j} are identical): "
                "those classes get the same logits and cannot be told apart")
    return ""

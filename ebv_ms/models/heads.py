"""Heads: embedding (B, d) -> logits (B, N): the frozen EBV head, fixed random class vectors, a
learned FC. A fixed head's N x d matrix is one frozen Parameter, used by ``MatMul(transpose_b=True)``
(no transposed copy per step) and never cast under amp (a 100k x 5000 matrix would be copied
every step); ``engine.checkpoint`` stores it beside the weights."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from .. import config
from ..ebv.ebvset import matrix_checksum


def random_unit_vectors(num_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    """N x d Gaussian vectors with unit rows (the fixed-random baseline's class vectors)."""
    w = np.random.default_rng(seed).standard_normal((num_classes, dim), dtype=np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    return w


class _Fp32Cell(nn.Cell):
    """A cell amp cannot cast (O2/O3/auto mark every sub-cell fp16; O1 skips marked cells): marked
    fp32 if ``keep_fp32`` (not ``fp32``: ``add_flags`` sets an attribute per flag), else unmarked."""

    keep_fp32 = True

    def add_flags_recursive(self, **flags):
        if any(key in flags for key in ("fp16", "bf16", "fp32")):
            flags.update(fp16=False, bf16=False, fp32=self.keep_fp32)
        return super().add_flags_recursive(**flags)


class ScaledL2Normalize(_Fp32Cell):
    """y = scale * v / ||v|| row-wise in fp32 (zero rows: zero). The backward by hand takes 5 kernels,
    autodiff's ~10: on CPU these, not the matmul, dominate the head's cost at N = d = 1000."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = float(scale)
        self.to_float(ms.float32)

    def construct(self, v):
        return v * (ops.rsqrt(ops.sum(v * v, -1, keepdim=True) + 1e-24) * self.scale)

    def bprop(self, v, out, dout):
        r = ops.rsqrt(ops.sum(v * v, -1, keepdim=True) + 1e-24)
        u = v * r
        return ((dout - u * ops.sum(dout * u, -1, keepdim=True)) * (r * self.scale),)


def _shared_parameter(data: np.ndarray, name: str) -> Parameter:
    """A frozen Parameter over ``data``'s own buffer: ``Parameter(Tensor.from_numpy(data))``
    copies (+381 MB at 20,000 x 5,000 fp32), a lazily initialised one given it by set_data not."""
    tensor = Tensor.from_numpy(data)
    p = Parameter(initializer("zeros", tensor.shape, tensor.dtype), name=name, requires_grad=False)
    return p.set_data(tensor)


class FrozenVectorHead(_Fp32Cell):
    """Logits S * cos(v, w_k) if ``cosine``, else S * <v, w_k>, over the fixed rows w_k of
    ``self.<param_name>``. ``storage_dtype`` float16 halves the matrix, but the logits leave the
    matmul rounded to fp16 and CPU training casts the matrix to fp32 in the backend (+354 MB vs
    +54 MB at 20,000 x 2,000, docs/models.md); such a head has no amp flag, it casts itself."""

    param_name = "vectors"

    def __init__(self, vectors: np.ndarray, storage_dtype: str = "float32", scale: float = 1.0,
                 cosine: bool = True):
        super().__init__()
        if storage_dtype not in config.STORAGE_DTYPES:
            raise ValueError(f"ebv_dtype must be one of {sorted(config.STORAGE_DTYPES)}, "
                             f"got {storage_dtype!r}")
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"class-vector matrix must be 2-D (N x d), got shape {vectors.shape}")
        self.num_classes, self.dim = int(vectors.shape[0]), int(vectors.shape[1])
        self.storage_dtype = storage_dtype
        self.keep_fp32 = storage_dtype == "float32"
        data = np.ascontiguousarray(vectors, dtype=np.dtype(storage_dtype))
        setattr(self, self.param_name, _shared_parameter(data, self.param_name))
        self.matmul_nt = ops.MatMul(transpose_b=True)
        self.scale, self.cosine = float(scale), bool(cosine)
        self.normalize = ScaledL2Normalize(self.scale)
        if self.keep_fp32:
            self.to_float(ms.float32)

    @property
    def matrix(self) -> Parameter:
        return getattr(self, self.param_name)

    def construct(self, v):
        v, w = ops.cast(v, ms.float32), self.matrix
        # (v / ||v|| * S) @ W^T == S cos(v, w_k): the rows of W are unit vectors
        v = self.normalize(v) if self.cosine else v
        if not self.keep_fp32:  # fp16 storage: W itself is never cast or copied
            out = ops.cast(self.matmul_nt(ops.cast(v, w.dtype), w), ms.float32)
        else:
            out = self.matmul_nt(v, w)
        return out if self.cosine else out * self.scale

    def predict(self, v):
        return ops.cast(ops.argmax(self(v), dim=-1), ms.int32)


class EBVHead(FrozenVectorHead):
    """logits_k = cos(v, w_k) / tau over the fixed unit EBVs w_k (rows of ``ebv``), in fp32: at
    tau=0.007 the logits reach +-143 and fp16 keeps ~3 significant digits."""

    param_name = "ebv"

    def __init__(self, ebv, tau: float = 0.07, storage_dtype: str = "float32"):
        vectors = ebv.vectors if hasattr(ebv, "vectors") else np.asarray(ebv, dtype=np.float32)
        if not tau or tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        super().__init__(vectors, storage_dtype, 1.0 / float(tau))
        # an EBVSet's checksum is cached: hashing 2 GB again here would cost 1-2 s
        self.checksum = ebv.checksum() if hasattr(ebv, "checksum") else matrix_checksum(vectors)
        self.tau = float(tau)
        if not self.keep_fp32 and self.tau < 0.05:
            logging.getLogger(__name__).warning(
                "model.ebv_dtype=%s at tau %g: the logits (up to %.0f) come out of the matmul "
                "rounded to fp16, off by up to %.3f (measured 0.031 at tau 0.007, docs/models.md); "
                "use float32 unless the matrix does not fit", storage_dtype, self.tau,
                1.0 / self.tau, 2.0 ** -11 / self.tau)

    def extend_repr(self):
        return f"N={self.num_classes}, d={self.dim}, tau={self.tau}, storage={self.storage_dtype}"


class FixedRandomHead(FrozenVectorHead):
    """Fixed random unit class vectors (Yang et al., WACV 2022), logits S * <v, w_k> or S * cos."""

    param_name = "class_vectors"

    def __init__(self, num_classes: int, dim: int, mode: str = "cos", scale: float = 1.0,
                 seed: int = 0, storage_dtype: str = "float32"):
        if mode not in ("dot", "cos"):
            raise ValueError(f"fixed random head mode must be 'dot' or 'cos', got {mode!r}")
        super().__init__(random_unit_vectors(num_classes, dim, seed), storage_dtype, scale,
                         cosine=mode == "cos")
        self.mode = mode

    def extend_repr(self):
        return f"N={self.num_classes}, d={self.dim}, mode={self.mode}, scale={self.scale}"


class FCHead(nn.Cell):
    """Learned k-way linear classifier (the usual softmax baseline)."""

    def __init__(self, in_features: int, num_classes: int, dense: Optional[nn.Dense] = None):
        super().__init__()
        self.fc = dense if dense is not None else nn.Dense(in_features, num_classes)

    def construct(self, x):
        return self.fc(x)

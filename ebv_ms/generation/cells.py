"""MindSpore Cells for the iterative generators: the matrix is a Parameter, losses are Cells.

Both losses take a row slice S against all N rows (an |S| x N cosine block), so memory is W plus
one block, never N x N (docs/generation.md, "Memory"). Rows are normalised with plain ops:
``ops.L2Normalize``'s gradient is orders of magnitude slower on CPU.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


def assign_unit_rows(weight):
    """Normalise ``weight``'s rows in place, inside a compiled function: ``set_data`` from Python
    would detach the Parameter from the buffers a compiled optimiser updates."""
    w = weight.value()
    ops.assign(weight, w / ops.norm(w, dim=1, keepdim=True).clamp(min=1e-12))


@ms.jit
def _normalize_rows(weight):
    assign_unit_rows(weight)
    return True


def minus_self_pairs(c, rows):
    """``c`` (|S| x N block of W_S W^T) with 1 subtracted at its self-pairs (i, rows[i]).

    An index scatter of |S| values, not an |S| x N mask (N x N floats over all slices); on CPU
    it is also 6-17% faster than subtracting a stored mask (N = 1000 and 10,000).
    """
    pairs = ops.stack([ops.arange(rows.shape[0], dtype=ms.int32), rows], 1)
    return ops.tensor_scatter_sub(c, pairs, ops.ones(rows.shape, c.dtype))


class EBVParams(nn.Cell):
    """Holds the N x d matrix being optimised as a single Parameter."""

    def __init__(self, init: np.ndarray):
        super().__init__()
        self.weight = Parameter(Tensor(np.ascontiguousarray(init, dtype=np.float32)), name="ebv")

    def normalize_(self) -> None:
        _normalize_rows(self.weight)


class OfficialSliceLoss(nn.Cell):
    """Algorithm 1's loss for one row slice: (sum relu(|W_S W^T| - I_S - alpha), its max), on W
    as stored (normalised at the start of the step), exactly as the authors' code does."""

    def __init__(self, params: EBVParams, alpha: float):
        super().__init__()
        self.params = params
        self.alpha = float(alpha)
        self.mm = ops.MatMul(transpose_b=True)

    def construct(self, rows):
        w = self.params.weight
        m = minus_self_pairs(ops.abs(self.mm(ops.gather(w, rows, 0), w)), rows)
        # row-wise reductions first: MindSpore's CPU full reductions are several x slower
        loss = ops.relu(m - self.alpha).sum(axis=1).sum()
        return loss, m.max(axis=1).max()


class SmoothMaxGrad(nn.Cell):
    """Smooth maximum of cos^2 over a row slice's pairs and its gradient, written out.

    With c = W_S W^T (self-pairs zeroed), m = max |c|: loss = log(sum exp(b (c^2 - m^2))) / b +
    m^2, b = beta / (2 m), so ``beta`` is the sharpness on |cos| (c^2 - m^2 ~= 2 m (|c| - m)):
    the worst pairs are pushed without ignoring the nearly-worst (a hinge moves one pair at a
    time and stalls). dloss/dW = 2 (P.c)^T W_S (+ 2 (P.c) W on the slice's rows), P the softmax
    weights, projected onto the sphere's tangent space: with Adam 2.3-3.0x faster per step than
    autodiff on |c| (N=1000, d=100..500, ``benchmarks/generation_step.py``).
    Returns (max |cos| of the slice, gradient with W's shape).
    """

    def __init__(self, params: EBVParams, whole: bool):
        super().__init__()
        self.params = params
        self.whole = bool(whole)          # the slice is every row, in order: c is symmetric
        self.mm = ops.MatMul()
        self.mm_t = ops.MatMul(transpose_b=True)
        self.mm_ta = ops.MatMul(transpose_a=True)

    def construct(self, rows, beta):
        v = self.params.weight
        vs = v if self.whole else ops.gather(v, rows, 0)
        c = minus_self_pairs(self.mm_t(vs, v), rows)       # self-pairs: 1 - 1 ~= 0
        sq = c * c
        m2 = sq.max(axis=1).max()                           # row-wise first: much faster on CPU
        m = ops.sqrt(m2)
        b = beta / (2.0 * m.clamp(min=1e-6))
        e = ops.exp((sq - m2) * b)
        pc = e * c
        scale = 2.0 / e.sum(axis=1).sum()
        if self.whole:
            grad = self.mm(pc, v) * (2.0 * scale)
        else:
            grad = ops.tensor_scatter_add(self.mm_ta(pc, vs), rows.reshape(-1, 1),
                                          self.mm(pc, v)) * scale
        grad = grad - (grad * v).sum(axis=1, keepdims=True) * v
        return m, grad

"""MindSpore Cells for the iterative generators: the matrix is a Parameter, losses are Cells.

Both losses look at a *row slice* S of the set against all N rows (an |S| x N cosine block),
so memory is W plus one block, never N x N. The slice's self-pairs (i, rows[i]) are removed by
index inside the step (``minus_self_pairs``): an |S| x N one-hot mask per slice, kept for the
run, would be N x N floats over all slices (37 GiB at N = 100,000). Rows are L2-normalised with plain ops
(``w / ||w||``): ``ops.L2Normalize``'s gradient is orders of magnitude slower on CPU.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops


@ms.jit
def _normalize_rows(weight):
    w = weight.value()
    ops.assign(weight, w / ops.norm(w, dim=1, keepdim=True).clamp(min=1e-12))
    return True


def minus_self_pairs(c, rows):
    """``c`` (|S| x N block of W_S W^T) with 1 subtracted at (i, rows[i]), its self-pairs.

    An index scatter of |S| values, not an |S| x N mask: measured on CPU (N = 1000, d = 100 ..
    500, and N = 10,000, |S| = 700) it is also 6-17% faster than subtracting a stored mask.
    """
    pairs = ops.stack([ops.arange(rows.shape[0], dtype=ms.int32), rows], 1)
    return ops.tensor_scatter_sub(c, pairs, ops.ones(rows.shape, c.dtype))


class EBVParams(nn.Cell):
    """Holds the N x d matrix being optimised as a single Parameter."""

    def __init__(self, init: np.ndarray):
        super().__init__()
        self.weight = Parameter(Tensor(np.ascontiguousarray(init, dtype=np.float32)), name="ebv")

    def normalize_(self) -> None:
        """Re-normalise the rows in place (Algorithm 1 does this at every step).

        Written with ``ops.assign`` inside a compiled function: ``Parameter.set_data`` would
        detach the Parameter from the buffers the (compiled) optimiser updates.
        """
        _normalize_rows(self.weight)

    def numpy(self) -> np.ndarray:
        return self.weight.asnumpy()


class OfficialSliceLoss(nn.Cell):
    """Algorithm 1's loss for one row slice: sum relu(|W_S W^T| - I_S - alpha).

    Returns (loss, max_j(|W_S W^T| - I_S)); W is used as stored (the caller normalised it
    at the start of the step), exactly as the authors' code does.
    """

    def __init__(self, params: EBVParams, alpha: float):
        super().__init__()
        self.params = params
        self.alpha = float(alpha)
        self.mm = ops.MatMul(transpose_b=True)

    def construct(self, rows):
        w = self.params.weight
        # |c| - 1 on the self-pairs, as the authors' |W_S W^T| - onehot
        m = minus_self_pairs(ops.abs(self.mm(ops.gather(w, rows, 0), w)), rows)
        # row-wise reductions first: MindSpore's CPU full reductions are several x slower
        loss = ops.relu(m - self.alpha).sum(axis=1).sum()
        return loss, m.max(axis=1).max()


class SmoothMaxGrad(nn.Cell):
    """Smooth maximum of cos^2 over the pairs of a row slice, and its gradient, written out.

    For the slice S against all N rows, with c = W_S W^T (self-pairs zeroed) and m = max |c|:

        loss = log(sum_ij exp(b (c_ij^2 - m^2))) / b + m^2,    b = beta / (2 m)

    Near the maximum c^2 - m^2 ~= 2 m (|c| - m), so ``beta`` is the sharpness on |cos| itself
    (a log-sum-exp that tends to the coherence as beta grows): the gradient pushes on the worst
    pairs without ignoring the nearly-worst ones (a hinge at the current max moves one pair at
    a time and stalls). Squaring instead of |c| needs no sign() pass over the N x N block.

    The gradient is written out instead of taken by autodiff: dloss/dc_ij = 2 p_ij c_ij with
    p the softmax weights, so dloss/dW = 2 (P.c)^T W_S (+ 2 (P.c) W on the slice's rows): two
    |S| x N x d products per step (one when S is every row, as the block is then symmetric)
    against autodiff's three, and a few passes over the block instead of a dozen. It is then
    projected onto the sphere's tangent space (rows are kept unit-norm). A whole step
    (with Adam) at N=1000 on a 2-core CPU: 2.3-3.0x faster than autodiff on |c| for d=100..500
    (``benchmarks/generation_step.py``).
    Returns (max |cos| of the slice, gradient with W's shape).
    """

    def __init__(self, params: EBVParams, whole: bool):
        super().__init__()
        self.params = params
        self.whole = bool(whole)          # the slice is every row, in order
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

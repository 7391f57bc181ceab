"""MindSpore Cells for the iterative generators: the matrix is a Parameter, losses are Cells.

Both losses look at a *row slice* S of the set against all N rows (an |S| x N cosine block),
so memory is W plus one block, never N x N. Rows are L2-normalised with plain ops
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
    """Algorithm 1's loss for one row slice: sum relu(|W_S W^T| - onehot - alpha).

    Returns (loss, max_j(|W_S W^T| - onehot)); W is used as stored (the caller normalised it
    at the start of the step), exactly as the authors' code does.
    """

    def __init__(self, params: EBVParams, alpha: float):
        super().__init__()
        self.params = params
        self.alpha = float(alpha)
        self.mm = ops.MatMul(transpose_b=True)

    def construct(self, rows, onehot):
        w = self.params.weight
        m = ops.abs(self.mm(ops.gather(w, rows, 0), w)) - onehot
        loss = ops.relu(m - self.alpha).sum()
        return loss, m.max()


class SmoothMaxLoss(nn.Cell):
    """Smooth maximum of |cos| over the pairs of a row slice (the default method's objective).

    loss = m + log(sum_ij exp(beta (|c_ij| - m))) / beta over i in S, j != i, with
    m = max |c_ij| (held constant): a log-sum-exp that tends to the coherence itself as beta
    grows, so its gradient pushes on the worst pairs without ignoring the nearly-worst ones
    (a hinge at the current max moves one pair at a time and stalls). Rows are normalised
    inside, so the gradient is already tangent to the sphere.
    Returns (loss, exact max |cos| of the slice).
    """

    def __init__(self, params: EBVParams):
        super().__init__()
        self.params = params
        self.mm = ops.MatMul(transpose_b=True)

    def construct(self, rows, onehot, beta):
        w = self.params.weight
        v = w / ops.norm(w, dim=1, keepdim=True)
        c = ops.abs(self.mm(ops.gather(v, rows, 0), v)) - 2.0 * onehot   # self-pairs -> -1
        mx = ops.stop_gradient(c.max())
        lse = ops.log(ops.exp(beta * (c - mx)).sum()) / beta + mx
        return lse, mx

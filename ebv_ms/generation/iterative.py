"""The two iterative generators, MindSpore Cells on row slices: ``official`` (Algorithm 1 as
released: SGD on ``relu(|cos| - alpha)``, stop at max |cos| <= alpha + 1e-4) and ``smoothmax``
(the default: Adam on a smooth max of |cos|, so it keeps improving below any fixed alpha). A step
takes a row slice S against all N rows: memory is W plus one |S| x N block, never N x N. Rows are
normalised with plain ops: ``ops.L2Normalize``'s gradient is orders of magnitude slower on CPU."""
from __future__ import annotations

import math
import time
from typing import Callable, List, NamedTuple, Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

OFFICIAL_TOL = 1e-4   # Algorithm 1 stops when max|cos| <= alpha + 1e-4
OFFICIAL_SLICE = 130  # the authors' slice size (any size gives the same summed gradient)


def assign_unit_rows(weight):
    """Normalise ``weight``'s rows in place, inside a compiled function: ``set_data`` from Python
    would detach the Parameter from the buffers a compiled optimiser updates."""
    w = weight.value()
    ops.assign(weight, w / ops.norm(w, dim=1, keepdim=True).clamp(min=1e-12))


def minus_self_pairs(c, rows):
    """``c`` (the block W_S W^T) minus 1 at its self-pairs (i, rows[i]): a scatter of |S| values,
    not a mask (N x N floats over all slices); on CPU also 6-17% faster (N = 1000 and 10,000)."""
    pairs = ops.stack([ops.arange(rows.shape[0], dtype=ms.int32), rows], 1)
    return ops.tensor_scatter_sub(c, pairs, ops.ones(rows.shape, c.dtype))


class OfficialSliceLoss(nn.Cell):
    """Algorithm 1's loss for one row slice: (sum relu(|W_S W^T| - I_S - alpha), its max), on W
    as stored (normalised at the start of the step), exactly as the authors' code does."""

    def __init__(self, weight: Parameter, alpha: float):
        super().__init__()
        self.weight = weight
        self.alpha = float(alpha)
        self.mm = ops.MatMul(transpose_b=True)

    def construct(self, rows):
        w = self.weight
        m = minus_self_pairs(ops.abs(self.mm(ops.gather(w, rows, 0), w)), rows)
        # row-wise reductions first: MindSpore's CPU full reductions are several x slower
        return ops.relu(m - self.alpha).sum(axis=1).sum(), m.max(axis=1).max()


class SmoothMaxGrad(nn.Cell):
    """(max |cos| of a row slice, the gradient of a smooth max of cos^2 over its pairs, written
    out). With c = W_S W^T (self-pairs zeroed), m = max |c|: loss = log(sum exp(b (c^2 - m^2))) / b
    + m^2, b = beta / (2 m), so ``beta`` is the sharpness on |cos| (c^2 - m^2 ~= 2 m (|c| - m)):
    the worst pairs are pushed without ignoring the nearly-worst (a hinge moves one pair at a time
    and stalls). dloss/dW = 2 (P.c)^T W_S (+ 2 (P.c) W on the slice's rows), P the softmax weights,
    projected onto the sphere's tangent space: with Adam 2.3-3.0x faster per step than autodiff on
    |c| (N=1000, d=100..500, ``benchmarks/generation_step.py``)."""

    def __init__(self, weight: Parameter, whole: bool):
        super().__init__()
        self.weight = weight
        self.whole = bool(whole)          # the slice is every row, in order: c is symmetric
        self.mm = ops.MatMul()
        self.mm_t = ops.MatMul(transpose_b=True)
        self.mm_ta = ops.MatMul(transpose_a=True)

    def construct(self, rows, beta):
        v = self.weight
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
        return m, grad - (grad * v).sum(axis=1, keepdims=True) * v


class RunResult(NamedTuple):
    vectors: np.ndarray          # best set seen (rows normalised, float32)
    coherence: float             # its max |cos| as measured during the run (float32 blocks)
    steps: int                   # optimisation steps taken
    reached: bool                # stopped because the target was met
    seconds: float
    history: List[tuple]         # (seconds, step, coherence)


def block_rows(num_classes: int, dim: int, budget_mb: float = 256.0) -> int:
    """Rows per slice for a step within ``budget_mb`` above W: a step keeps ~8 |S| x N float32
    blocks alive (6.9 and 8.2 at N = 30,000, ``benchmarks/generation_memory.py``); N <= 2896: one."""
    per_row = 4.0 * (8 * num_classes + dim)
    return int(max(1, min(num_classes, budget_mb * 2 ** 20 // per_row)))


def _slices(n: int, size: int) -> List[Tensor]:
    return [Tensor(np.arange(s, min(n, s + size), dtype=np.int32)) for s in range(0, n, size)]


def run_official(init: np.ndarray, alpha: float, max_steps: int, lr: float = 1e-3,
                 slice_size: Optional[int] = None, time_limit: Optional[float] = None,
                 callback: Callable[[int, float], None] = lambda step, coh: None) -> RunResult:
    """Algorithm 1. Each step: normalise rows, sum ``OfficialSliceLoss``'s gradient and max over
    the slices, stop if max <= alpha + OFFICIAL_TOL (returning that W), else one SGD step."""
    n, d = init.shape
    weight = Parameter(Tensor(np.ascontiguousarray(init, dtype=np.float32)), name="ebv")
    opt = nn.SGD([weight], learning_rate=lr)
    grad_fn = ms.value_and_grad(OfficialSliceLoss(weight, alpha), None, opt.parameters, has_aux=True)
    rows_t = _slices(n, slice_size or max(OFFICIAL_SLICE, block_rows(n, d)))

    @ms.jit
    def slice_grad(rows, first):
        # compiled: op-by-op PyNative gave Algorithm 1 half the steps per second (N=1000, d=100)
        if first:  # the step's normalisation in the same compiled call (a constant: two graphs)
            assign_unit_rows(weight)
        (_, m), grads = grad_fn(rows)
        return m, grads[0]

    t0 = time.perf_counter()
    best, best_w, history = math.inf, None, []
    step = 0
    while True:
        true_max, total = -math.inf, None
        for k, rows in enumerate(rows_t):
            m, grad = slice_grad(rows, k == 0)
            true_max = max(true_max, float(m.asnumpy()))
            total = grad if total is None else total + grad
        elapsed = time.perf_counter() - t0
        history.append((elapsed, step, true_max))
        if true_max < best:
            best, best_w = true_max, weight.asnumpy().copy()
        callback(step, true_max)
        reached = bool(true_max <= alpha + OFFICIAL_TOL)  # authors' max starts at alpha: same test
        if reached or step >= max_steps or (time_limit is not None and elapsed >= time_limit):
            break
        opt((total,))
        step += 1
    return RunResult(best_w, best, step, reached, time.perf_counter() - t0, history)


def run_smoothmax(init: np.ndarray, alpha: Optional[float], max_steps: int,
                  lr: float = 1e-2, beta0: float = 40.0, beta_max: float = 20000.0,
                  beta_growth: float = 1.003, patience: int = 40, min_lr: float = 1e-5,
                  diverge_tol: float = 0.25, slice_size: Optional[int] = None, seed: int = 0,
                  time_limit: Optional[float] = None,
                  callback: Callable[[int, float], None] = lambda step, coh: None) -> RunResult:
    """Adam on ``SmoothMaxGrad``, rows re-normalised after each step; beta grows by
    ``beta_growth`` per epoch (every slice once, in a seeded order). After ``patience`` epochs
    without a new best, or one ``diverge_tol`` worse, back to the best set at half the learning
    rate. Stops at best <= alpha, ``max_steps`` or ``time_limit``; returns the best set seen."""
    n, d = init.shape
    rows_t = _slices(n, slice_size or block_rows(n, d))
    weight = Parameter(Tensor(np.ascontiguousarray(init, dtype=np.float32)), name="ebv")
    grad_cell = SmoothMaxGrad(weight, whole=len(rows_t) == 1)
    lr_t = ms.Parameter(Tensor(lr, ms.float32), name="lr", requires_grad=False)
    opt = nn.Adam([weight], learning_rate=lr_t)
    # the set the step's coherence was measured on (before its update), kept in the graph so
    # that a new best is read back only when there is one
    before = ms.Parameter(Tensor(np.ascontiguousarray(init, dtype=np.float32)), name="before",
                          requires_grad=False)

    @ms.jit
    def train_step(rows, beta):
        ops.assign(before, weight.value())
        m, grad = grad_cell(rows, beta)
        opt((grad,))
        assign_unit_rows(weight)
        return m

    @ms.jit
    def load_state(w, new_lr):
        # written from a graph (set_data would detach them from the graph's buffers); Adam's
        # moments cleared so the old direction does not carry over
        ops.assign(weight, w)
        ops.assign(opt.learning_rate, new_lr)
        for m1, m2 in zip(opt.moment1, opt.moment2):
            ops.assign(m1, ops.zeros_like(m1))
            ops.assign(m2, ops.zeros_like(m2))
        return new_lr

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    best, best_w, history = math.inf, init.astype(np.float32, order="C"), []
    beta, since_best, cur_lr = beta0, 0, lr
    step, reached = 0, False
    while step < max_steps:
        order = rng.permutation(len(rows_t)) if len(rows_t) > 1 else [0]
        epoch_max = 0.0
        # with several slices the epoch's coherence belongs (approximately) to its start
        w_epoch = weight.asnumpy().copy() if len(rows_t) > 1 else None
        beta_t = Tensor(beta, ms.float32)
        for k in order[:max_steps - step]:
            m = train_step(rows_t[k], beta_t)
            epoch_max = max(epoch_max, float(m.asnumpy()))
            step += 1
        elapsed = time.perf_counter() - t0
        history.append((elapsed, step, epoch_max))
        callback(step, min(best, epoch_max))
        if epoch_max < best - 1e-6:
            best, since_best = epoch_max, 0
            w_before = w_epoch if w_epoch is not None else before.asnumpy()
            best_w = w_before / np.linalg.norm(w_before, axis=1, keepdims=True)
        else:
            since_best += 1
            if (since_best >= patience or epoch_max > best * (1.0 + diverge_tol)) \
                    and cur_lr > min_lr:
                cur_lr *= 0.5
                load_state(Tensor(best_w.astype(np.float32)), Tensor(cur_lr, ms.float32))
                since_best = 0
        beta = min(beta_max, beta * beta_growth)
        reached = alpha is not None and bool(best <= alpha)
        if reached or (time_limit is not None and elapsed >= time_limit):
            break
    return RunResult(best_w, best, step, reached, time.perf_counter() - t0, history)

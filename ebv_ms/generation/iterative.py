"""The two iterative generators, on row slices (memory a small multiple of W): ``official``,
Algorithm 1 as the authors released it (SGD on ``relu(|cos| - alpha)``, stop at max |cos| <=
alpha + 1e-4), and ``smoothmax`` (the default: Adam on a smooth max of |cos| with a rising
sharpness; it minimises the coherence itself, so it keeps improving below any fixed alpha)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .cells import EBVParams, OfficialSliceLoss, SmoothMaxGrad, assign_unit_rows

OFFICIAL_TOL = 1e-4   # Algorithm 1 stops when max|cos| <= alpha + 1e-4
OFFICIAL_LR = 1e-3
OFFICIAL_SLICE = 130  # the authors' slice size (any size gives the same summed gradient)


@dataclass
class RunResult:
    vectors: np.ndarray          # best set seen (rows normalised, float32)
    coherence: float             # its max |cos| as measured during the run (float32 blocks)
    steps: int                   # optimisation steps taken
    reached: bool                # stopped because the target was met
    seconds: float
    history: List[tuple] = field(default_factory=list)  # (seconds, step, coherence)


def block_rows(num_classes: int, dim: int, budget_mb: float = 256.0) -> int:
    """Rows per slice so that a step on one slice fits in ``budget_mb`` above W: a step keeps
    about 8 |S| x N float32 blocks alive (measured 6.9 and 8.2 at N = 30,000 by
    ``benchmarks/generation_memory.py``). Sets with N <= 2896 fit in one slice."""
    per_row = 4.0 * (8 * num_classes + dim)
    return int(max(1, min(num_classes, budget_mb * 2 ** 20 // per_row)))


def _slices(n: int, size: int) -> List[np.ndarray]:
    return [np.arange(s, min(n, s + size), dtype=np.int32) for s in range(0, n, size)]


def run_official(init: np.ndarray, alpha: float, max_steps: int, lr: float = OFFICIAL_LR,
                 slice_size: Optional[int] = None, time_limit: Optional[float] = None,
                 callback: Optional[Callable[[int, float], None]] = None) -> RunResult:
    """Algorithm 1. Each step: normalise rows; for every slice accumulate the gradient of
    sum relu(|W_S W^T| - I_S - alpha) and the max; stop if max <= alpha + 1e-4 (returning
    that normalised W); else one SGD step on the summed gradient."""
    n, d = init.shape
    params = EBVParams(init)
    opt = nn.SGD([params.weight], learning_rate=lr)
    grad_fn = ms.value_and_grad(OfficialSliceLoss(params, alpha), None, opt.parameters,
                                has_aux=True)
    rows_t = [Tensor(r) for r in _slices(n, slice_size or max(OFFICIAL_SLICE, block_rows(n, d)))]
    one, weight = len(rows_t) == 1, params.weight

    @ms.jit
    def slice_grad(rows):
        # compiled: op-by-op PyNative gave Algorithm 1 half the steps per second (N=1000, d=100)
        if one:  # the step's normalisation in the same compiled call
            assign_unit_rows(weight)
        (_, m), grads = grad_fn(rows)
        return m, grads[0]

    t0 = time.perf_counter()
    best, best_w, history = math.inf, None, []
    step, reached = 0, False
    while True:
        if not one:
            params.normalize_()
        true_max = -math.inf     # the authors start their max at alpha; keep the true one too
        total = None
        for rows in rows_t:
            m, grad = slice_grad(rows)
            true_max = max(true_max, float(m.asnumpy()))
            total = grad if total is None else total + grad
        mx = max(float(alpha), true_max)
        elapsed = time.perf_counter() - t0
        history.append((elapsed, step, true_max))
        if true_max < best:
            best, best_w = true_max, params.weight.asnumpy().copy()
        if callback is not None:
            callback(step, true_max)
        if mx <= alpha + OFFICIAL_TOL:
            reached = True
            break
        if step >= max_steps or (time_limit is not None and elapsed >= time_limit):
            break
        opt((total,))
        step += 1
    return RunResult(best_w, best, step, reached, time.perf_counter() - t0, history)


def run_smoothmax(init: np.ndarray, alpha: Optional[float], max_steps: int,
                  lr: float = 1e-2, beta0: float = 40.0, beta_max: float = 20000.0,
                  beta_growth: float = 1.003, patience: int = 40, min_lr: float = 1e-5,
                  diverge_tol: float = 0.25, slice_size: Optional[int] = None, seed: int = 0,
                  time_limit: Optional[float] = None,
                  callback: Optional[Callable[[int, float], None]] = None) -> RunResult:
    """Adam on the smooth max of |cos| (``SmoothMaxGrad``), rows re-normalised after each step.

    beta grows from ``beta0`` by ``beta_growth`` per epoch (every slice once, in a seeded order)
    up to ``beta_max``; after ``patience`` epochs without a new best, or an epoch ``diverge_tol``
    worse than the best, the run goes back to the best set and halves the learning rate. Stops
    at best <= alpha (if given), ``max_steps`` or ``time_limit``; returns the best set seen.
    """
    n, d = init.shape
    slices = _slices(n, slice_size or block_rows(n, d))
    params = EBVParams(init)
    grad_cell = SmoothMaxGrad(params, whole=len(slices) == 1)
    lr_t = ms.Parameter(Tensor(lr, ms.float32), name="lr", requires_grad=False)
    opt = nn.Adam([params.weight], learning_rate=lr_t)
    weight = params.weight
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

    rows_t = [Tensor(r) for r in slices]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    best, best_w, history = math.inf, init.astype(np.float32).copy(), []
    beta, since_best, cur_lr = beta0, 0, lr
    step, reached = 0, False
    while step < max_steps:
        order = rng.permutation(len(slices)) if len(slices) > 1 else [0]
        epoch_max = 0.0
        # with several slices the epoch's coherence belongs (approximately) to its start
        w_epoch = weight.asnumpy().copy() if len(slices) > 1 else None
        beta_t = Tensor(beta, ms.float32)
        for k in order:
            m = train_step(rows_t[k], beta_t)
            epoch_max = max(epoch_max, float(m.asnumpy()))
            step += 1
            if step >= max_steps:
                break
        elapsed = time.perf_counter() - t0
        history.append((elapsed, step, epoch_max))
        if callback is not None:
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
        if alpha is not None and best <= alpha:
            reached = True
            break
        if time_limit is not None and elapsed >= time_limit:
            break
    return RunResult(best_w.astype(np.float32), best, step, reached,
                     time.perf_counter() - t0, history)

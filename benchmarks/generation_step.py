"""Per-step cost of the default generator's Cell: written-out gradient vs autodiff, side by side.

    flock /tmp/ebv_heavy.lock python benchmarks/generation_step.py [--dims 200 500] [--steps 60]

Both run the same compiled step (gradient, Adam, row re-normalisation) on the same N x d start:
``SmoothMaxGrad`` (the default, gradient written out) against the previous objective, a
log-sum-exp of |cos| differentiated by MindSpore's autodiff. Steps alternate in rounds
(A B, B A, ...) so both see the same machine load; prints the median ms per step and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build(n: int, d: int):
    import numpy as np
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops
    from ebv_ms.generation.iterative import SmoothMaxGrad

    class AutodiffSmoothMax(nn.Cell):
        """log-sum-exp of |cos| over the pairs, rows normalised inside; autodiff gradient."""

        def __init__(self, weight):
            super().__init__()
            self.weight = weight
            self.mm = ops.MatMul(transpose_b=True)

        def construct(self, rows, onehot, beta):
            w = self.weight
            v = w / ops.norm(w, dim=1, keepdim=True)
            c = ops.abs(self.mm(ops.gather(v, rows, 0), v)) - 2.0 * onehot
            mx = ops.stop_gradient(c.max())
            return ops.log(ops.exp(beta * (c - mx)).sum()) / beta + mx, mx

    w0 = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    w0 /= np.linalg.norm(w0, axis=1, keepdims=True)
    args = (Tensor(np.arange(n, dtype=np.int32)), Tensor(np.eye(n, dtype=np.float32)),
            Tensor(150.0, ms.float32))

    w_old = Parameter(Tensor(w0), name="ebv")
    opt_old = nn.Adam([w_old], learning_rate=3e-3)
    grad_fn = ms.value_and_grad(AutodiffSmoothMax(w_old), None, opt_old.parameters, has_aux=True)

    @ms.jit
    def autodiff_step(rows, onehot, beta):
        (_, m), grads = grad_fn(rows, onehot, beta)
        opt_old(grads)
        w = w_old.value()
        ops.assign(w_old, w / ops.norm(w, dim=1, keepdim=True))
        return m

    w_new = Parameter(Tensor(w0), name="ebv")
    cell = SmoothMaxGrad(w_new, whole=True)
    opt_new = nn.Adam([w_new], learning_rate=3e-3)

    @ms.jit
    def written_step(rows, onehot, beta):
        m, grad = cell(rows, beta)  # removes the self-pairs by index; onehot is for autodiff
        opt_new((grad,))
        w = w_new.value()
        ops.assign(w_new, w / ops.norm(w, dim=1, keepdim=True))
        return m

    return {"autodiff": autodiff_step, "written": written_step}, args


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--dims", type=int, nargs="+", default=[200, 500])
    ap.add_argument("--steps", type=int, default=60, help="timed rounds (one step of each)")
    args = ap.parse_args(argv)
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rows = []
    for d in args.dims:
        steps, inputs = build(args.n, d)
        for fn in steps.values():
            for _ in range(3):
                fn(*inputs).asnumpy()          # compile + warm up
        times = {k: [] for k in steps}
        order = list(steps)
        for _ in range(args.steps):
            for k in order:
                t0 = time.perf_counter()
                steps[k](*inputs).asnumpy()
                times[k].append(1000 * (time.perf_counter() - t0))
            order.reverse()
        a, w = statistics.median(times["autodiff"]), statistics.median(times["written"])
        rows.append((d, a, w))
    print(f"\nsmoothmax step (gradient + Adam + re-normalisation), N={args.n}, CPU "
          f"({os.cpu_count()} cores), median of {args.steps} alternated steps")
    print("| N x d | autodiff on |cos|, ms | SmoothMaxGrad (written out), ms | speed-up |")
    print("|---|---|---|---|")
    for d, a, w in rows:
        print(f"| {args.n} x {d} | {a:.1f} | {w:.1f} | {a / w:.2f}x |")
    cmd = " ".join(["python benchmarks/generation_step.py"] + (argv if argv is not None else sys.argv[1:]))
    print(f"\nreproduce: flock /tmp/ebv_heavy.lock {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

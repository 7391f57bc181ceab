#!/usr/bin/env python
"""What ``model.ebv_dtype: float16`` costs in accuracy: EBV-head logits and predictions of the
fp16-stored matrix against the fp32 one, on fixed embeddings.

    flock /tmp/ebv_heavy.lock python benchmarks/fp16_storage.py [--classes 100000 --dim 5000 --batch 256]
    flock /tmp/ebv_heavy.lock python benchmarks/fp16_storage.py --train-memory --classes 20000 --dim 2000

The set is the padded Kerdock closed form, the one ``configs/10w_classes.yaml`` trains with
(``create_ebv`` auto at 100,000 x 5,000, alpha 0.122), tau = 0.007. Two fixed embedding sets (seeded):
``random`` (standard normal: no class is near, the hardest case for the argmax) and ``trained``
(each row is its class's EBV plus noise, cos to it ~0.5, as a trained network produces). Both
heads run the real ``EBVHead`` in GRAPH mode on CPU; reported: max and mean |logit difference|,
the largest |logit| (to read the difference against), top-1 and top-5 agreement.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def embeddings(ebv, batch: int, kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.standard_normal((batch, ebv.dim)).astype(np.float32)
    labels = rng.integers(0, ebv.num_classes, batch)
    noise = rng.standard_normal((batch, ebv.dim)).astype(np.float32)
    noise *= np.sqrt(3.0) / np.linalg.norm(noise, axis=1, keepdims=True)  # |noise| = sqrt(3)
    return ebv.vectors[labels] + noise  # cos to the own EBV = 1 / sqrt(1 + 3) = 0.5


def logits(head, v: np.ndarray, chunk: int = 64) -> np.ndarray:
    import mindspore as ms
    return np.concatenate([head(ms.Tensor(v[i:i + chunk])).asnumpy()
                           for i in range(0, len(v), chunk)])


def topk(x: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.argpartition(-x, k, axis=1)[:, :k], axis=1)


def train_memory(classes: int, dim: int, dtype: str, steps: int = 3) -> dict:
    """Peak RSS growth (VmHWM, reset after the model is built) over ``steps`` GRAPH-mode training
    steps of a small MLP + EBV head whose matrix is stored in ``dtype``, on CPU."""
    import mindspore as ms
    from ebv_ms.engine.train_step import build_train_step
    from ebv_ms.generation import create_ebv
    from ebv_ms.loss import create_loss
    from ebv_ms.models import create_classifier
    from ebv_ms.optim import create_optimizer
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ebv = create_ebv(classes, dim, method="kerdock_padded", progress=False)
    net = create_classifier("small_mlp", "ebv", classes, ebv=ebv, ebv_dtype=dtype, tau=0.007,
                            backbone_kwargs={"widths": [64], "image_size": 8})
    step = build_train_step(net, create_loss(), create_optimizer(net, "sgd", lr=0.01))
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((32, 3, 8, 8), dtype=np.float32))
    y = ms.Tensor(rng.integers(0, classes, 32).astype(np.int32))

    def hwm_mb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    base = hwm_mb()
    for _ in range(steps):
        float(step(x, y)[0].asnumpy())
    return {"dtype": dtype, "matrix_mb": classes * dim * (2 if dtype == "float16" else 4) / 2**20,
            "peak_growth_mb": hwm_mb() - base}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--tau", type=float, default=0.007)
    ap.add_argument("--json", default=None)
    ap.add_argument("--train-memory", action="store_true",
                    help="instead: peak RSS growth of 3 CPU training steps, fp32 vs fp16 storage")
    ap.add_argument("--dtype", help=argparse.SUPPRESS)  # internal: one --train-memory case
    args = ap.parse_args(argv)
    if args.dtype:
        print("CASE " + json.dumps(train_memory(args.classes, args.dim, args.dtype)))
        return 0
    if args.train_memory:
        import subprocess
        import sys
        print(f"Peak RSS growth over 3 GRAPH training steps on CPU (small_mlp + EBV head, "
              f"{args.classes:,} x {args.dim:,}, batch 32), each case in its own process\n")
        print("| storage | matrix MB | peak growth MB | growth / fp32 matrix |")
        print("| --- | ---: | ---: | ---: |")
        fp32_mb = args.classes * args.dim * 4 / 2**20
        for dtype in ("float32", "float16"):
            out = subprocess.run([sys.executable, __file__, "--classes", str(args.classes),
                                  "--dim", str(args.dim), "--dtype", dtype],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(next(ln[5:] for ln in out.splitlines() if ln.startswith("CASE ")))
            print(f"| {dtype} | {r['matrix_mb']:.0f} | {r['peak_growth_mb']:.0f} | "
                  f"{r['peak_growth_mb'] / fp32_mb:.2f}x |")
        print("\ncommand: flock /tmp/ebv_heavy.lock python benchmarks/fp16_storage.py "
              f"--train-memory --classes {args.classes} --dim {args.dim}")
        return 0
    import mindspore as ms
    from ebv_ms.generation import create_ebv
    from ebv_ms.models import EBVHead
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    t0 = time.time()
    ebv = create_ebv(args.classes, args.dim, method="kerdock_padded", progress=False)
    print(f"EBV set {ebv.num_classes} x {ebv.dim} ({ebv.method}) in {time.time() - t0:.1f} s")
    h32 = EBVHead(ebv, tau=args.tau)
    h16 = EBVHead(ebv, tau=args.tau, storage_dtype="float16")
    for h in (h32, h16):
        h.set_train(False)
    res = {}
    for kind in ("random", "trained"):
        v = embeddings(ebv, args.batch, kind)
        t0 = time.time()
        a = logits(h32, v)
        t32 = time.time() - t0
        t0 = time.time()
        b = logits(h16, v)
        t16 = time.time() - t0
        d = np.abs(a.astype(np.float64) - b)
        res[kind] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                     "max_abs_logit": float(np.abs(a).max()),
                     "top1_agree": float((a.argmax(1) == b.argmax(1)).mean()),
                     "top5_agree": float((topk(a, 5) == topk(b, 5)).all(1).mean()),
                     "fp32_s": t32, "fp16_s": t16}
    print(f"\nfp16 vs fp32 storage of the EBV matrix, {ebv.num_classes:,} x {ebv.dim:,}, "
          f"tau {args.tau}, {args.batch} embeddings each, CPU GRAPH")
    print("| embeddings | max abs logit diff | mean abs diff | max abs logit | top-1 agree | "
          "top-5 agree (same set) | fp32 s | fp16 s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, r in res.items():
        print(f"| {kind} | {r['max_abs_diff']:.4f} | {r['mean_abs_diff']:.5f} | "
              f"{r['max_abs_logit']:.1f} | {100 * r['top1_agree']:.2f}% | "
              f"{100 * r['top5_agree']:.2f}% | {r['fp32_s']:.1f} | {r['fp16_s']:.1f} |")
    print("\ncommand: flock /tmp/ebv_heavy.lock python benchmarks/fp16_storage.py "
          f"--classes {args.classes} --dim {args.dim} --batch {args.batch} --tau {args.tau}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Export at the 100k-class shape: ResNet-50 + EBV 100,000 x 5,000 through export.py, each
format loaded back by its own runtime, time / peak memory / files measured.

    flock /tmp/ebv_heavy.lock python benchmarks/export.py [--classes 100000 --dim 5000]
                                  [--cases MINDIR,ONNX,ONNX-fp16] [--workdir DIR] [--keep]

Steps: the EBV set (``create_ebv``, auto: the padded Kerdock set) and a randomly initialised
ResNet-50 with that head are saved as a train.py-style checkpoint; then per case, in its own
process, ``export.py --ckpt ... --format F`` (peak RSS of that process, wall time, files
written), and in another process the file is loaded by ``mindspore.load`` + ``nn.GraphCell``
(MindIR) or onnxruntime (ONNX) and run on one 224x224 input; its logits are compared with the
checkpointed network's own (MindSpore, same input). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _child(code: str, *args) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last (with its own peak RSS)."""
    t0 = time.time()
    r = subprocess.run([PY, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3"))
    wall = time.time() - t0
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:300], "wall_s": wall}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out.update(wall_s=wall)
    return out


MAKE = r"""
import json, sys, time, numpy as np, mindspore as ms
from ebv_ms.config import load_config
from ebv_ms.engine.checkpoint import save_checkpoint
from ebv_ms.engine.builders import build_network, setup_context
from ebv_ms.generation import create_ebv
n, d, ckpt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = load_config(None, ["device_target=CPU", "model.backbone=resnet50", "model.head=ebv",
                         f"model.num_classes={n}", f"model.embed_dim={d}", "model.tau=0.007",
                         "data.image_size=224"])
setup_context(cfg)
t = time.time(); ebv = create_ebv(n, d, method="auto", seed=0, progress=False); t_gen = time.time() - t
net = build_network(cfg, ebv); net.set_train(False)
x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
logits = net(x).asnumpy()
np.save(ckpt + ".input.npy", x.asnumpy()); np.save(ckpt + ".logits.npy", logits)
save_checkpoint(ckpt, net, epoch=0, global_step=0, config=cfg, ebv=ebv)
import os, resource
print(json.dumps({"gen_s": t_gen, "method": ebv.method, "ckpt_mb": os.path.getsize(ckpt) / 1e6,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

EXPORT = r"""
import json, resource, sys, time
ckpt, fmt, out, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
t = time.time()
import export as E
meta, side = E.run(E.parse_args(["--ckpt", ckpt, "--format", fmt, "--out", out, *extra]))
print(json.dumps({"export_s": time.time() - t, "model": meta["model"], "files": meta["files"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

RUN = r"""
import json, os, resource, sys, time, numpy as np
path, ckpt = sys.argv[1], sys.argv[2]
x = np.load(ckpt + ".input.npy"); ref = np.load(ckpt + ".logits.npy")
t = time.time()
if path.endswith(".mindir"):
    import mindspore as ms
    ms.set_device("CPU")
    net = ms.nn.GraphCell(ms.load(path)); t_load = time.time() - t
    y = net(ms.Tensor(x)).asnumpy()
else:
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"]); t_load = time.time() - t
    y = s.run(None, {"image": x})[0]
print(json.dumps({"load_s": t_load, "run_s": time.time() - t - t_load,
                  "max_abs_diff": float(np.abs(y - ref).max()), "max_abs_logit": float(np.abs(ref).max()),
                  "same_top1": bool(y.argmax() == ref.argmax()),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CASES = {"MINDIR": ("MINDIR", []), "ONNX": ("ONNX", []),
         "ONNX-fp16": ("ONNX", ["model.ebv_dtype=float16"]),
         "MINDIR-fp16": ("MINDIR", ["model.ebv_dtype=float16"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=5000)
    ap.add_argument("--cases", default="MINDIR,ONNX,ONNX-fp16")
    ap.add_argument("--workdir", default=None, help="default: a temporary folder (deleted)")
    ap.add_argument("--keep", action="store_true", help="keep the files written")
    a = ap.parse_args(argv)
    work = a.workdir or tempfile.mkdtemp(prefix="ebv_export_")
    os.makedirs(work, exist_ok=True)
    ckpt = os.path.join(work, "r50_ebv.ckpt")
    rows = []
    try:
        made = _child(MAKE, a.classes, a.dim, ckpt)
        print(f"checkpoint: {made}", flush=True)
        if "error" in made:
            return 1
        for case in a.cases.split(","):
            fmt, extra = CASES[case]
            out = os.path.join(work, case.lower())
            ex = _child(EXPORT, ckpt, fmt, out, *extra)
            print(f"{case} export: {ex}", flush=True)
            row = {"case": case, **{f"export_{k}": v for k, v in ex.items()}}
            if "error" not in ex:
                rt = _child(RUN, os.path.join(work, ex["model"]), ckpt)
                print(f"{case} run: {rt}", flush=True)
                row.update({f"run_{k}": v for k, v in rt.items()})
            rows.append(row)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nResNet-50 + EBV {a.classes:,} x {a.dim:,}, checkpoint {made.get('ckpt_mb', 0):,.0f} MB "
          f"(EBV set: {made.get('method')}, {made.get('gen_s', 0):.1f} s)\n")
    print("| case | export s | export peak RSS MB | files (MB) | runtime load s | run s | "
          "max abs logit diff (max abs logit) | same top-1 |")
    print("| --- | ---: | ---: | --- | ---: | ---: | --- | --- |")
    for r in rows:
        if "export_error" in r:
            print(f"| {r['case']} | failed: {r['export_error']} | | | | | | |")
            continue
        files = ", ".join(f"{k} {v / 1e6:,.0f}" for k, v in r["export_files"].items())
        if "run_error" in r:
            print(f"| {r['case']} | {r['export_export_s']:.0f} | {r['export_rss_mb']:,.0f} | {files} | "
                  f"load failed: {r['run_error']} | | | |")
            continue
        print(f"| {r['case']} | {r['export_export_s']:.0f} | {r['export_rss_mb']:,.0f} | {files} | "
              f"{r['run_load_s']:.1f} | {r['run_run_s']:.1f} | {r['run_max_abs_diff']:.2e} "
              f"({r['run_max_abs_logit']:.1f}) | {r['run_same_top1']} |")
    print(f"\ncommand: flock /tmp/ebv_heavy.lock python benchmarks/export.py --classes {a.classes} "
          f"--dim {a.dim} --cases {a.cases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: training-step time and memory of the head + loss, FC vs EBV, side by side (CPU).

    flock /tmp/ebv_heavy.lock python benchmarks/heads.py [--batch 128] [--steps 5] [--cases ...]

Every case gets the same input: the same batch of backbone features (B x 2048, ResNet-50's
pooled features) and labels. One training step = forward, cross-entropy (``create_loss``),
backward, Momentum update of the trainable head parameters, compiled in GRAPH_MODE.
  fc_1k     : learned FC 2048 -> 1000
  ebv_1k    : projection 2048 -> 1000, frozen 1000 x 1000 EBVs, cos/tau
  fc_100k   : learned FC 2048 -> 100,000
  ebv_100k_d1024 / ebv_100k_d5000 : projection 2048 -> d, frozen 100,000 x d EBVs
``--backbone resnet50`` times the full-model step instead (same ResNet-50, same images), where
the head is a small part of the step, as in real training. ``--interleaved`` times all cases in
one process with their steps alternated, the order reversed every round, and reports the median
of the per-round EBV/FC ratios with a 95% bootstrap interval (fairest timing on a busy machine;
no memory columns).

Each case runs in its own subprocess so memory is measured separately: the parent samples the
child's resident set (/proc/PID/status VmRSS, every 5 ms) while it runs the timed steps, and
reports (step peak - baseline), where the baseline is the child's RSS after importing MindSpore
and creating the batch, before the head exists. "build peak" is the child's lifetime maximum
(ru_maxrss), which also includes transient copies made while constructing the matrices.
The EBV matrices here are random unit vectors: step cost does not depend on the values, and
generating a real 100k x 5000 set takes far longer than this benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = 2048
CASES = {
    "fc_1k": ("fc", 1000, None),
    "ebv_1k": ("ebv", 1000, 1000),
    "fc_100k": ("fc", 100_000, None),
    "ebv_100k_d1024": ("ebv", 100_000, 1024),
    "ebv_100k_d5000": ("ebv", 100_000, 5000),
}


def _rss_mb(pid="self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build_case(name: str, batch: int, backbone: str, image_size: int):
    """(compiled train step, inputs, labels, net) for one case; inputs identical across cases."""
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor, nn

    sys.path.insert(0, ROOT)
    from ebv_ms.loss import create_loss
    from ebv_ms.models.heads import EBVHead, FCHead, random_unit_vectors

    head_kind, num_classes, dim = CASES[name]
    rng = np.random.default_rng(0)
    labels = Tensor(rng.integers(0, num_classes, batch).astype(np.int32))
    if backbone == "none":
        inputs = Tensor(rng.standard_normal((batch, FEATURES)).astype(np.float32))
    else:
        inputs = Tensor(rng.standard_normal((batch, 3, image_size, image_size)).astype(np.float32))
    baseline = _rss_mb()
    ms.set_seed(0)
    if backbone == "none":
        if head_kind == "fc":
            net = FCHead(FEATURES, num_classes)
        else:
            ebv = random_unit_vectors(num_classes, dim, seed=1)
            head = EBVHead(ebv, tau=0.07)
            del ebv
            net = nn.SequentialCell([nn.Dense(FEATURES, dim), head])
    else:
        from ebv_ms.models import create_classifier
        ebv = random_unit_vectors(num_classes, dim, seed=1) if head_kind == "ebv" else None
        net = create_classifier(backbone, head_kind, num_classes, ebv=ebv, tau=0.07)
        del ebv
    net.set_train(True)
    loss_fn = create_loss(0.1)
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)

    def forward(x, y):
        return loss_fn(net(x), y)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    @ms.jit
    def step(x, y):
        loss, grads = grad_fn(x, y)
        opt(grads)
        return loss

    return step, inputs, labels, net, baseline


def _describe(name, net, batch, backbone):
    head_kind, num_classes, dim = CASES[name]
    trainable = sum(int(p.size) for p in net.trainable_params())
    frozen = sum(int(p.size) for p in net.get_parameters() if not p.requires_grad
                 and not p.name.endswith(("moving_mean", "moving_variance")))
    return {"case": name, "head": head_kind, "N": num_classes, "d": dim, "batch": batch,
            "backbone": backbone, "trainable": trainable, "frozen": frozen}


def run_case(name: str, batch: int, steps: int, warmup: int, backbone: str, image_size: int) -> dict:
    """Child process: build, compile, time ``steps`` steps; talk to the parent via stdout."""
    import mindspore as ms

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    step, inputs, labels, net, baseline = build_case(name, batch, backbone, image_size)
    t0 = time.perf_counter()
    step(inputs, labels).asnumpy()
    compile_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        step(inputs, labels).asnumpy()
    print("STEPS_BEGIN", flush=True)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(inputs, labels).asnumpy()
        times.append(time.perf_counter() - t0)
    print("STEPS_END", flush=True)
    return dict(_describe(name, net, batch, backbone), step_ms=1000 * statistics.median(times),
                compile_s=compile_s, baseline_mb=baseline,
                build_peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def run_interleaved(names, batch: int, steps: int, warmup: int, backbone: str, image_size: int) -> dict:
    """One process, all cases built, steps alternated: the fairest timing on a busy machine
    (every case sees the same background load). The order reverses every round (A B, B A, ...)
    so neither case always runs right after the other. Besides each case's median, every round
    gives a paired ratio against the FC case of the same N; the median of those ratios, with a
    95% bootstrap interval, is the figure to quote (drifting load cancels within a round).
    Memory is not measured here."""
    import mindspore as ms

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    built = {n: build_case(n, batch, backbone, image_size) for n in names}
    for n, (step, x, y, _, _) in built.items():
        for _ in range(max(warmup, 1)):
            step(x, y).asnumpy()
    times = {n: [] for n in names}
    order = list(names)
    for _ in range(steps):
        for n in order:
            step, x, y, _, _ = built[n]
            t0 = time.perf_counter()
            step(x, y).asnumpy()
            times[n].append(time.perf_counter() - t0)
        order.reverse()
    out = {}
    for n in names:
        res = dict(_describe(n, built[n][3], batch, backbone),
                   step_ms=1000 * statistics.median(times[n]), step_ms_all=[1000 * t for t in times[n]])
        fc = _fc_of(n)
        if fc in times and fc != n:
            import numpy as np
            ratios = np.array(times[n]) / np.array(times[fc])
            # 95% bootstrap interval of the median paired ratio (seeded: the same data gives
            # the same interval)
            rng = np.random.default_rng(0)
            boot = np.median(rng.choice(ratios, (2000, ratios.size)), axis=1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            res.update(paired_ratio=float(np.median(ratios)), paired_lo=float(lo), paired_hi=float(hi))
        out[n] = res
    return out


def _fc_of(name: str) -> str:
    return "fc_1k" if CASES[name][1] == 1000 else "fc_100k"


def spawn(name: str, args) -> dict:
    """Parent: run one case in a subprocess, sampling its RSS during the timed steps."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--backbone", args.backbone,
           "--image-size", str(args.image_size)]
    errlog = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True, cwd=ROOT)
    state = {"sampling": False, "peak": 0.0, "stop": False}

    def sampler():
        while not state["stop"]:
            if state["sampling"]:
                try:
                    state["peak"] = max(state["peak"], _rss_mb(proc.pid))
                except OSError:
                    return
            time.sleep(0.005)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    result = None
    for line in proc.stdout:
        line = line.strip()
        if line == "STEPS_BEGIN":
            state["sampling"] = True
        elif line == "STEPS_END":
            state["sampling"] = False
        elif line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    proc.wait()
    state["stop"] = True
    if result is None or proc.returncode != 0:
        errlog.seek(0)
        tail = [ln for ln in errlog.read().splitlines() if ln.strip() and "__del__" not in ln
                and "total_instance_count" not in ln and "Exception ignored" not in ln][-15:]
        raise RuntimeError(f"case {name} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    errlog.close()
    result["step_peak_mb"] = state["peak"]
    result["step_mem_mb"] = state["peak"] - result["baseline_mb"]
    return result


def _ratio(by, a, b, key):
    if a in by and b in by and by[b].get(key):
        return f"{by[a][key] / by[b][key]:.2f}x"
    return "-"


def _print_table(rows, by, columns):
    """Markdown table: the case description columns, then ``columns`` = [(header, cell(row))]."""
    heads = ["case", "head", "N", "d", "trainable", "frozen"] + [h for h, _ in columns]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for r in rows:
        cells = [r["case"], r["head"], f"{r['N']:,}", str(r["d"] or "-"), f"{r['trainable'] / 1e6:.2f}M",
                 f"{r['frozen'] / 1e6:.1f}M"] + [cell(r) for _, cell in columns]
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--backbone", default="none", help="none (head only, default) | resnet50 | small_cnn")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1, help="run the case list this many times")
    p.add_argument("--interleaved", action="store_true",
                   help="time all cases in one process, steps alternated (no memory columns)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-interleaved", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        res = run_case(args.child, args.batch, args.steps, args.warmup, args.backbone, args.image_size)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    if args.child_interleaved:
        res = run_interleaved(args.child_interleaved.split(","), args.batch, args.steps, args.warmup,
                              args.backbone, args.image_size)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    what = (f"backbone {args.backbone}, {args.image_size}x{args.image_size} images" if args.backbone != "none"
            else "input: the same 2048-d feature batch")
    cmd = " ".join(["flock /tmp/ebv_heavy.lock python benchmarks/heads.py"] +
                   (list(argv) if argv is not None else sys.argv[1:]))
    if args.interleaved:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-interleaved", ",".join(args.cases),
                              "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                              "--backbone", args.backbone, "--image-size", str(args.image_size)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            tail = [ln for ln in out.stderr.splitlines() if ln.strip() and "__del__" not in ln
                    and "total_instance_count" not in ln and "Exception ignored" not in ln][-15:]
            raise RuntimeError(f"interleaved run failed (exit {out.returncode}):\n" + "\n".join(tail))
        by = json.loads(lines[-1][len("RESULT "):])
        rows = [by[n] for n in args.cases]
        print(f"\ntraining step (fwd + loss + bwd + Momentum), CPU, GRAPH_MODE, batch {args.batch}, {what}; "
              f"cases alternated step by step in one process (order reversed each round), {args.steps} rounds")
        _print_table(rows, by, [
            ("median step ms", lambda r: f"{r['step_ms']:.1f}"),
            ("vs FC (ratio of medians)", lambda r: _ratio(by, r["case"], _fc_of(r["case"]), "step_ms")),
            ("vs FC (median of paired ratios)",
             lambda r: f"{r['paired_ratio']:.3f}x" if "paired_ratio" in r else "-"),
            ("its 95% bootstrap interval",
             lambda r: f"{r['paired_lo']:.3f}-{r['paired_hi']:.3f}x" if "paired_ratio" in r else "-")])
        print(f"\nreproduce: {cmd}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
        return 0

    results = {}
    for rep in range(args.repeats):
        for name in args.cases:
            r = spawn(name, args)
            print(f"[{rep + 1}/{args.repeats}] {name}: {r['step_ms']:.1f} ms/step, "
                  f"step mem {r['step_mem_mb']:.0f} MB", file=sys.stderr, flush=True)
            results.setdefault(name, []).append(r)
    rows = []
    for name in args.cases:
        rs = results[name]
        rows.append(dict(rs[0], step_ms=statistics.median(r["step_ms"] for r in rs),
                         step_mem_mb=max(r["step_mem_mb"] for r in rs),
                         build_peak_mb=max(r["build_peak_mb"] for r in rs)))
    by = {r["case"]: r for r in rows}
    print(f"\ntraining step (fwd + loss + bwd + Momentum), CPU, GRAPH_MODE, batch {args.batch}, {what}; "
          f"one process per case, median of {args.steps} steps x {args.repeats} run(s)")
    _print_table(rows, by, [
        ("step ms", lambda r: f"{r['step_ms']:.1f}"),
        ("vs FC", lambda r: _ratio(by, r["case"], _fc_of(r["case"]), "step_ms")),
        ("step mem MB", lambda r: f"{r['step_mem_mb']:.0f}"),
        ("vs FC", lambda r: _ratio(by, r["case"], _fc_of(r["case"]), "step_mem_mb")),
        ("build peak MB", lambda r: f"{r['build_peak_mb']:.0f}")])
    print(f"\nreproduce: {cmd}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of the iterative generators at large N: `smoothmax` and `official` (Algorithm 1).

    flock /tmp/ebv_heavy.lock python benchmarks/generation_memory.py [--n 30000] [--d 100]

Each method runs in its own process from the same normal start (seed 0) for a few steps (one
epoch over the row slices for `smoothmax`, one full-gradient step for `official`). Printed per
method: resident memory before the run (MindSpore loaded, W built), the process's peak
(ru_maxrss) after it, their difference, W's own size, and the seconds taken. Target at
N = 30,000, d = 100: peak under 1 GB (W is 12 MB; a stored N x N self-pair mask was 3.6 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _case(method: str, n: int, d: int, steps: int) -> dict:
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    from ebv_ms.generation.factory import normal_init
    from ebv_ms.generation.iterative import block_rows, run_official, run_smoothmax

    w0 = normal_init(n, d, seed=0)
    slices = -(-n // block_rows(n, d))
    before = _rss_mb()
    t0 = time.perf_counter()
    if method == "official":
        res = run_official(w0, 0.2, max_steps=steps)
    else:
        res = run_smoothmax(w0, None, max_steps=steps * slices)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "n": n, "d": d, "slices": slices, "steps": res.steps,
            "before_mb": before, "peak_mb": peak, "w_mb": w0.nbytes / 2 ** 20, "seconds": secs,
            "coherence": res.coherence}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1,
                    help="official: optimizer steps; smoothmax: epochs over the row slices")
    ap.add_argument("--methods", nargs="+", default=["smoothmax", "official"])
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(_case(args.case, args.n, args.d, args.steps)))
        return 0
    rows = []
    for method in args.methods:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", method,
                              "--n", str(args.n), "--d", str(args.d), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\niterative generators, N={args.n}, d={args.d}, CPU ({os.cpu_count()} cores), "
          "one process per method")
    print("| method | row slices | steps | RSS before, MB | peak RSS, MB | peak - before, MB "
          "| W, MB | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['slices']} | {r['steps']} | {r['before_mb']:.0f} | "
              f"{r['peak_mb']:.0f} | {r['peak_mb'] - r['before_mb']:.0f} | {r['w_mb']:.1f} | "
              f"{r['seconds']:.1f} |")
    cmd = " ".join(["python benchmarks/generation_memory.py"] + (argv if argv is not None else sys.argv[1:]))
    print(f"\nreproduce: flock /tmp/ebv_heavy.lock {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the analysis (named analysis.py: a script called inspect.py would shadow the
stdlib module of that name): blockwise `pairwise_stats` vs a naive full-Gram numpy computation.

Side by side in one run on CPU, for random unit vectors: wall time and peak extra memory
(numpy allocations via tracemalloc, beyond W itself) of

* naive:     W W^T in float64, upper triangle, clip, arccos, |angle - 90| -- the obvious code;
* blockwise: `ebv_ms.ebv.pairwise_stats` (float64 row blocks, never N x N).

Both give the same coherence / Ave. Del. Ang. (checked). With ``--large NxD ...`` it also measures
`pairwise_stats` alone at a size where the naive N x N matrix cannot exist (the naive column
then shows the memory it would need). Prints a table and the command that reproduces it.

    flock /tmp/ebv_heavy.lock python benchmarks/analysis.py [--sizes 5000x500 10000x500]
        [--large 20000x5000 100000x500] [--block-size 2048]
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ebv_ms.ebv import pairwise_stats  # noqa: E402


def naive_stats(w: np.ndarray):
    """The full-Gram way: exact, but N x N float64 plus temporaries."""
    wn = w.astype(np.float64)
    wn /= np.linalg.norm(wn, axis=1, keepdims=True)
    g = wn @ wn.T
    c = np.clip(g[np.triu_indices(w.shape[0], k=1)], -1.0, 1.0)
    coh = float(np.abs(c).max())
    delta = float(np.abs(np.degrees(np.arccos(c)) - 90.0).mean())
    return coh, delta


def blockwise_stats(w: np.ndarray, block_size: int, progress: bool = False):
    st = pairwise_stats(w, block_size=block_size, progress=progress)
    return st.coherence, st.mean_delta_angle_deg


def measure(fn, *args, **kw):
    """(result, seconds, peak extra bytes): one timed run, one traced run."""
    gc.collect()
    t0 = time.perf_counter()
    res = fn(*args, **kw)
    secs = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn(*args, **kw)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return res, secs, peak


def random_set(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 8192):  # fill in chunks: no float64 N x d temporary
        blk = rng.standard_normal((min(8192, n - i), d), dtype=np.float32)
        w[i:i + blk.shape[0]] = blk / np.linalg.norm(blk, axis=1, keepdims=True)
    return w


def fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["5000x500", "10000x500"],
                   help="NxD sizes run with both methods")
    p.add_argument("--large", nargs="+", default=[], metavar="NxD",
                   help="sizes run with pairwise_stats alone (e.g. 100000x5000)")
    p.add_argument("--block-size", type=int, default=2048)
    args = p.parse_args(argv)

    rows = []
    for spec in args.sizes:
        n, d = (int(x) for x in spec.lower().split("x"))
        w = random_set(n, d)
        (c_n, dl_n), t_n, m_n = measure(naive_stats, w)
        (c_b, dl_b), t_b, m_b = measure(blockwise_stats, w, args.block_size)
        assert abs(c_n - c_b) < 1e-12 and abs(dl_n - dl_b) < 1e-9, (c_n, c_b, dl_n, dl_b)
        rows.append((n, d, w.nbytes, f"{t_n:.2f} s", fmt_bytes(m_n), f"{t_b:.2f} s",
                     fmt_bytes(m_b), f"{t_n / t_b:.2f}x", f"{m_n / m_b:.1f}x", f"{m_b / w.nbytes:.1f}", f"{c_b:.5f}"))
        del w
        gc.collect()
    for spec in args.large:
        n, d = (int(x) for x in spec.lower().split("x"))
        w = random_set(n, d)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        c_b, _ = blockwise_stats(w, args.block_size, progress=True)
        t_b = time.perf_counter() - t0
        m_b = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        need = 8 * n * (n - 1) / 2 + 8 * n * n  # Gram + its upper triangle, float64
        rows.append((n, d, w.nbytes, "not run", f"needs >{fmt_bytes(need)}", f"{t_b:.1f} s",
                     fmt_bytes(m_b), "-", f"{need / m_b:.0f}x", f"{m_b / w.nbytes:.2f}", f"{c_b:.5f}"))
        del w
        gc.collect()

    head = ("N", "d", "W (fp32)", "naive time", "naive peak", "blockwise time",
            "blockwise peak", "speed ratio", "memory ratio", "blockwise peak / W", "coherence")
    table = [head] + [(str(r[0]), str(r[1]), fmt_bytes(r[2])) + r[3:] for r in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(v).ljust(wd) for v, wd in zip(r, widths)) + " |"  # noqa: E731
    print(f"pairwise statistics, float64, block size {args.block_size}, "
          f"{os.cpu_count()} CPU core(s); peak = extra numpy memory beyond W (tracemalloc); "
          "ratios = naive / blockwise")
    print(line(head))
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in table[1:]:
        print(line(r))
    cmd = "python benchmarks/analysis.py --sizes " + " ".join(args.sizes)
    if args.large:
        cmd += " --large " + " ".join(args.large)
    if args.block_size != 2048:
        cmd += f" --block-size {args.block_size}"
    print(f"\nreproduce: flock /tmp/ebv_heavy.lock {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

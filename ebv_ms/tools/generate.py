"""Generate an EBV set and save it.

    python -m ebv_ms.tools.generate --num-classes 1000 --dim 100 --alpha 0.13 --out eq_100_1000.npy

The format follows the extension of --out (.npy float32 N x d, .npz native with metadata,
.pkl the authors' layout). An alpha below the Welch bound is refused at once; a run that hits
its step cap still saves its best set and says it fell short (exit code 3).
"""
from __future__ import annotations

import argparse
import sys
import time

from ebv_ms.errors import run_cli
from ebv_ms.generation import METHODS, create_ebv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ebv_ms.tools.generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-classes", "-n", type=int, required=True, help="N, number of vectors")
    ap.add_argument("--dim", "-d", type=int, required=True, help="d, their dimension")
    ap.add_argument("--alpha", "-a", type=float, default=None,
                    help="coherence target max|cos| (default: as low as the method gets)")
    ap.add_argument("--method", "-m", default="auto", choices=METHODS,
                    help="auto picks a closed form when one fits, else smoothmax")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None, help="step cap of iterative methods")
    ap.add_argument("--device-target", default=None, choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    ap.add_argument("--out", "-o", required=True, help="output file (.npy, .npz or .pkl)")
    args = ap.parse_args(argv)

    def body() -> int:
        from ebv_ms.ebv import save_ebv
        t0 = time.perf_counter()
        ebv = create_ebv(args.num_classes, args.dim, alpha=args.alpha, method=args.method,
                         seed=args.seed, max_steps=args.max_steps, progress=not args.no_progress,
                         device_target=args.device_target)
        path = save_ebv(ebv, args.out)
        coh = ebv.extra.get("coherence")
        print(f"saved {ebv!r} to {path} in {time.perf_counter() - t0:.1f} s")
        print(f"method {ebv.method}, coherence {coh:.5f}" if coh is not None else f"method {ebv.method}")
        if args.alpha is not None and not ebv.extra.get("reached", True):
            print(f"generate: fell short: best coherence {coh:.5f} > alpha {args.alpha} after "
                  f"{ebv.extra.get('steps')} steps (the best set was saved; raise --max-steps or "
                  "alpha)", file=sys.stderr)
            return 3
        return 0

    return run_cli("generate", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

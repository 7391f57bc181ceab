"""Report on an EBV file: N, d, coherence, the paper's Min. Ang. and Ave. Del. Ang., Welch bound.

    python -m ebv_ms.tools.inspect FILE [--hist angles.png] [--block-size 2048] [--json] [--save OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..ebv import PairStats, load_ebv, pairwise_stats, save_ebv
from ..errors import run_cli

HIST_BINS = 1800  # 0.1 degree bins over [0, 180]


def write_histogram(stats: PairStats, out: Path) -> Path:
    """PNG bar chart of pairwise angles, zoomed to the occupied range, min angle marked."""
    import matplotlib
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    counts, edges = stats.hist_counts, stats.hist_edges
    occupied = np.nonzero(counts)[0]
    lo, hi = (edges[occupied[0]], edges[occupied[-1] + 1]) if occupied.size else (0.0, 180.0)
    pad = max(0.5, 0.05 * (hi - lo))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#3b75af", edgecolor="none")
    for x in (stats.min_angle_deg, 180.0 - stats.min_angle_deg):
        ax.axvline(x, color="#c0392b", lw=1, ls="--")
    ax.axvline(90.0, color="0.4", lw=0.8, ls=":")
    ax.set_xlim(max(0.0, lo - pad), min(180.0, hi + pad))
    ax.set(xlabel="pairwise angle (degrees)", ylabel="pairs")
    ax.set_title(f"N={stats.num_classes}, d={stats.dim}: coherence {stats.coherence:.5f}, "
                 f"min angle {stats.min_angle_deg:.2f} deg", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ebv_ms.tools.inspect", description=__doc__.split("\n")[0])
    p.add_argument("file", help="EBV file: .npz (native), .npy (float32 N x d) or the authors' .pkl")
    p.add_argument("--hist", metavar="PNG", help="write a histogram of pairwise angles to this PNG")
    p.add_argument("--block-size", type=int, default=2048,
                   help="rows per block (memory ~ 2 x block x d x 8 bytes + block^2 x 8 bytes)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    p.add_argument("--save", metavar="OUT", help="also write the set to OUT (.npz/.npy/.pkl by "
                   "extension), e.g. to convert the authors' .pkl files")
    args = p.parse_args(argv)
    if args.block_size < 1:
        p.error("--block-size must be >= 1")

    def body() -> int:
        ebv = load_ebv(args.file)
        if args.save:
            print(f"saved to {save_ebv(ebv, args.save)}", file=sys.stderr)
        stats = pairwise_stats(ebv.vectors, block_size=args.block_size,
                               bins=HIST_BINS if args.hist else None,
                               progress=not args.no_progress and ebv.num_classes > args.block_size)
        head = {"file": args.file, "method": ebv.method, "alpha": ebv.alpha, "seed": ebv.seed,
                "checksum": ebv.checksum()}
        if args.json:
            print(json.dumps({**head, **{k: v for k, v in vars(stats).items()
                                         if not k.startswith("hist")}}, indent=2))
        else:
            labels = {"alpha": "alpha (target)"}
            print("\n".join([f"{labels.get(k, k):<21}: {'unknown' if v is None else v}"
                             for k, v in head.items()]
                            + [stats.report(), f"pairs                : {stats.num_pairs}"]))
        if args.hist:
            out = write_histogram(stats, Path(args.hist))
            print(f"histogram written to {out}", file=sys.stderr if args.json else sys.stdout)
        return 0

    return run_cli("inspect", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

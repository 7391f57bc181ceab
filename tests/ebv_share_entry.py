"""An ENTRY for the multi-host EBV test: each rank resolves three EBV sets with its OWN cache
folder (OUT/host_<rank>, as on hosts that share no disk) and records what it got in
OUT/share_<rank>.json: a closed form (rebuilt on each rank), an iterative set (rank 0 generates,
the others receive it over the collective), an ``ebv.path`` file only rank 0 has, and an
``ebv.path`` file that differs between the ranks (an error on every rank)."""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ebv_ms.config import load_config  # noqa: E402
from ebv_ms.engine.distributed import init_distributed  # noqa: E402
from ebv_ms.engine.ebv_source import resolve_ebv  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg0 = load_config(args.config, args.overrides)
    rank, world = init_distributed({"device_target": "CPU"})
    out = str(cfg0.output_dir)
    cache = os.path.join(out, f"host_{rank}")
    own = os.path.join(out, "rank0_only.npz")  # written by the test, on rank 0's "disk" only
    cases = {
        "closed": ["ebv.method=kerdock", "model.num_classes=300", "model.embed_dim=64"],
        "iterative": ["ebv.method=smoothmax", "ebv.max_steps=20", "model.num_classes=40",
                      "model.embed_dim=8"],
        "path": [f"ebv.path={own if rank == 0 else own + '.absent'}", "model.num_classes=30",
                 "model.embed_dim=16"],
    }
    rec = {"rank": rank, "world_size": world}
    for name, ovr in cases.items():
        cfg = load_config(args.config, [*args.overrides, "model.head=ebv", "ebv.alpha=null",
                                        f"ebv.cache_dir={cache}", *ovr])
        t0 = time.time()
        ebv = resolve_ebv(cfg, rank, progress=False)
        rec[name] = {"checksum": ebv.checksum(), "seconds": time.time() - t0,
                     "shape": list(ebv.vectors.shape), "method": ebv.method,
                     "mapped": ebv.vectors.base is not None and not ebv.vectors.flags.owndata,
                     "files": sorted(f for f in os.listdir(cache) if f.endswith(".npz"))}
    # a set that differs between hosts under the same settings: every rank stops, same message
    import numpy as np
    from ebv_ms.ebv import EBVError, EBVSet, save_ebv
    mine = os.path.join(cache, "mine.npz")
    save_ebv(EBVSet(np.random.default_rng(rank).standard_normal((30, 16))), mine)
    cfg = load_config(args.config, [*args.overrides, "model.head=ebv", f"ebv.path={mine}",
                                    "model.num_classes=30", "model.embed_dim=16"])
    try:
        resolve_ebv(cfg, rank, progress=False)
        rec["differ"] = None
    except EBVError as exc:
        rec["differ"] = str(exc)
    with open(os.path.join(out, f"share_{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(rec, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

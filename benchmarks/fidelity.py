"""Benchmark: the paper's Table 1 / Table 2 in miniature, on printed Han characters (CPU).

    flock /tmp/ebv_heavy.lock python benchmarks/fidelity.py [--tables 1000,3755] [--seeds 3]

Data: ``ebv_ms.tools.make_glyphs`` archives (generated here when missing): the first N GB2312 level-1
characters rendered from 11 Debian typefaces for training, scored on one typeface held out of
training entirely (AR PL UMing), so top-1 is generalisation to an unseen typeface.

Every case trains the same backbone (``small_mlp``, 32x32 gray input, 1024-1024; a CNN is not
affordable with MindSpore 2.10's CPU convolution, see docs/fidelity.md) with the same recipe,
epochs and schedule, through the project's engine (``ebv_ms.engine.trainer.train(cfg)`` with
``configs/glyphs/n<N>.yaml`` plus overrides, the same thing ``train.py`` runs). Each head gets its
learning rate from the same grid (``--lrs``, seed 0; best top-1 wins, ties to the smaller lr),
then ``--seeds`` seeds at that lr (seed 0 reused from the grid). Cases:
  N=1000: fc, ebv at d=1000/500/200/100 (Table 2's shape), fixed_random_dot, fixed_random_cos (d=1000)
  N=3755: fc, ebv at d=1024 and d=256 (N > d)
EBV sets come from ``ebv.method: auto`` (closed form where one fits, else generated) and are
cached in ``ebv_cache/``; their generation is not counted in train seconds.

Printed per case: top-1 / top-5 on the held-out typeface (mean +- std over seeds), trainable
parameters (``ebv_ms.tools.params.parameter_report``), train seconds (sum of the epochs' wall time,
mean over seeds; compile included, evaluation excluded), the coherence max|cos| of the class
vectors (EBV set or the fixed random ones); then the commands that reproduce it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import sys
import time

SIZE = 32  # image side; configs/glyphs/*.yaml (data.image_size, backbone_kwargs.image_size) match
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TABLES = {
    1000: [("fc", None), ("ebv", 1000), ("ebv", 500), ("ebv", 200), ("ebv", 100),
           ("fixed_random_dot", 1000), ("fixed_random_cos", 1000)],
    3755: [("fc", None), ("ebv", 1024), ("ebv", 256)],
}


def case_name(head: str, dim) -> str:
    return head if dim is None else f"{head}_d{dim}"


def ensure_data(args, n: int) -> str:
    """The glyph archive for N classes (generated once; regenerated if its settings differ)."""
    import zipfile
    from ebv_ms.tools.make_glyphs import summary, write_glyph_archive
    per_class = args.per_class_1000 if n <= 1000 else args.per_class_3755
    out = os.path.join(args.data, f"n{n}")
    path = os.path.join(out, "glyphs.zip")
    want = {"num_classes": n, "per_class": per_class, "val_per_class": 1, "size": SIZE,
            "seed": 0, "quality": 90, "level2": False}
    if os.path.isfile(path):
        with zipfile.ZipFile(path) as z:
            have = json.loads(z.read("glyphs/manifest.json"))["settings"]
        if have == want:
            return path
    t0 = time.time()
    path, manifest = write_glyph_archive(out, n, per_class=per_class, size=SIZE)
    print(summary(path, manifest), f"\n  ({time.time() - t0:.0f} s)", flush=True)
    return path


def overrides_for(args, n: int, data_path: str, head: str, dim, lr: float, seed: int) -> list:
    o = [f"data.path={data_path}", f"model.head={head}", f"optim.lr={lr:g}", f"seed={seed}",
         f"output_dir={os.path.join(args.out, f'n{n}', case_name(head, dim), f'lr{lr:g}_s{seed}')}"]
    if dim is not None:
        o.append(f"model.embed_dim={dim}")
    if args.epochs is not None:
        o.append(f"train.epochs={args.epochs}")
    return o


def _finished(cfg) -> list:
    """The metrics records of a finished run of exactly ``cfg`` in its output_dir, else []."""
    import yaml
    try:
        with open(os.path.join(cfg.output_dir, "config.yaml")) as fh:
            same = yaml.safe_load(fh) == cfg.to_dict()
        with open(os.path.join(cfg.output_dir, "metrics.jsonl")) as fh:
            recs = [json.loads(ln) for ln in fh if ln.strip()]
    except (OSError, ValueError):
        return []
    done = same and recs and recs[-1].get("epoch") == int(cfg.train.epochs) and "top1" in recs[-1]
    return recs if done else []


def run_case(args, n: int, overrides: list) -> dict:
    """One training run in this process (or, with --reuse, the finished run of the same config
    already in its folder); returns top-1/top-5 and the summed epoch seconds."""
    from ebv_ms.config import load_config
    from ebv_ms.engine.trainer import train
    cfg = load_config(os.path.join(ROOT, f"configs/glyphs/n{n}.yaml"), overrides)
    recs = _finished(cfg) if args.reuse else []
    if not recs:
        os.makedirs(cfg.output_dir, exist_ok=True)
        metrics = os.path.join(cfg.output_dir, "metrics.jsonl")
        if os.path.isfile(metrics):
            os.remove(metrics)  # a fresh run, not a resume
        with open(os.path.join(cfg.output_dir, "console.txt"), "w") as fh, contextlib.redirect_stdout(fh):
            train(cfg)
        with open(metrics) as fh:
            recs = [json.loads(ln) for ln in fh if ln.strip()]
    last = recs[-1]
    return {"top1": float(last["top1"]), "top5": float(last["top5"]),
            "train_s": sum(r["epoch_seconds"] for r in recs), "cfg": cfg}


def class_vector_coherence(cfg) -> float:
    from ebv_ms.ebv import load_ebv
    from ebv_ms.ebv.metrics import coherence
    from ebv_ms.engine.ebv_source import ebv_cache_path
    from ebv_ms.models.heads import random_unit_vectors
    head = str(cfg.model.head)
    if head == "ebv":
        return coherence(load_ebv(ebv_cache_path(cfg)).vectors)
    if head.startswith("fixed_random"):
        return coherence(random_unit_vectors(int(cfg.model.num_classes), int(cfg.model.embed_dim),
                                             int(cfg.model.head_seed)))
    return float("nan")


def trainable(cfg) -> int:
    from ebv_ms.tools.params import parameter_report
    rep = parameter_report(cfg.model, heads=[str(cfg.model.head)])[str(cfg.model.head)]
    return sum(p.trainable for p in rep.values())


def fmt_ms(xs) -> str:
    m = statistics.mean(xs)
    s = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:5.1f} +- {s:3.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default="1000,3755", help="comma-separated N (1000, 3755)")
    ap.add_argument("--cases", default=None, help="only these cases, e.g. fc,ebv_d500")
    ap.add_argument("--lrs", default="0.05,0.2", help="learning-rate grid (default 0.05,0.2)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds at the chosen lr (default 3)")
    ap.add_argument("--epochs", type=int, default=None, help="override the configs' train.epochs")
    ap.add_argument("--per-class-1000", type=int, default=10, help="training images per class at N=1000")
    ap.add_argument("--per-class-3755", type=int, default=5, help="training images per class at N=3755")
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "glyphs"))
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "fidelity"))
    ap.add_argument("--reuse", action="store_true",
                    help="reuse finished runs of the identical config found in --out (extend a grid)")
    ap.add_argument("--json", default=None, help="also write the results here (default OUT/results.json)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # configs' relative ebv.cache_dir
    lrs = [float(x) for x in args.lrs.split(",")]
    args.json = args.json or os.path.join(args.out, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    only = set(args.cases.split(",")) if args.cases else None
    results = []
    t_start = time.time()
    for n in [int(x) for x in args.tables.split(",")]:
        if n not in TABLES:
            raise SystemExit(f"--tables: no table for N={n}; choose from {', '.join(map(str, TABLES))}")
        data_path = ensure_data(args, n)
        for head, dim in TABLES[n]:
            name = case_name(head, dim)
            if only and name not in only:
                continue
            grid = {}
            for lr in lrs:
                r = run_case(args, n, overrides_for(args, n, data_path, head, dim, lr, 0))
                grid[lr] = r
                print(f"  N={n} {name} lr={lr:g} seed 0: top-1 {r['top1']:.1f} ({r['train_s']:.0f} s)",
                      flush=True)
            best_lr = max(lrs, key=lambda lr: (grid[lr]["top1"], -lr))
            runs = [grid[best_lr]]
            for seed in range(1, args.seeds):
                r = run_case(args, n, overrides_for(args, n, data_path, head, dim, best_lr, seed))
                runs.append(r)
                print(f"  N={n} {name} lr={best_lr:g} seed {seed}: top-1 {r['top1']:.1f} "
                      f"({r['train_s']:.0f} s)", flush=True)
            cfg = runs[0]["cfg"]
            res = {"N": n, "case": name, "head": head, "d": dim, "lr": best_lr,
                   "grid_top1": {f"{k:g}": v["top1"] for k, v in grid.items()},
                   "top1": [r["top1"] for r in runs], "top5": [r["top5"] for r in runs],
                   "train_s": [r["train_s"] for r in runs], "trainable": trainable(cfg),
                   "coherence": class_vector_coherence(cfg),
                   "command": "python train.py -c " + f"configs/glyphs/n{n}.yaml " + " ".join(
                       shlex.quote(o) for o in overrides_for(args, n, os.path.relpath(data_path, ROOT),
                                                             head, dim, best_lr, 0)
                       if not o.startswith("output_dir="))}
            results.append(res)
            with open(args.json, "w") as fh:  # after every case: a partial run keeps its rows
                json.dump(results, fh, indent=1)
    print(f"\nfidelity benchmark: held-out typeface top-1/top-5 (%), mean +- std over {args.seeds} "
          f"seed(s) at each head's best lr from {args.lrs}; total {time.time() - t_start:.0f} s\n")
    print("| N | head | d | lr | top-1 | top-5 | trainable params | train s | coherence |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        coh = "-" if r["coherence"] != r["coherence"] else f"{r['coherence']:.3f}"
        print(f"| {r['N']} | {r['head']} | {r['d'] or '-'} | {r['lr']:g} | {fmt_ms(r['top1'])} | "
              f"{fmt_ms(r['top5'])} | {r['trainable']:,} | {statistics.mean(r['train_s']):.0f} | {coh} |")
    print("\nreproduce (seed 0 of each case; seed=1,2 for the others), after writing the data with:")
    for n in sorted({r["N"] for r in results}):
        pc = args.per_class_1000 if n <= 1000 else args.per_class_3755
        print(f"  python -m ebv_ms.tools.make_glyphs --out {os.path.relpath(args.data, ROOT)}/n{n} "
              f"--classes {n} --per-class {pc}")
    for r in results:
        print(f"  {r['command']}")
    print("\nthis table: flock /tmp/ebv_heavy.lock python benchmarks/fidelity.py "
          + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

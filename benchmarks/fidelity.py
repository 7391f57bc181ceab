"""Benchmark: the paper's Table 1 / Table 2 in miniature, on printed Han characters (CPU).

    python benchmarks/fidelity.py [--tables 1000,3755] [--seeds 3] [--long-epochs 16] [--init-grid]

Data: ``ebv_ms.tools.make_glyphs`` archives (generated here when missing): the first N GB2312 level-1
characters rendered from 11 Debian typefaces for training, scored on one typeface held out of
training entirely (AR PL UMing), so top-1 is generalisation to an unseen typeface.

Every case trains the same backbone (``small_mlp``, 32x32 gray input, 1024-1024; a CNN is not
affordable with MindSpore 2.10's CPU convolution, see docs/fidelity.md) with the same recipe,
through the project's engine (``ebv_ms.engine.trainer.train(cfg)`` with
``configs/glyphs/n<N>.yaml`` plus overrides, the same thing ``train.py`` runs).

The short schedule (the configs' 4 / 3 epochs; ``--tables none`` skips it): each head gets its
learning rate from the same grid (``--lrs``, seed 0; best top-1 wins, ties to the smaller lr),
then ``--seeds`` seeds at that lr (seed 0 reused from the grid). Cases:
  N=1000: fc, ebv at d=1000/500/200/100 (Table 2's shape), fixed_random_dot, fixed_random_cos (d=1000)
  N=3755: fc, ebv at d=1024 and d=256 (N > d)
Printed per case: top-1 / top-5 on the held-out typeface (mean +- std over seeds), trainable
parameters, train seconds (sum of the epochs' wall time, compile included, evaluation excluded),
the coherence max|cos| of the class vectors; then the commands that reproduce it.

The long schedule (``--long-epochs``, N=1000, one lr for every head, evaluated every epoch; long
enough that FC's held-out top-1 moves by less than 1 point over its last quarter, which it
prints): per case the held-out top-1 next to the training-set top-1 (``eval.py --split train``
on the last checkpoint), the initial loss, and the end of the slow start: the first epoch whose
mean training loss is below log N - 1 (and, finer, the first 10-step mean below it). It writes
the accuracy-vs-epoch and loss-vs-epoch plots (``--plots``). ``--variant TAG:KEY=VAL,...`` adds
the EBV cases again with those overrides (a slow-start remedy). ``--init-grid``: the loss of the
untrained network against log N for each d and tau.

EBV sets come from ``ebv.method: auto`` (closed form where one fits, else generated) and are
cached in ``ebv_cache/``; their generation is not counted. ``--reuse`` takes finished runs of the
identical config from ``--out`` instead of training them again.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import sys
import time

SIZE = 32  # image side; configs/glyphs/*.yaml (data.image_size, backbone_kwargs.image_size) match
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

LONG_CASES = ("fc", "ebv_d1000", "ebv_d500", "ebv_d200", "ebv_d100")
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


def overrides_for(args, n: int, data_path: str, head: str, dim, lr: float, seed: int,
                  epochs=None, extra=(), tag: str = "") -> list:
    """train(cfg) overrides of one run; ``epochs`` set: the long schedule (evaluated every epoch)."""
    folder = os.path.join(args.out, f"n{n}", f"e{epochs}" if epochs else "",
                          case_name(head, dim) + tag, f"lr{lr:g}_s{seed}")
    o = [f"data.path={data_path}", f"model.head={head}", f"optim.lr={lr:g}", f"seed={seed}",
         f"output_dir={folder}"]
    if dim is not None:
        o.append(f"model.embed_dim={dim}")
    if epochs or args.epochs is not None:
        o.append(f"train.epochs={epochs or args.epochs}")
    if epochs:
        o.append("train.eval_interval=1")
    return o + list(extra)


def _finished(cfg) -> list:
    """The metrics records of a finished run of exactly ``cfg`` in its output_dir, else []."""
    from ebv_ms.config import load_config
    try:  # through load_config: a key added to the schema since then compares at its default
        same = load_config(os.path.join(cfg.output_dir, "config.yaml")).to_dict() == cfg.to_dict()
        with open(os.path.join(cfg.output_dir, "metrics.jsonl")) as fh:
            recs = [json.loads(ln) for ln in fh if ln.strip()]
    except (OSError, ValueError):  # ConfigError is a ValueError
        return []
    done = same and recs and recs[-1].get("epoch") == int(cfg.train.epochs) and "top1" in recs[-1]
    return recs if done else []


class _ProjectionNorm:
    """Callback (benchmark probe, not production code): the projection's weight norm ||W||_F
    before training and after every epoch; a normalised head's angular step scales as 1/||W||^2."""

    def __init__(self):
        self.norms = []

    def _norm(self, trainer):
        import numpy as np
        net = trainer.network
        if not getattr(net, "has_projection", False):
            return None
        return float(np.linalg.norm(net.projection.weight.asnumpy()))

    def on_train_begin(self, trainer):
        self.norms = [self._norm(trainer)]

    def on_train_step(self, trainer, global_step, batch):
        pass

    def on_epoch_end(self, trainer, epoch, record):
        self.norms.append(self._norm(trainer))

    def on_train_end(self, trainer, result):
        pass


def _step_losses(console: str) -> list:
    """Per-step training losses from the run's console (train.log_interval=1)."""
    import re
    pat = re.compile(r"epoch \d+ step \d+/\d+ loss ([0-9.eE+-]+|nan|inf)")
    with open(console) as fh:
        return [float(m.group(1)) for m in map(pat.search, fh) if m]


def run_case(args, n: int, overrides: list, curves: bool = False) -> dict:
    """One training run in this process (or, with --reuse, the finished run of the same config
    already in its folder); returns top-1/top-5 and the summed epoch seconds. ``curves``: also
    the per-epoch loss and top-1, per-step losses, projection norms and the training-set top-1
    (``eval.py --split train`` on last.ckpt)."""
    from ebv_ms.config import load_config
    from ebv_ms.engine.trainer import train
    if curves:
        overrides = overrides + ["train.log_interval=1"]
    cfg = load_config(os.path.join(ROOT, f"configs/glyphs/n{n}.yaml"), overrides)
    recs = _finished(cfg) if args.reuse else []
    extra_path = os.path.join(cfg.output_dir, "curves.json")
    if curves and recs and not os.path.isfile(extra_path):
        recs = []
    if not recs:
        shutil.rmtree(cfg.output_dir, ignore_errors=True)  # a fresh run, not a resume
        os.makedirs(cfg.output_dir)
        metrics = os.path.join(cfg.output_dir, "metrics.jsonl")
        probe = _ProjectionNorm()
        with open(os.path.join(cfg.output_dir, "console.txt"), "w") as fh, contextlib.redirect_stdout(fh):
            train(cfg, callbacks=[probe] if curves else ())
            if curves:
                import eval as eval_cli  # the project's eval.py, in this process
                tr = eval_cli.run(eval_cli.parse_args([
                    "--ckpt", os.path.join(cfg.output_dir, "last.ckpt"), "--split", "train", "--no-progress"]))
        with open(metrics) as fh:
            recs = [json.loads(ln) for ln in fh if ln.strip()]
        if curves:
            extra = {"train_top1": tr["top1"], "projection_norm": probe.norms,
                     "step_loss": _step_losses(os.path.join(cfg.output_dir, "console.txt"))}
            with open(extra_path, "w") as fh:
                json.dump(extra, fh)
    last = recs[-1]
    out = {"top1": float(last["top1"]), "top5": float(last["top5"]),
           "train_s": sum(r["epoch_seconds"] for r in recs), "cfg": cfg}
    if curves:
        with open(extra_path) as fh:
            out.update(json.load(fh))
        out["epoch_loss"] = [r["train_loss"] for r in recs]
        out["epoch_top1"] = [r.get("top1") for r in recs]
    return out


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
    ap.add_argument("--long-epochs", type=int, default=16,
                    help="the long schedule at N=1000 (evaluated every epoch; 0: skip it)")
    ap.add_argument("--long-lr", type=float, default=0.2, help="its learning rate (every head)")
    ap.add_argument("--long-seeds", default="0", help="its seeds, comma-separated")
    ap.add_argument("--long-cases", default=",".join(LONG_CASES), help="its cases")
    ap.add_argument("--variant", action="append", default=[], metavar="TAG:KEY=VAL[,KEY=VAL]",
                    help="also run the long schedule's EBV cases with these overrides, e.g. "
                         "tau0.2:model.tau=0.2 (repeatable)")
    ap.add_argument("--variants-only", action="store_true", help="skip the long schedule's plain cases")
    ap.add_argument("--init-grid", action="store_true", help="also the initial loss for each d and tau")
    ap.add_argument("--init-dims", default="100,200,500,1000", help="d of --init-grid")
    ap.add_argument("--init-taus", default="0.035,0.07,0.14,0.2", help="tau of --init-grid")
    ap.add_argument("--plots", default=os.path.join(ROOT, "docs", "img"),
                    help="folder of the long schedule's PNG plots")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # configs' relative ebv.cache_dir
    lrs = [float(x) for x in args.lrs.split(",")]
    args.json = args.json or os.path.join(args.out, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    only = set(args.cases.split(",")) if args.cases else None
    results = []
    t_start = time.time()
    for n in [int(x) for x in args.tables.split(",") if x != "none"]:
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
    if results:
        print_short(args, results, t_start)
    if args.init_grid:
        init_loss_grid(args)
    if args.long_epochs:
        t_long = time.time()
        long_rows = long_schedule(args)
        print(f"\nlong schedule: {time.time() - t_long:.0f} s")
        with open(args.json, "w") as fh:
            json.dump(results + long_rows, fh, indent=1)
    print(f"\nwhole run: {time.time() - t_start:.0f} s; this run: python benchmarks/fidelity.py "
          + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    return 0


def print_short(args, results, t_start) -> None:
    print(f"\nfidelity benchmark: held-out typeface top-1/top-5 (%), mean +- std over {args.seeds} "
          f"seed(s) at each head's best lr from {args.lrs}; {time.time() - t_start:.0f} s\n")
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


def first_below(losses, level: float):
    """1-based index of the first value below ``level`` (None: never)."""
    return next((i + 1 for i, x in enumerate(losses) if x < level), None)


def long_schedule(args) -> list:
    """The N=1000 cases at --long-epochs: held-out and training-set top-1, the end of the slow
    start (first epoch whose mean training loss is below log N - 1), curves and plots."""
    import math
    n = 1000
    data_path = ensure_data(args, n)
    names = {case_name(h, d): (h, d) for h, d in TABLES[n]}
    seeds = [int(x) for x in args.long_seeds.split(",")]
    variants = [] if args.variants_only else [("", [])]
    variants += [("+" + v.split(":", 1)[0], v.split(":", 1)[1].split(","))
                             for v in args.variant]
    level = math.log(n) - 1
    rows = []
    for tag, extra in variants:
        for name in args.long_cases.split(","):
            head, dim = names[name]
            if tag and head != "ebv":
                continue
            runs = []
            for seed in seeds:
                ov = overrides_for(args, n, data_path, head, dim, args.long_lr, seed,
                                   epochs=args.long_epochs, extra=extra, tag=tag)
                r = run_case(args, n, ov, curves=True)
                r["plateau"] = first_below(r["epoch_loss"], level)
                # finer: the first step whose mean over the last 10 steps is below the level
                k = 10
                sl = r["step_loss"]
                avg = [sum(sl[i - k + 1:i + 1]) / k for i in range(k - 1, len(sl))]
                hit = first_below(avg, level)
                r["plateau_steps"] = None if hit is None else round((hit + k - 1) / (len(sl) / args.long_epochs), 2)
                r["command"] = "python train.py -c configs/glyphs/n1000.yaml " + " ".join(
                    shlex.quote(o) for o in ov if not o.startswith(("output_dir=", "data.path=")))
                runs.append(r)
                print(f"  long {name}{tag} seed {seed}: top-1 {r['top1']:.1f}, train top-1 "
                      f"{r['train_top1']:.1f}, loss {r['step_loss'][0]:.2f} -> {r['epoch_loss'][-1]:.2f}, "
                      f"below log N - 1 in epoch {r['plateau']} (step mean: {r['plateau_steps']} epochs; "
                      f"{r['train_s']:.0f} s)", flush=True)
            rows.append({"N": n, "case": name + tag, "head": head, "d": dim, "lr": args.long_lr,
                         "epochs": args.long_epochs, "seeds": seeds, "overrides": extra,
                         **{k: [r[k] for r in runs] for k in (
                             "top1", "top5", "train_top1", "plateau", "plateau_steps", "train_s", "epoch_loss",
                             "epoch_top1", "projection_norm", "command")},
                         "initial_loss": [r["step_loss"][0] for r in runs]})
    print(f"\nlong schedule, N={n}: {args.long_epochs} epochs, lr {args.long_lr:g}, seeds {seeds}; "
          f"slow start = first epoch whose mean training loss < log N - 1 = {level:.2f}\n")
    print("| case | held-out top-1 | training-set top-1 | initial loss | slow start: epoch | "
          "slow start: epochs (10-step mean) | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        pl = ", ".join("-" if p is None else str(p) for p in r["plateau"])
        ps = ", ".join("-" if p is None else f"{p:.1f}" for p in r["plateau_steps"])
        print(f"| {r['case']} | {fmt_ms(r['top1'])} | {fmt_ms(r['train_top1'])} | "
              f"{statistics.mean(r['initial_loss']):.2f} | {pl} | {ps} | {statistics.mean(r['train_s']):.0f} |")
    for r in rows:
        if r["head"] == "fc":
            q = max(args.long_epochs // 4, 1)
            ch = [abs(t[-1] - t[-1 - q]) for t in r["epoch_top1"]]
            print(f"\nfc convergence: held-out top-1 changed by {max(ch):.1f} points over the last "
                  f"{q} epochs ({'<' if max(ch) < 1 else '>='} 1)")
    print("\nreproduce one run (seed 0):")
    for r in rows:
        print(f"  {r['command'][0]}")
    plot_long(args, rows, level)
    return rows


def init_loss_grid(args) -> None:
    """The slow start's cause, at initialisation: cross-entropy of the untrained network on the
    first training batch (train mode, as the first step sees it) against log N, for each d and
    tau, next to the spread 1/(tau sqrt d) of the logits and log N + spread^2 / 2 (the loss of
    Gaussian logits with that spread and the target logit at 0)."""
    import math
    from ebv_ms.config import load_config
    from ebv_ms.engine.builders import build_data, build_network, setup_context
    from ebv_ms.engine.ebv_source import resolve_ebv
    from ebv_ms.loss import create_loss
    n = 1000
    data_path = ensure_data(args, n)
    dims = [int(x) for x in args.init_dims.split(",")]
    taus = [float(x) for x in args.init_taus.split(",")]
    print(f"\ninitial training loss (seed 0, first batch of 256), N={n}, log N = {math.log(n):.2f}\n")
    print("| d | tau | spread 1/(tau sqrt d) | log N + spread^2/2 | measured |")
    print("|---:|---:|---:|---:|---:|")
    for d in dims:
        for tau in taus:
            cfg = load_config(os.path.join(ROOT, "configs/glyphs/n1000.yaml"),
                              [f"data.path={data_path}", f"model.embed_dim={d}", f"model.tau={tau:g}"])
            setup_context(cfg)
            net = build_network(cfg, resolve_ebv(cfg, progress=False))
            net.set_train(True)
            ds, _ = build_data(cfg, "train", int(cfg.train.batch_size), True)
            batch = next(ds.create_dict_iterator(num_epochs=1))
            loss = float(create_loss()(net(batch["image"]), batch["label"]).asnumpy())
            spread = 1 / (tau * math.sqrt(d))
            print(f"| {d} | {tau:g} | {spread:.2f} | {math.log(n) + spread ** 2 / 2:.2f} | {loss:.2f} |")


def plot_long(args, rows, level) -> None:
    """Held-out top-1 and training loss per epoch, one line per case (mean over seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(args.plots, exist_ok=True)
    for key, ylabel, fname in (("epoch_top1", "held-out top-1 (%)", "fidelity_top1.png"),
                               ("epoch_loss", "training loss (epoch mean)", "fidelity_loss.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=64)
        for i, r in enumerate(rows):
            ys = [statistics.mean(v) for v in zip(*r[key])]
            ax.plot(range(1, len(ys) + 1), ys, label=r["case"], color=f"C{LONG_CASES.index(r['case'].split('+')[0]) if r['case'].split('+')[0] in LONG_CASES else i}",
                    linestyle="--" if "+" in r["case"] else "-", marker=".")
        if key == "epoch_loss":
            ax.axhline(level + 1, color="grey", linewidth=0.8, linestyle=":")
            ax.axhline(level, color="grey", linewidth=0.8, linestyle="-.")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"N=1000, small_mlp, {args.long_epochs} epochs, lr {args.long_lr:g}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(args.plots, fname)
        fig.savefig(path)
        plt.close(fig)
        print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Host memory and checkpoint cost of the EBV set at the 100k-class shape (issue 9 §2/§3).

    flock /tmp/ebv_heavy.lock python benchmarks/ebv_memory.py [--before-tree DIR] [--classes 100000]

Makes the set once (``python -m ebv_ms.tools.make_ebv``), times ``load_ebv`` of the cached file
in a fresh process, then runs ``train.py --config configs/10w_classes.yaml`` on CPU (one rank) with the small backbone,
32 px images and a tiny list-file zip whose labels reach ``--classes - 1`` (so the model has
100,000 classes and the EBV set is 100,000 x 5,000 = 2.0 GB, the padded Kerdock closed form),
2 epochs; then ``eval.py --ckpt best.ckpt``; then times ``save_checkpoint`` of that run's network
twice in a fresh folder (the first call also writes the EBV file, later ones are the per-epoch
cost). Peak resident memory is each process's ``ru_maxrss`` (``os.wait4``). ``--before-tree``
runs the same commands from another checkout (e.g. ``git worktree add DIR COMMIT``)
side by side; without it the "before" column quotes issue 9's measurements.
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
ISSUE = {"train_peak_gb": 8.35, "eval_peak_gb": 6.4, "ckpt_mb": 2.0 * 1024}  # issue 9, measured


def make_archive(path: str, num_classes: int, n_train: int = 32, n_val: int = 16) -> str:
    """A list-file zip: a few real JPEGs whose labels include ``num_classes - 1``."""
    import numpy as np
    from ebv_ms.tools.make_synthetic import encode, write_zip
    rng = np.random.default_rng(0)
    members, lists = {}, {}
    for split, n in (("train", n_train), ("val", n_val)):
        labels = rng.integers(0, num_classes, n)
        labels[0] = num_classes - 1
        rows = []
        for i, y in enumerate(labels):
            members[f"{split}/{i:05d}.jpg"] = encode(np.full((32, 32, 3), 20 + 20 * (int(y) % 12), np.uint8))
            rows.append(f"{split}/{i:05d}.jpg {int(y)}")
        lists[f"{split}.txt"] = ("\n".join(rows) + "\n").encode()
    members.update(lists)
    return write_zip(path, members)


def run(cmd, tree: str, cwd: str) -> dict:
    """Run ``cmd`` with ``tree`` on PYTHONPATH; peak RSS of that process (GB) and seconds."""
    env = dict(os.environ, PYTHONPATH=tree, GLOG_v="3")
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{out[-4000:]}")
    return {"peak_gb": usage.ru_maxrss / 2 ** 20, "seconds": time.time() - t0, "out": out}


LOAD_PROBE = r"""
import sys, time
from ebv_ms.ebv import load_ebv
t0 = time.perf_counter()
ebv = load_ebv(sys.argv[1])
ebv.checksum()  # verified (the native format checks it on load; cached)
print("LOAD", time.perf_counter() - t0)
"""

SAVE_PROBE = r"""
import json, os, sys, time
from ebv_ms.engine import checkpoint as C
run_dir, dst = sys.argv[1], sys.argv[2]
state = C.load_checkpoint(os.path.join(run_dir, "last.ckpt"))
cfg = C.checkpoint_config(state)
net, ebv = C.network_from_checkpoint(state, cfg)
times = []
for name in ("first.ckpt", "second.ckpt"):
    t0 = time.time()
    C.save_checkpoint(os.path.join(dst, name), net, None, epoch=1, global_step=1, config=cfg, ebv=ebv)
    times.append(time.time() - t0)
print("SAVE " + json.dumps({"first_s": times[0], "later_s": times[1]}))
"""


def measure(tree: str, work: str, archive: str, classes: int) -> dict:
    out = os.path.join(work, "run")
    common = ["device_target=CPU", "model.backbone=small_cnn", f"model.num_classes={classes}",
              f"data.path={archive}", "data.image_size=32", "data.eval_resize=32",
              "data.eval_crop=32", "data.num_workers=1", "train.batch_size=16",
              "eval.batch_size=16", "train.epochs=2", "train.progress_bar=false",
              f"ebv.cache_dir={os.path.join(work, 'ebv_cache')}"]
    config = os.path.join(tree, "configs", "10w_classes.yaml")
    # the set is made once (as by a first job), so train.py and eval.py load it from the cache
    gen = run([sys.executable, "-m", "ebv_ms.tools.make_ebv", "--config", config, *common],
              tree, work)
    (cached,) = [os.path.join(work, "ebv_cache", f) for f in os.listdir(os.path.join(work, "ebv_cache"))
                 if f.endswith(".npz")]
    ld = run([sys.executable, "-c", LOAD_PROBE, cached], tree, work)
    tr = run([sys.executable, os.path.join(tree, "train.py"), "--config", config,
              f"output_dir={out}", *common], tree, work)
    ev = run([sys.executable, os.path.join(tree, "eval.py"), "--ckpt",
              os.path.join(out, "best.ckpt"), "--no-progress"], tree, work)
    sizes = {f: os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
             if f.endswith((".ckpt", ".npz"))}
    dst = os.path.join(work, "save_probe")
    os.makedirs(dst)
    sp = run([sys.executable, "-c", SAVE_PROBE, out, dst], tree, work)
    save = json.loads(sp["out"].split("SAVE ", 1)[1].splitlines()[0])
    return {"gen_peak_gb": gen["peak_gb"], "gen_s": gen["seconds"],
            "load_peak_gb": ld["peak_gb"],
            "load_s": float(ld["out"].split("LOAD ", 1)[1].split()[0]),
            "train_peak_gb": tr["peak_gb"], "train_s": tr["seconds"],
            "eval_peak_gb": ev["peak_gb"], "eval_s": ev["seconds"],
            "ckpt_mb": sizes["last.ckpt"] / 2 ** 20, "best_mb": sizes.get("best.ckpt", 0) / 2 ** 20,
            "ebv_file_mb": sum(v for k, v in sizes.items() if k.endswith(".npz")) / 2 ** 20,
            "save_first_s": save["first_s"], "save_later_s": save["later_s"],
            "save_probe_peak_gb": sp["peak_gb"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=100_000)
    ap.add_argument("--before-tree", default=None, help="another checkout, measured the same way")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    base = args.work or tempfile.mkdtemp(prefix="ebv_memory_")
    archive = make_archive(os.path.join(base, "tiny_lists.zip"), args.classes)
    results = {}
    try:
        trees = [("after", ROOT)] + ([("before", args.before_tree)] if args.before_tree else [])
        for label, tree in trees:
            work = os.path.join(base, label)
            os.makedirs(work)
            results[label] = measure(os.path.abspath(tree), work, archive, args.classes)
            shutil.rmtree(work)  # several GB of checkpoints and sets
    finally:
        if not args.work:
            shutil.rmtree(base, ignore_errors=True)
    after, before = results["after"], results.get("before")
    src = "measured" if before else "issue 9"
    before = before or ISSUE
    rows = [("make the set + cache it: peak RSS (GB)", "gen_peak_gb"), ("... wall (s)", "gen_s"),
            ("load_ebv of the cached set, fresh process: peak RSS (GB)", "load_peak_gb"),
            ("... load time incl. checksum (s)", "load_s"),
            ("train.py peak RSS, set from the cache (GB)", "train_peak_gb"),
            ("eval.py peak RSS (GB)", "eval_peak_gb"),
            ("last.ckpt (MB)", "ckpt_mb"), ("best.ckpt (MB)", "best_mb"),
            ("EBV file next to the checkpoints (MB, once)", "ebv_file_mb"),
            ("save_checkpoint, first (s)", "save_first_s"),
            ("save_checkpoint, each later one (s)", "save_later_s"),
            ("train.py wall (s, 2 tiny epochs)", "train_s"), ("eval.py wall (s)", "eval_s")]
    print(f"\nEBV set {args.classes:,} x 5,000 (configs/10w_classes.yaml, CPU, small_cnn, 32 px, 1 rank)")
    print(f"| what | before ({src}) | after | after / before |")
    print("| --- | ---: | ---: | ---: |")
    for name, key in rows:
        b, a = before.get(key), after[key]
        ratio = f"{a / b:.3f}" if b else "-"
        print(f"| {name} | {'-' if b is None else f'{b:.2f}'} | {a:.2f} | {ratio} |")
    print("\ncommand: flock /tmp/ebv_heavy.lock python benchmarks/ebv_memory.py "
          + " ".join(a for a in (argv if argv is not None else sys.argv[1:])))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"classes": args.classes, "before_source": src, "before": before,
                       "after": after}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

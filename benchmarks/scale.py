#!/usr/bin/env python
"""The rehearsal of the 100k-class job: configs/10w_classes.yaml through the real launcher, per rank.

    flock /tmp/ebv_heavy.lock python benchmarks/scale.py [--ranks 1,2] [--epochs 2]

1. Writes an archive in the layout of the authors' 10w_classes.zip, read in place: 100,000 class
   folders ``10w_classes/train/<class>/`` holding tiny 32 px JPEGs, and list files
   (``10w_classes/train.txt``, ``val.txt``: ``path label``) naming a subset: ``--listed-classes``
   classes spread over 0..99,999 (the last one included, so the lists give 100,000 classes)
   with 12 train / 6 val images each, the real archive's per-class counts. The data layout is
   therefore the lists layout (ebv_ms/data/layouts.py), the model the full 100,000 x 5,000 EBV
   head; only the number of images is cut, so an epoch takes seconds instead of hours.
2. Runs ``DEVICE_TARGET=CPU bash scripts/run_distribute_gpu.sh configs/10w_classes.yaml N
   key=value ...`` for each N of ``--ranks``: small backbone (model.backbone=small_cnn), 32 px
   images, ``--epochs`` epochs with the per-epoch evaluation. The first run generates the EBV set
   into a fresh cache; later runs load it from there, as a second job would.
3. Reads per rank what the run logged (metrics.jsonl, train.log, logs/rank_K.log) and measures
   what it does not log from outside: peak resident memory (each rank's interpreter is started
   by a wrapper given as PYTHON that records ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the
   kernel's high-water mark, when the rank exits), checkpoint bytes (file sizes), and the
   checkpoint write time as last.ckpt's mtime minus the time of the metrics record written just
   before it. Figures the code does not log yet are printed as "not logged".

Prints a table and the command that reproduced it. Needs several GB per rank at 100k x 5000 and
writes 2 GB checkpoints to ``--tmp``: run it under the shared lock.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/10w_classes.yaml"
LAUNCH = "scripts/run_distribute_gpu.sh"
NUM_CLASSES = 100_000
PER_CLASS = {"train": 12, "val": 6}  # the real archive: 1.2M train / 600k val for 100k classes

# PYTHON for the launcher. A rank (MS_ROLE=MS_WORKER, set by scripts/mpirun_rank.sh) runs as a
# child of a small waiter that writes the child's peak RSS when it exits; the scheduler and the
# launcher's own helper calls run unchanged.
WRAPPER = """#!/usr/bin/env bash
if [[ "${MS_ROLE:-}" == MS_WORKER ]]; then
  exec %(py)s -c %(snippet)s "%(out)s/memory_rank_${RANK_ID}.json" %(py)s "$@"
fi
exec %(py)s "$@"
"""
SNIPPET = """
import json, resource, signal, subprocess, sys, threading, time
p = subprocess.Popen(sys.argv[2:])
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda *_: p.terminate())
samples = []
def sample():  # RSS and PSS (shared pages counted once per sharer) every 0.5 s
    while p.poll() is None:
        try:
            kb = {}
            for line in open(f"/proc/{p.pid}/smaps_rollup"):
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss"):
                    kb[k] = int(v.split()[0])
            samples.append((round(time.time(), 1), kb["Rss"], kb["Pss"]))
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.5)
threading.Thread(target=sample, daemon=True).start()
rc = p.wait()
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
               "samples": samples}, f)
sys.exit(rc if rc >= 0 else 128 - rc)
"""


# ------------------------------------------------------------------------------------ archive
def write_archive(path: str, listed_classes: int, side: int, num_classes: int = NUM_CLASSES,
                  seed: int = 0) -> dict:
    """The 100k layout with list files for ``listed_classes`` classes; returns what it wrote."""
    from ebv_ms.tools.make_synthetic import encode
    rng = np.random.default_rng(seed)
    listed = np.unique(np.linspace(0, num_classes - 1, listed_classes).round().astype(int))
    listed_set = set(listed.tolist())
    filler = encode(np.full((side, side, 3), 128, np.uint8))  # the unlisted folders' one image
    lines = {"train": [], "val": []}
    members = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        def put(name, data):
            nonlocal members
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
            members += 1
        for c in range(num_classes):
            if c not in listed_set:
                put(f"10w_classes/train/{c:05d}/{c:05d}_00.jpg", filler)
                continue
            for split, n in PER_CLASS.items():
                for k in range(n):
                    rel = f"{split}/{c:05d}/{c:05d}_{k:02d}.jpg"
                    img = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
                    put(f"10w_classes/{rel}", encode(img))
                    lines[split].append(f"{rel} {c}")
        for split, ls in lines.items():
            put(f"10w_classes/{split}.txt", ("\n".join(ls) + "\n").encode())
    return {"members": members, "listed_classes": len(listed), "train": len(lines["train"]),
            "val": len(lines["val"]), "bytes": os.path.getsize(path)}


# ------------------------------------------------------------------------------------ one run
def overrides(tmp: str, out: str, args) -> list:
    ov = [f"output_dir={out}", f"data.path={os.path.join(tmp, '10w_classes.zip')}",
          "model.backbone=small_cnn", f"data.image_size={args.side}",
          f"data.eval_resize={args.side}", f"data.eval_crop={args.side}",
          f"data.num_workers={args.workers}", f"ebv.cache_dir={os.path.join(tmp, 'ebv_cache')}",
          f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
          f"eval.batch_size={args.batch_size}", "scheduler.warmup_epochs=0",
          "train.progress_bar=false"]
    if args.num_classes != NUM_CLASSES:  # smoke test of this script at a small shape
        ov += [f"model.num_classes={args.num_classes}", f"model.embed_dim={args.embed_dim}",
               f"ebv.alpha={args.alpha}"]
    return ov


def launch(tmp: str, ranks: int, args) -> dict:
    out = os.path.join(tmp, f"run_{ranks}")
    rss_dir = os.path.join(out, "peak_rss")
    os.makedirs(rss_dir, exist_ok=True)
    wrapper = os.path.join(tmp, "python_peak_rss.sh")
    with open(wrapper, "w") as f:
        f.write(WRAPPER % {"py": shlex.quote(sys.executable), "snippet": shlex.quote(SNIPPET),
                           "out": rss_dir})
    os.chmod(wrapper, 0o755)
    cmd = ["bash", os.path.join(args.tree, LAUNCH), CONFIG, str(ranks), *overrides(tmp, out, args)]
    env = dict(os.environ, DEVICE_TARGET="CPU", PYTHON=wrapper, GLOG_v="2", PYTHONPATH=args.tree)
    env.pop("MS_ROLE", None)
    print(f"[scale] {ranks} rank(s): DEVICE_TARGET=CPU {' '.join(map(shlex.quote, cmd))}",
          flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, cwd=args.tree, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    failed = None
    if r.returncode != 0:  # reported in the table with what the run logged before it failed
        failed = next((line.strip() for line in r.stderr.splitlines() if "failed with exit" in line),
                      f"exit status {r.returncode}")
        errs = [line for line in r.stderr.splitlines() if "[ERROR]" in line or "Error" in line]
        print(f"[scale] the {ranks}-rank run FAILED: {failed}\n  " + "\n  ".join(errs[:4]),
              file=sys.stderr)
    return {"ranks": ranks, "out": out, "wall": wall, "failed": failed,
            "per_rank": read_run(out, ranks)}


def _float(pattern: str, text: str):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def read_run(out: str, ranks: int) -> list:
    jsonl = os.path.join(out, "metrics.jsonl")
    records = [json.loads(line) for line in open(jsonl)] if os.path.isfile(jsonl) else []
    records = records or [{"time": float("nan")}]
    ckpts = {os.path.basename(p): os.path.getsize(p) for p in glob.glob(os.path.join(out, "*.ckpt"))}
    # anything else of size written next to the checkpoints (e.g. an EBV file written once)
    others = {os.path.relpath(p, out): os.path.getsize(p)
              for p in glob.glob(os.path.join(out, "**", "*"), recursive=True)
              if os.path.isfile(p) and not p.endswith(".ckpt") and os.path.getsize(p) > 1 << 20
              and "/logs/" not in p}
    last = os.path.join(out, "last.ckpt")
    write_s = records[-1].get("checkpoint_seconds")
    write_how = "logged"
    if write_s is None and os.path.isfile(last) and "epoch" in records[-1]:
        write_s = os.path.getmtime(last) - float(records[-1]["time"])
        write_how = "derived"
    rows = []
    for k in range(ranks):
        path = os.path.join(out, "logs", f"rank_{k}.log")
        log = open(path, errors="replace").read() if os.path.isfile(path) else ""
        epochs = {}
        for m in re.finditer(r"\] INFO epoch (\d+)/\d+: (.*)", log):
            epochs[int(m.group(1))] = m.group(2)
        gen = _float(r"EBV set generated in ([\d.]+) s", log)
        if gen is not None:
            ebv = f"generated {gen:.1f} s"
        elif "reused from cache" in log or "EBV set loaded from" in log or "waiting for rank 0" in log:
            t = _float(r"EBV set (?:reused from cache|loaded from)[^\n]*? in ([\d.]+) s", log)
            ebv = f"loaded {t:.1f} s" if t is not None else "loaded (time not logged)"
        elif "received from rank 0" in log or "mapped from" in log:
            t = _float(r"received from rank 0 in ([\d.]+) s", log)
            ebv = f"received {t:.1f} s" if t is not None else "mapped (saved by a neighbour)"
        else:
            ebv = "?"
        mem = {"maxrss_kb": None, "samples": []}
        p = os.path.join(out, "peak_rss", f"memory_rank_{k}.json")
        if os.path.isfile(p):
            mem = json.load(open(p))
        pss = [smp[2] for smp in mem["samples"]]
        train_s = [_float(r"epoch_seconds=([\d.e+-]+)", epochs[e]) for e in sorted(epochs)]
        row = {"rank": k, "peak_rss_gb": mem["maxrss_kb"] / 1024 ** 2 if mem["maxrss_kb"] else None,
               "peak_pss_gb": max(pss) / 1024 ** 2 if pss else None, "samples": mem["samples"],
               "ebv": ebv, "train_s": train_s}
        if k == 0:
            row["eval_s"] = [r.get("eval_seconds", r["eval_samples"] / r["eval_images_per_s"]
                                   if r.get("eval_images_per_s") else None)
                             for r in records if "epoch" in r]
            row["eval_how"] = "logged" if "eval_seconds" in records[-1] else "derived"
            row["eval_samples"] = records[-1].get("eval_samples")
            per_rank = records[-1].get("eval_samples_per_rank")
            row["ckpt"] = ckpts
            row["others"] = others
            row["ckpt_write_s"], row["ckpt_write_how"] = write_s, write_how
            row["top1"] = records[-1].get("top1")
        else:
            per_rank = records[-1].get("eval_samples_per_rank")
            row["eval_s"] = _float(r"eval_seconds=([\d.e+-]+)", epochs[max(epochs)]) if epochs else None
        row["eval_samples_rank"] = (per_rank[k] if isinstance(per_rank, list) and k < len(per_rank)
                                    else None)
        rows.append(row)
    return rows


def time_ebv_load(tmp: str, tree: str) -> float:
    """Seconds for load_ebv of the cached set in a fresh process (loading is not logged)."""
    path = glob.glob(os.path.join(tmp, "ebv_cache", "*.npz"))
    if not path:
        return float("nan")
    code = ("import time, sys; from ebv_ms.ebv import load_ebv; t = time.perf_counter(); "
            "e = load_ebv(sys.argv[1]); print(time.perf_counter() - t)")
    r = subprocess.run([sys.executable, "-c", code, path[0]], cwd=tree, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=tree))
    return float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else float("nan")


# ------------------------------------------------------------------------------------ report
def _fmt(v, spec=".1f", unit=""):
    return "not logged" if v is None else f"{v:{spec}}{unit}"


def _list(vs, spec=".1f"):
    return " / ".join(_fmt(v, spec) for v in vs) if vs else "not logged"


def peak_pss_sum(rows: list):
    """Peak over rank 0's samples of the PSS summed over the ranks (GiB), None if unsampled."""
    series = [np.array([(t, pss) for t, _, pss in row["samples"]], dtype=float).reshape(-1, 2)
              for row in rows]
    if any(len(s) == 0 for s in series):
        return None
    best = None
    for t, pss in series[0]:
        total = pss
        for other in series[1:]:
            k = int(np.argmin(np.abs(other[:, 0] - t)))
            # only instants when every rank is alive: a rank that has exited (or not yet
            # started) leaves the shared pages to the others, whose PSS then rises
            if abs(other[k, 0] - t) > 0.3 or not other[0, 0] < t < other[-1, 0]:
                break
            total += other[k, 1]
        else:
            best = total if best is None else max(best, total)
    return None if best is None else best / 1024 ** 2


def report(runs: list, data: dict, load_s: float, args, argv: list) -> None:
    gb = 1024 ** 3
    print(f"\nRehearsal of {CONFIG} on CPU, code of {args.tree} ({os.cpu_count()} cores): N={args.num_classes:,} classes, "
          f"d={args.embed_dim:,} (EBV matrix {args.num_classes * args.embed_dim * 4 / gb:.2f} GiB "
          f"fp32), small_cnn, {args.side} px, archive of {data['members']:,} members "
          f"({data['bytes'] / 1e6:.0f} MB), lists of {data['listed_classes']} classes: "
          f"{data['train']} train / {data['val']} val images, batch {args.batch_size} per rank, "
          f"{args.epochs} epochs (epoch 1 includes graph compilation)\n")
    print("| ranks | rank | peak RSS | peak PSS | EBV set | last.ckpt | ckpt write | train s/epoch | "
          "eval s/epoch | eval samples on this rank | run wall |")
    print("|---:|---:|---:|---:|---|---:|---:|---|---|---|---:|")
    for run in runs:
        for row in run["per_rank"]:
            k = row["rank"]
            if k == 0:
                ck = row["ckpt"].get("last.ckpt")
                ckpt = f"{ck / 1e6:,.0f} MB" if ck else "-"
                wr = row["ckpt_write_s"]
                write = (f"{wr:.1f} s" + (" (derived)" if row["ckpt_write_how"] == "derived" else "")
                         if wr is not None else "not logged")
                ev = _list(row["eval_s"]) + (" (derived)" if row["eval_how"] == "derived" else "")
                n = row["eval_samples_rank"]
                samples = str(n) if n is not None else f"not logged (total {row['eval_samples']})"
            else:
                ckpt, write = "- (rank 0 writes)", "-"
                ev = _fmt(row["eval_s"]) if row["eval_s"] is not None else "not logged"
                n = row["eval_samples_rank"]
                samples = str(n) if n is not None else "not logged"
            if run["failed"] and k == 0:
                samples += f"; RUN FAILED: {run['failed']}"
            print(f"| {run['ranks']} | {k} | {_fmt(row['peak_rss_gb'], '.2f', ' GB')} | "
                  f"{_fmt(row['peak_pss_gb'], '.2f', ' GB')} | {row['ebv']} "
                  f"| {ckpt} | {write} | {_list(row['train_s'])} | {ev} | {samples} | "
                  f"{run['wall']:.0f} s |")
    print("\nPSS: proportional set size, pages shared by k processes counted 1/k each (sampled "
          "every 0.5 s from /proc/PID/smaps_rollup); peak of the sum over ranks, each rank's "
          "sample nearest in time (within 0.3 s) to rank 0's, while all ranks run:")
    for run in runs:
        print(f"  {run['ranks']} rank(s): {_fmt(peak_pss_sum(run['per_rank']), '.2f', ' GB')}")
    print(f"\nEBV set load in a fresh process (load_ebv of the cached file): {load_s:.1f} s")
    for run in runs:
        r0 = run["per_rank"][0]
        extra = ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in sorted(r0["others"].items()))
        print(f"{run['ranks']} rank(s): checkpoint files {', '.join(f'{k} {v / 1e6:,.0f} MB' for k, v in sorted(r0['ckpt'].items()))}"
              + (f"; other large files in output_dir: {extra}" if extra else "")
              + f"; final top-1 {r0['top1']}")
    print("\nReproduce: flock /tmp/ebv_heavy.lock python benchmarks/scale.py "
          + " ".join(map(shlex.quote, argv)))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", default="1,2", help="rank counts to run, in order (default 1,2)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="per rank, train and eval")
    ap.add_argument("--listed-classes", type=int, default=16,
                    help="classes in the list files (x 12 train / 6 val images)")
    ap.add_argument("--side", type=int, default=32, help="image side in pixels")
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers")
    ap.add_argument("--num-classes", type=int, default=NUM_CLASSES,
                    help="model.num_classes (smaller only to smoke-test this script)")
    ap.add_argument("--embed-dim", type=int, default=5000)
    ap.add_argument("--alpha", type=float, default=0.122)
    ap.add_argument("--tmp", default=None, help="work folder (default: a new one in $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--tree", default=ROOT, help="the checkout to run (launcher and code; "
                    "default this one), e.g. an earlier commit's `git worktree add`")
    args = ap.parse_args(argv)
    args.tree = os.path.abspath(args.tree)
    tmp = tempfile.mkdtemp(prefix="ebv_scale_", dir=args.tmp)
    try:
        t0 = time.time()
        data = write_archive(os.path.join(tmp, "10w_classes.zip"), args.listed_classes, args.side,
                             args.num_classes)
        print(f"[scale] archive: {data['members']:,} members, {data['bytes'] / 1e6:.0f} MB, "
              f"{time.time() - t0:.0f} s", flush=True)
        runs = [launch(tmp, int(n), args) for n in args.ranks.split(",")]
        load_s = time_ebv_load(tmp, args.tree)
        report(runs, data, load_s, args, argv)
    finally:
        if args.keep:
            print(f"[scale] kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if any(run["failed"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

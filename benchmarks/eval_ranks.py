#!/usr/bin/env python
"""Sharded evaluation: ``eval.py`` on 1 rank against 2 ranks, same checkpoint, side by side.

    flock /tmp/ebv_heavy.lock python benchmarks/eval_ranks.py [--ckpt CKPT] [--rounds 2]

Without ``--ckpt`` it first trains the demo config for one epoch on the demo digits (359
validation images). Then, ``--rounds`` times and interleaved (the machine is shared), it runs
``eval.py`` alone and through ``scripts/run_distribute_gpu.sh`` on 2 ranks (``DEVICE_TARGET=CPU``,
``ENTRY=eval.py``), and reports each run's evaluation seconds (``eval.py``'s ``seconds``: the
loop over the shard plus the count gather, no start-up), images/s, samples per rank and
correct count, plus the command's wall time (interpreter, cluster start, graph compilation).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "demo_cpu.yaml")


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT, DEVICE_TARGET="CPU", GLOG_v="2", PYTHON=sys.executable)
    env.pop("MS_ROLE", None)
    return env


def _train(tmp: str) -> str:
    data = os.path.join(tmp, "demo")
    subprocess.run([sys.executable, "-m", "ebv_ms.tools.make_demo", "--out", data], cwd=ROOT,
                   check=True, capture_output=True, env=_env())
    out = os.path.join(tmp, "run")
    subprocess.run([sys.executable, "train.py", "--config", DEMO, f"output_dir={out}",
                    f"data.path={data}/digits.zip", f"ebv.cache_dir={tmp}/ebv", "train.epochs=1",
                    "train.progress_bar=false"], cwd=ROOT, check=True, capture_output=True,
                   env=_env())
    return os.path.join(out, "last.ckpt")


def _same_data(ckpt: str) -> list:
    """Overrides that keep the checkpoint's data and eval batch under the launcher's --config
    (which is applied on top of the checkpoint's config)."""
    sys.path.insert(0, ROOT)
    from ebv_ms.engine.checkpoint import load_checkpoint
    cfg = load_checkpoint(ckpt).config
    return [f"data.path={cfg['data']['path']}", f"eval.batch_size={cfg['eval']['batch_size']}"]


def _eval(ckpt: str, ranks: int, tmp: str, k: int) -> dict:
    js = os.path.join(tmp, f"eval_{ranks}_{k}.json")
    if ranks == 1:
        cmd = [sys.executable, "eval.py", "--ckpt", ckpt, "--no-progress", f"--json={js}"]
        env = _env()
    else:
        cmd = ["bash", "scripts/run_distribute_gpu.sh", DEMO, str(ranks),
               f"output_dir={tmp}/eval_logs_{k}", f"--ckpt={ckpt}", "--no-progress",
               f"--json={js}"]
        env = dict(_env(), ENTRY=os.path.join(ROOT, "eval.py"))
        cmd[4:4] = _same_data(ckpt)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed ({' '.join(cmd)}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    with open(js) as f:
        res = json.load(f)
    res["wall"] = wall
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--ckpt", help="checkpoint to evaluate (default: train the demo 1 epoch)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ebv_eval_ranks_") as tmp:
        ckpt = os.path.abspath(args.ckpt) if args.ckpt else _train(tmp)
        rows = []
        for k in range(args.rounds):
            for ranks in (1, 2):
                rows.append((ranks, _eval(ckpt, ranks, tmp, k)))
    print(f"# {platform.node()}, {os.cpu_count()} CPUs; checkpoint {ckpt if args.ckpt else '(demo, 1 epoch)'}")
    print("| ranks | eval seconds | images/s | samples per rank | correct top-1 | wall seconds |")
    print("|---:|---:|---:|---|---:|---:|")
    for ranks, r in rows:
        print(f"| {ranks} | {r['seconds']:.2f} | {r['images_per_s']:.0f} | "
              f"{r['num_samples_per_rank']} | {r['correct1']}/{r['num_samples']} | {r['wall']:.1f} |")
    best = {n: min(r["seconds"] for m, r in rows if m == n) for n in (1, 2)}
    print(f"\nbest eval seconds: 1 rank {best[1]:.2f}, 2 ranks {best[2]:.2f} "
          f"(1 / 2 = {best[1] / best[2]:.2f}x)")
    print("command: flock /tmp/ebv_heavy.lock python benchmarks/eval_ranks.py"
          + (f" --ckpt {args.ckpt}" if args.ckpt else "") + f" --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

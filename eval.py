#!/usr/bin/env python
"""Evaluate a checkpoint: top-1 / top-5 on the validation split, parameter counts, images/s.

    python eval.py --ckpt runs/demo/best.ckpt [--config X.yaml] [--test-size 224|256] [key=value ...]

A checkpoint written by train.py records its config and EBV set (a large set lives in a file
next to the checkpoint, or is rebuilt from its closed-form recipe; --ebv FILE names another
place), so --ckpt alone is enough; --config / overrides change settings on top of it (e.g.
data.root=... on another machine). A plain weights file needs --config (and the EBV set comes
from ebv.path or the cache).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint (best.ckpt / last.ckpt from train.py)")
    p.add_argument("--config", "-c", help="YAML config applied on top of the checkpoint's")
    p.add_argument("--ebv", metavar="FILE", default=None,
                   help="the EBV set the checkpoint was trained with, when it is not inside it "
                        "nor next to it (verified by its checksum)")
    p.add_argument("--test-size", type=int, default=None,
                   help="evaluation input side (centre crop; resize to side/0.875 first)")
    p.add_argument("--batch-size", type=int, default=None, help="overrides eval.batch_size")
    p.add_argument("--split", default=None, help="overrides eval.split (default val)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p.parse_args(argv)


def run(args) -> dict:
    from ebv_ms.config import ConfigError, load_config
    from ebv_ms.engine.checkpoint import load_checkpoint, restore_checkpoint
    from ebv_ms.engine.ebv_source import checkpoint_ebv
    from ebv_ms.engine.evaluator import count_parameters, evaluate
    from ebv_ms.engine.trainer import build_data, build_network, setup_context

    state = load_checkpoint(args.ckpt)
    if state.config is None and not args.config:
        raise ConfigError(f"{args.ckpt} records no config (not written by train.py); "
                          "pass --config with the model/data settings it was trained with")
    overrides = list(args.overrides)
    if args.batch_size:
        overrides.append(f"eval.batch_size={args.batch_size}")
    if args.split:
        overrides.append(f"eval.split={args.split}")
    if args.test_size:
        overrides.append(f"eval.test_size={args.test_size}")
    cfg = load_config(args.config, overrides, base=state.config)
    setup_context(cfg)

    ebv = checkpoint_ebv(state, cfg, ebv_file=args.ebv, progress=not args.no_progress)
    network = build_network(cfg, ebv)
    restore_checkpoint(state, network)
    counts = count_parameters(network)
    jit = str(cfg.mode).lower() == "graph"
    ds, info = build_data(cfg, str(cfg.eval.split), int(cfg.eval.batch_size), False)
    t0 = time.time()
    m = evaluate(network, ds, int(cfg.model.num_classes), jit=jit, progress=not args.no_progress,
                 desc=f"eval {cfg.eval.split}")
    result = {"ckpt": args.ckpt, "epoch": state.epoch, "split": cfg.eval.split,
              "top1": m["top1"], "top5": m["top5"], "correct1": m["correct1"],
              "correct5": m["correct5"], "num_samples": m["num_samples"],
              "images_per_s": m["images_per_s"], "seconds": time.time() - t0,
              "params_total": counts["total"], "params_trainable": counts["trainable"],
              "params_frozen": counts["frozen"], "model": cfg.model.backbone,
              "head": cfg.model.head, "ebv_checksum": ebv.checksum() if ebv is not None else None,
              "logged_top1": state.metrics.get("top1")}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    from ebv_ms.engine.errors import user_errors
    try:
        r = run(args)
    except user_errors() as exc:
        print(f"eval.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"model {r['model']} + {r['head']} head: {r['params_total']:,} parameters "
          f"({r['params_trainable']:,} trainable, {r['params_frozen']:,} non-trainable: EBVs, BN statistics)")
    print(f"{r['split']}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  "
          f"({r['correct1']}/{r['num_samples']})  {r['images_per_s']:.1f} images/s")
    if r["logged_top1"] is not None:
        print(f"top-1 logged at training time (epoch {r['epoch']}): {r['logged_top1']:.2f}%")
    print("RESULT " + json.dumps(r))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

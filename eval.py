#!/usr/bin/env python
"""Evaluate a checkpoint: top-1 / top-5 on the validation split, parameter counts, images/s.

    python eval.py --ckpt runs/demo/best.ckpt [--config X.yaml] [--test-size 224|256] [key=value ...]
    bash scripts/run_eval_gpu.sh CKPT --ranks N [eval.py options]   # N ranks, one shard each

A checkpoint written by train.py records its config and EBV set (a large set lives in a file
next to the checkpoint, or is rebuilt from its closed-form recipe; --ebv FILE names another
place), so --ckpt alone is enough; --config / overrides change settings on top of it (e.g.
data.root=... on another machine). A plain weights file needs --config (and the EBV set comes
from ebv.path or the cache).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint (best.ckpt / last.ckpt from train.py)")
    p.add_argument("--config", "-c", help="YAML config applied on top of the checkpoint's")
    p.add_argument("--ebv", metavar="FILE", default=None,
                   help="the EBV set the checkpoint was trained with, when it is not inside it "
                        "nor next to it (verified by its checksum)")
    p.add_argument("--test-size", type=_positive_int, default=None,
                   help="evaluation input side (centre crop; resize to side/0.875 first)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="overrides eval.batch_size")
    p.add_argument("--split", default=None, help="overrides eval.split (default val)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p.parse_intermixed_args(argv)  # key=value overrides may follow options too


def _check_json_path(path: str) -> None:
    """--json must name a file in an existing folder: refused before the evaluation, not after."""
    from ebv_ms.config import ConfigError
    if os.path.isdir(path):
        raise ConfigError(f"--json {path} is a folder; give a file name, e.g. {path}/eval.json")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"--json {path}: folder {folder} does not exist")


def run(args) -> dict:
    from ebv_ms.config import check_run
    from ebv_ms.engine.builders import build_eval, setup_context
    from ebv_ms.engine.checkpoint import checkpoint_config, load_checkpoint, network_from_checkpoint
    from ebv_ms.engine.distributed import init_distributed
    from ebv_ms.engine.evaluator import evaluate
    from ebv_ms.engine.run_folder import check_class_names

    if args.json:
        _check_json_path(args.json)
    # read and checked without making a Tensor: the device is set up (and init() called on
    # several ranks) before any Tensor exists, as MindSpore asks on Ascend
    state = load_checkpoint(args.ckpt)  # damaged or crafted: a CheckpointError naming the file
    options = {"batch_size": args.batch_size, "split": args.split, "test_size": args.test_size}
    overrides = [*args.overrides, *(f"eval.{k}={v}" for k, v in options.items() if v is not None)]
    cfg = check_run(checkpoint_config(state, args.config, overrides), training=False,
                    ebv_needed=state.ebv_info is None)
    setup_context(cfg)
    rank, world = init_distributed(cfg)  # (0, 1) unless launched on several ranks
    progress = rank == 0 and not args.no_progress

    from ebv_ms.models.classifier import parameter_totals  # mindcv makes Tensors on import
    network, ebv = network_from_checkpoint(state, cfg, ebv_file=args.ebv, rank=rank,
                                           progress=progress)
    epoch, logged_top1, names = state.epoch, state.metrics.get("top1"), state.class_names
    del state  # the weights are in the network now
    counts = parameter_totals(network)
    parts = build_eval(cfg, network, rank, world)  # this rank's shard of the split
    if names is not None:  # each label index must mean the class it meant in training
        check_class_names(args.ckpt, parts.info.class_names, names)
    t0 = time.time()
    m = evaluate(network, parts, progress=progress, desc=f"eval {cfg.eval.split}")
    return {"ckpt": args.ckpt, "epoch": epoch, "split": cfg.eval.split,
            "top1": m["top1"], "top5": m["top5"], "correct1": m["correct1"],
            "correct5": m["correct5"], "num_samples": m["num_samples"],
            "num_samples_per_rank": m["samples_per_rank"], "bad_samples": m["bad_samples"],
            "images_per_s": m["images_per_s"], "seconds": time.time() - t0,
            "params_total": counts["total"], "params_trainable": counts["trainable"],
            "params_frozen": counts["frozen"], "model": cfg.model.backbone,
            "head": cfg.model.head, "ebv_checksum": ebv.checksum() if ebv is not None else None,
            "logged_top1": logged_top1, "rank": rank, "world_size": world}


def main(argv=None) -> int:
    args = parse_args(argv)
    from ebv_ms.errors import run_cli
    return run_cli("eval.py", lambda: _report(args, run(args)), debug=args.debug)


def _report(args, r: dict) -> int:
    print(f"model {r['model']} + {r['head']} head: {r['params_total']:,} parameters "
          f"({r['params_trainable']:,} trainable, {r['params_frozen']:,} non-trainable: EBVs, BN statistics)")
    print(f"{r['split']}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  "
          f"({r['correct1']}/{r['num_samples']})  {r['images_per_s']:.1f} images/s")
    if r["logged_top1"] is not None:
        print(f"top-1 logged at training time (epoch {r['epoch']}): {r['logged_top1']:.2f}%")
    print("RESULT " + json.dumps(r))
    if args.json and r["rank"] == 0:  # every rank has the whole split's figures; one writes
        from ebv_ms.atomic import atomic_path
        with atomic_path(args.json, fsync=False) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Predict the top-k classes of images, from a checkpoint or from an exported model.

    python predict.py --ckpt runs/demo_cpu/best.ckpt PATH... [--topk 5] [--json] [--config X.yaml]
    python predict.py --model runs/demo_cpu/best.mindir PATH...     # or best.onnx (onnxruntime)

PATH is an image file, a folder (searched recursively) or a .zip archive (read in place).
Images get the evaluation transform eval.py uses (resize, centre crop, ImageNet mean/std), so
a checkpoint predicts what eval.py scores. Class names come from the run's classes.json
(beside the checkpoint) or from the export's JSON sidecar. A bad image is reported and skipped.
Output: one line per image, or with --json one JSON object per line.
"""
from __future__ import annotations

import argparse
import json
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint written by train.py")
    src.add_argument("--model", help="a .mindir or .onnx written by export.py (with its .json)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder or .zip")
    p.add_argument("--topk", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument("--batch-size", type=int, default=32, help="images per step with --ckpt")
    p.add_argument("--test-size", type=int, default=None,
                   help="--ckpt only: input side (resize side/0.875, centre crop), as eval.py")
    p.add_argument("--device", default="CPU", choices=["CPU", "GPU", "Ascend"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--config", "-c", default=None,
                   help="--ckpt only: YAML applied on top of the checkpoint's (a plain weights "
                        "file records none: give the model settings it was trained with)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value",
                   help="--ckpt only: config override on top of the checkpoint's (repeatable)")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import gc
    from ebv_ms.errors import run_cli
    args = parse_args(argv)
    code = run_cli("predict.py", lambda: _main(args), debug=args.debug)
    gc.collect()  # free the network's Cells now: at interpreter exit MindSpore is half torn down
    return code


def _main(args) -> int:
    from ebv_ms.deploy.predicting import (PredictError, cell_runner, collect_images, eval_transform,
                                          open_model, predict, text_line)
    if args.topk < 1:
        raise PredictError("--topk must be >= 1")
    n_ok = n_bad = 0
    lists = collect_images(args.paths)
    if args.model:
        runner, names, transform = open_model(args.model, args.device)
    else:
        from ebv_ms.deploy import eval_sizes, load_network
        overrides = [f"device_target={args.device}"] + list(args.overrides)
        if args.test_size:
            overrides.append(f"eval.test_size={args.test_size}")
        cfg, network, names = load_network(args.ckpt, overrides, args.config)
        runner, transform = cell_runner(network, args.batch_size), eval_transform(*eval_sizes(cfg))
    for rec in predict(runner, transform, names, lists, args.topk, progress=not args.no_progress):
        if "error" in rec:
            n_bad += 1
            print(f"predict.py: {text_line(rec)}", file=sys.stderr)
        else:
            n_ok += 1
        if args.json:  # exact names; \u-escaped only where not UTF-8 (undecodable bytes)
            line = json.dumps(rec, ensure_ascii=False)
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                line = json.dumps(rec)
            print(line)
        elif "topk" in rec:
            print(text_line(rec))
    if n_bad:
        print(f"predict.py: {n_ok} image(s) predicted, {n_bad} skipped (reasons above)",
              file=sys.stderr)
    return 0 if n_ok else 2


if __name__ == "__main__":
    sys.exit(main())

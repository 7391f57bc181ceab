#!/usr/bin/env python
"""Export a trained checkpoint to MindIR or ONNX (or AIR on Ascend): images -> logits.

    python export.py --ckpt runs/demo_cpu/best.ckpt --format MINDIR [--out FILE] [--batch N]
                     [--image-size S] [--device CPU|GPU|Ascend] [key.sub=value ...]

The graph takes float32 (N, 3, S, S) images, RGB, normalised with ImageNet mean/std (pixels
0..255), and returns the (N, num_classes) logits of the checkpoint's head (EBV, FC or fixed
random). That input contract, the class names and the EBV checksum are written beside the
model as FILE.json, e.g. best.mindir.json (predict.py --model reads it). S defaults to the run's evaluation crop.
Large models: MindIR above 1 GiB of weights is split into FILE_graph.mindir + FILE_variables/;
ONNX above 2 GiB keeps its weights in external files; model.ebv_dtype=float16 halves the EBV
matrix. See docs/deploy.md.
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
    p.add_argument("--format", default="MINDIR", type=str.upper, choices=["MINDIR", "ONNX", "AIR"],
                   help="MINDIR (default), ONNX, or AIR (Ascend only)")
    p.add_argument("--out", default=None,
                   help="output file (default: next to the checkpoint, same name, format's suffix)")
    p.add_argument("--batch", type=int, default=1, help="batch size fixed in the graph (default 1)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input side S (centre crop of a resize to S/0.875; default: the run's "
                        "evaluation crop)")
    p.add_argument("--config", "-c", default=None, help="YAML applied on top of the checkpoint's")
    p.add_argument("--device", default="CPU", choices=["CPU", "GPU", "Ascend"],
                   help="device MindSpore compiles the graph on (default CPU; AIR needs Ascend)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. model.ebv_dtype=float16")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import gc
    from ebv_ms.errors import run_cli
    args = parse_args(argv)
    code = run_cli("export.py", lambda: _main(args), debug=args.debug)
    gc.collect()  # free the network's Cells now: at interpreter exit MindSpore is half torn down
    return code


def _main(args) -> int:
    import os
    from ebv_ms.deploy import load_network
    from ebv_ms.deploy.exporting import export_network
    overrides = [f"device_target={args.device}"] + list(args.overrides)
    if args.image_size:
        overrides.append(f"eval.test_size={args.image_size}")
    cfg, network, names = load_network(args.ckpt, overrides, args.config)
    out = args.out or os.path.splitext(args.ckpt)[0]
    meta, sidecar = export_network(network, cfg, names, args.format, out, args.batch,
                                   checkpoint=args.ckpt)
    spec = meta["input"]
    print(f"exported {meta['backbone']} + {meta['head']} head ({meta['num_classes']} classes) "
          f"as {meta['file_format']}: load {meta['model']}")
    for name, size in meta["files"].items():
        print(f"  {name}  {size / 1e6:,.1f} MB")
    print(f"input: {spec['name']} float32 {spec['layout']} {spec['shape']}, RGB, resize "
          f"{spec['resize']} + centre crop {spec['crop']}, mean {spec['mean']} std {spec['std']} "
          f"(pixels 0..255); output: logits {meta['output']['shape']}")
    print(f"input contract, class names and EBV checksum: {sidecar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Train a classifier with an EBV (or FC) head.

    python train.py --config configs/demo_cpu.yaml [--resume | --resume-from CKPT] [key.sub=value ...]

Writes OUTPUT_DIR/{last,best}.ckpt, train.log, metrics.jsonl (one JSON record per epoch) and
config.yaml. After a kill, run the same command with --resume: training continues at the
first epoch the last checkpoint does not cover. See docs/training.md.
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", help="YAML config (keys it leaves out take the defaults)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT_DIR from its last.ckpt (starts from scratch "
                        "if there is none yet)")
    p.add_argument("--resume-from", metavar="CKPT", default=None,
                   help="continue from this checkpoint instead (writes to OUTPUT_DIR)")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback of an error too (it is always in train.log)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. train.epochs=10 optim.lr=0.05 mode=pynative")
    return p.parse_intermixed_args(argv)  # key=value overrides may follow options too


def main(argv=None, callbacks=()) -> int:
    """``callbacks``: objects whose hooks the loop calls (tests/probes.py)."""
    args = parse_args(argv)
    from ebv_ms.errors import run_cli

    def body() -> int:
        from ebv_ms.config import load_config
        cfg = load_config(args.config, args.overrides)  # every key is checked here
        from ebv_ms.engine.trainer import train
        result = train(cfg, resume=args.resume_from or ("auto" if args.resume else None),
                       callbacks=callbacks)
        print(f"train.py: finished; best top-1 {result['best_top1']:.2f}% at epoch "
              f"{result['best_epoch']}; checkpoints in {cfg.output_dir}")
        return 0

    # a bad value, file or machine state: one line and exit 2 (traceback with --debug)
    return run_cli("train.py", body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

"""``MS_ROLE=MS_SCHED python -m ebv_ms.tools.scheduler [--device D]``: the dynamic-cluster
scheduler that ``ebv_ms.tools.launch`` starts beside the mpirun workers (msrun runs the training
script as its scheduler instead; see ``engine.distributed``)."""
from __future__ import annotations

import argparse
import os
import sys

from ebv_ms.device import set_device


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ebv_ms.tools.scheduler")
    parser.add_argument("--device", default="CPU", help="CPU | GPU | Ascend")
    args = parser.parse_args(argv)
    if os.environ.get("MS_ROLE") != "MS_SCHED":
        print("error: set MS_ROLE=MS_SCHED, MS_WORKER_NUM, MS_SCHED_HOST and MS_SCHED_PORT "
              "(python -m ebv_ms.tools.launch does this)", file=sys.stderr)
        return 2
    from mindspore.communication import init
    set_device(args.device)  # as under msrun, whose scheduler runs the training script
    init()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""train.py with the test callbacks of tests/probes.py installed.

    python tests/probed_train.py [--rank-probe] [--kill-at-step N] TRAIN.PY ARGUMENTS...

Used as ENTRY of scripts/run_distribute_gpu.sh by the 2-rank test (``--rank-probe``) and by
the resume test (``--kill-at-step``); everything else goes to train.py's own ``main``.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import train  # noqa: E402
from probes import KillAtStep, RankProbeCallback  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--rank-probe", action="store_true", help="write logs/rank_K.json")
    p.add_argument("--kill-at-step", type=int, default=None, help="SIGKILL before this step")
    ours, rest = p.parse_known_args(argv)
    callbacks = []
    if ours.rank_probe:
        callbacks.append(RankProbeCallback())
    if ours.kill_at_step is not None:
        callbacks.append(KillAtStep(ours.kill_at_step))
    return train.main(rest, callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(main())

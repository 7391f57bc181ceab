"""train.py with the test callbacks of tests/probes.py installed.

    python tests/probed_train.py [--rank-probe] [--kill-at-step N [--kill-rank K]]
        [--keep-epochs] [--rank1-output-dir DIR] [--loss-probe] TRAIN.PY ARGUMENTS...

Used as ENTRY of scripts/run_distribute_gpu.sh by the 2-rank test (``--rank-probe``) and by
the resume tests (``--kill-at-step``), the per-epoch outcome tests (``--keep-epochs``) and the
test of ranks that see different run folders (``--rank1-output-dir``: rank 1, by MS_NODE_ID, gets
another output_dir, as a host without the shared folder would); everything else goes to
train.py's own ``main``.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import train  # noqa: E402
from probes import KeepEpochCheckpoints, KillAtStep, LossProbe, RankProbeCallback  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--rank-probe", action="store_true", help="write logs/rank_K.json")
    p.add_argument("--kill-at-step", type=int, default=None, help="SIGKILL before this step")
    p.add_argument("--kill-rank", type=int, default=None, help="only this rank is killed")
    p.add_argument("--keep-epochs", action="store_true", help="copy last.ckpt to epoch_K.ckpt")
    p.add_argument("--rank1-output-dir", default=None, help="rank 1's output_dir")
    p.add_argument("--loss-probe", action="store_true", help="logs/loss_probe_rank_K.json")
    ours, rest = p.parse_known_args(argv)
    callbacks = []
    if ours.rank_probe:
        callbacks.append(RankProbeCallback())
    if ours.kill_at_step is not None:
        callbacks.append(KillAtStep(ours.kill_at_step, ours.kill_rank))
    if ours.keep_epochs:
        callbacks.append(KeepEpochCheckpoints())
    if ours.loss_probe:
        callbacks.append(LossProbe())
    if ours.rank1_output_dir and os.environ.get("MS_NODE_ID") == "1":
        rest = [a for a in rest if not a.startswith("output_dir=")]
        at = rest.index("--config") + 2 if "--config" in rest else 0
        rest.insert(at, f"output_dir={ours.rank1_output_dir}")
    return train.main(rest, callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(main())

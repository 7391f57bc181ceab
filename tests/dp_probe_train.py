"""A small, real MindSpore data-parallel training run used to test the launch machinery.

Real images (scikit-learn's handwritten digits), a real Cell with BatchNorm, mean all-reduced
gradients through the DATA_PARALLEL context, sharded data, rank-0-only checkpoint. It does what
train.py does around ``init_distributed`` with nothing else, so launch failures point at launch.

Usage (normally through scripts/run_distribute_gpu.sh with ENTRY=tests/dp_probe_train.py):
    python tests/dp_probe_train.py --config CFG.yaml [key=value ...] [--steps N] [--fail-rank K]
"""
import argparse
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from ebv_ms.config import load_config  # noqa: E402
from ebv_ms.engine.distributed import init_distributed  # noqa: E402
from probes import RankProbe, is_main_rank, params_checksum  # noqa: E402  (tests/: this folder)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--fail-rank", type=int, default=-1,
                        help="this rank raises after its first step (tests failure handling)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)

    ms.set_device(cfg.device_target)
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == "graph" else ms.PYNATIVE_MODE)
    rank, world = init_distributed(cfg)
    ms.set_seed(cfg.seed)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(message)s")
    log = logging.getLogger("dp_probe")
    if is_main_rank():
        os.makedirs(cfg.output_dir, exist_ok=True)
        log.addHandler(logging.FileHandler(os.path.join(cfg.output_dir, "train.log")))

    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    ds = ms.dataset.NumpySlicesDataset({"image": images, "label": labels}, shuffle=True,
                                       num_shards=world, shard_id=rank)
    ds = ds.batch(32, drop_remainder=True)

    # Mean check: one SGD step of a linear classifier, rank r on samples [16r, 16r+16). With mean
    # all-reduced gradients the result equals one step on all ranks' samples together, which
    # the test recomputes with numpy from the saved start weights.
    lin = nn.Dense(64, 10)
    w0, b0 = lin.weight.asnumpy().copy(), lin.bias.asnumpy().copy()
    lin_step = nn.TrainOneStepCell(
        nn.WithLossCell(lin, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")),
        nn.SGD(lin.trainable_params(), learning_rate=0.5))
    lin_step.set_train()
    part = slice(16 * rank, 16 * rank + 16)
    lin_step(ms.Tensor(images[part]), ms.Tensor(labels[part]))
    if is_main_rank():
        os.makedirs(cfg.output_dir, exist_ok=True)
        np.savez(os.path.join(cfg.output_dir, "mean_check.npz"), w0=w0, b0=b0,
                 w1=lin.weight.asnumpy(), b1=lin.bias.asnumpy(), world=world)

    net = nn.SequentialCell(nn.Dense(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dense(32, 10))
    init_sum = params_checksum(net)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    step_cell = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step_cell.set_train()

    probe = RankProbe(cfg.output_dir)
    step = 0
    while step < args.steps:
        for batch in ds.create_dict_iterator():
            value = step_cell(batch["image"], batch["label"])
            probe.record_batch(batch["label"])
            step += 1
            log.info("step %d loss %.4f", step, float(value.asnumpy()))
            if rank == args.fail_rank:
                raise RuntimeError(f"rank {rank}: failing on purpose (--fail-rank)")
            if step >= args.steps:
                break
    if is_main_rank():
        ckpt_dir = os.path.join(cfg.output_dir, "checkpoints")
        os.makedirs(ckpt_dir, exist_ok=True)
        ms.save_checkpoint(net, os.path.join(ckpt_dir, "last.ckpt"))
    probe.finish(net, steps=step, init_checksum=init_sum)
    log.info("done: %d steps on rank %d of %d", step, rank, world)


if __name__ == "__main__":
    main()

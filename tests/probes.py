"""Test instruments, installed as training callbacks (``Trainer(cfg, callbacks=[...])``).

- ``RankProbe`` / ``RankProbeCallback``: per-rank evidence that data parallelism did what it
  should: a digest over every label the rank trained on, its first labels, its step count and a
  SHA-256 of its trainable parameters at the end, written to OUTPUT_DIR/logs/rank_K.json.
- ``KillAtStep``: SIGKILLs the process just before a given global step (the resume tests).
- ``KeepEpochCheckpoints``: a copy of every epoch's last.ckpt (per-epoch outcome tests).
- ``LossProbe``: each step's loss computed independently, and the loop's host reads per step.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import time
from typing import Optional

import numpy as np

from ebv_ms.atomic import atomic_path
from ebv_ms.engine.distributed import get_rank_info

_LOG = logging.getLogger(__name__)


def is_main_rank() -> bool:
    return get_rank_info()[0] == 0


def rank_log_dir(output_dir: str) -> str:
    return os.path.join(str(output_dir), "logs")


class Callback:
    """The hooks ``Trainer`` calls (as mindcv's and Keras' callbacks); each does nothing here."""

    def on_train_begin(self, trainer) -> None:
        """After set-up and resume, before the first step."""

    def on_train_step(self, trainer, global_step: int, batch) -> None:
        """Before each step, with its batch (``image``, ``label``); global_step counts from 0."""

    def on_epoch_end(self, trainer, epoch: int, record: dict) -> None:
        """After the epoch's evaluation, log record and checkpoint."""

    def on_train_end(self, trainer, result: dict) -> None:
        """After the last epoch (also when a resumed run had nothing left to do)."""


def rank_report_path(output_dir: str, rank: Optional[int] = None) -> str:
    """OUTPUT_DIR/logs/rank_K.json: what ``RankProbe.finish`` writes."""
    rank = get_rank_info()[0] if rank is None else rank
    return os.path.join(rank_log_dir(output_dir), f"rank_{rank}.json")


def params_checksum(net, trainable_only: bool = True) -> str:
    """SHA-256 of the parameters (sorted by name, float32 bytes).

    Trainable parameters only by default: they are what the all-reduce keeps identical.
    BatchNorm running statistics are per-rank (each rank sees its own shard), as in any
    data-parallel training without SyncBN, so they are left out.
    """
    params = net.trainable_params() if trainable_only else net.get_parameters()
    h = hashlib.sha256()
    for p in sorted(params, key=lambda q: q.name):
        h.update(p.name.encode("utf-8"))
        h.update(np.ascontiguousarray(p.asnumpy(), dtype=np.float32).tobytes())
    return h.hexdigest()


def _labels_to_numpy(labels) -> np.ndarray:
    arr = labels.asnumpy() if hasattr(labels, "asnumpy") else np.asarray(labels)
    if arr.ndim == 2:  # soft targets (mixup / cutmix): the dominant class
        arr = arr.argmax(axis=1)
    return arr.astype(np.int64).reshape(-1)


class RankProbe:
    """Which samples this rank saw and where its weights ended. Cheap: one hash update per batch."""

    def __init__(self, output_dir: str, keep_first: int = 64):
        self.output_dir = str(output_dir)
        self.rank, self.world_size = get_rank_info()
        self.keep_first = keep_first
        self.first_labels: list = []
        self.num_samples = 0
        self.num_batches = 0
        self._digest = hashlib.sha256()
        self._t0 = time.time()

    def record_batch(self, labels) -> None:
        arr = _labels_to_numpy(labels)
        self._digest.update(arr.tobytes())
        if len(self.first_labels) < self.keep_first:
            self.first_labels.extend(int(x) for x in arr[: self.keep_first - len(self.first_labels)])
        self.num_samples += int(arr.size)
        self.num_batches += 1

    def report(self, net=None, **extra) -> dict:
        out = {
            "rank": self.rank,
            "world_size": self.world_size,
            "num_batches": self.num_batches,
            "num_samples": self.num_samples,
            "first_labels": self.first_labels,
            "shard_digest": self._digest.hexdigest(),
            "seconds": round(time.time() - self._t0, 3),
        }
        if net is not None:
            out["param_checksum"] = params_checksum(net)
        out.update(extra)
        return out

    def finish(self, net=None, **extra) -> str:
        """Write OUTPUT_DIR/logs/rank_K.json (every rank, its own file); returns the path."""
        rep = self.report(net, **extra)
        path = rank_report_path(self.output_dir, self.rank)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(rep, f)
        _LOG.info("rank %d: %d batches, shard digest %s, params %s -> %s", self.rank,
                  self.num_batches, rep["shard_digest"][:12], rep.get("param_checksum", "-")[:12],
                  path)
        return path


class RankProbeCallback(Callback):
    """Feeds a ``RankProbe`` every training batch; writes its report when training ends."""

    def __init__(self):
        self.probe = None

    def on_train_begin(self, trainer) -> None:
        self.probe = RankProbe(trainer.out)

    def on_train_step(self, trainer, global_step, batch) -> None:
        self.probe.record_batch(batch["label"])

    def on_train_end(self, trainer, result) -> None:
        # all parameters, BatchNorm statistics included: after an evaluation they are rank 0's
        self.probe.finish(trainer.network,
                          steps=int(trainer.cfg.train.epochs) * trainer.steps_per_epoch,
                          all_params_checksum=params_checksum(trainer.network, trainable_only=False))


class KillAtStep(Callback):
    """SIGKILL this process just before global step ``step`` (0-based), logs flushed first;
    ``rank``: only on that rank (the others then fail at the next collective)."""

    def __init__(self, step: int, rank: Optional[int] = None):
        self.step = int(step)
        self.rank = rank

    def on_train_step(self, trainer, global_step, batch) -> None:
        if global_step == self.step and self.rank in (None, trainer.rank):
            trainer.log.warning("KillAtStep(%d) reached: SIGKILL", global_step)
            for h in trainer.log.handlers:
                h.flush()
            os.kill(os.getpid(), signal.SIGKILL)


class KeepEpochCheckpoints(Callback):
    """Rank 0 copies last.ckpt to OUTPUT_DIR/epoch_K.ckpt after each epoch (outcome tests
    evaluate every epoch's model)."""

    def on_epoch_end(self, trainer, epoch, record) -> None:
        if trainer.rank == 0:
            shutil.copyfile(trainer.last_path, os.path.join(trainer.out, f"epoch_{epoch}.ckpt"))


class LossProbe(Callback):
    """Per step, before it runs: the loss of the model on the step's batch, computed here with
    the run's loss (``ref_losses``; only for networks without BatchNorm or dropout, where this
    forward changes nothing), and the host reads of any Tensor (``Tensor.asnumpy``) the loop
    made since the previous step (``reads``). Written to OUTPUT_DIR/logs/loss_probe_rank_K.json
    after every step, so a run that stops early leaves its report too."""

    def __init__(self):
        self.ref_losses, self.reads, self._count, self._paused = [], [], 0, False

    def on_train_begin(self, trainer) -> None:
        import mindspore as ms
        from ebv_ms.loss import create_loss
        self.loss_fn = create_loss(**dict(trainer.cfg.loss))
        self.path = os.path.join(rank_log_dir(trainer.out), f"loss_probe_rank_{trainer.rank}.json")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        original, probe = ms.Tensor.asnumpy, self

        def counting(tensor):
            if not probe._paused:
                probe._count += 1
            return original(tensor)

        ms.Tensor.asnumpy = counting

    def on_train_step(self, trainer, global_step, batch) -> None:
        import mindspore as ms
        from mindspore import ops
        self.reads.append(self._count)
        self._paused = True
        logits = ops.cast(trainer.network(batch["image"]), ms.float32)
        self.ref_losses.append(float(self.loss_fn(logits, batch["label"]).asnumpy()))
        self._paused = False
        self._count = 0
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump({"ref_losses": self.ref_losses, "reads": self.reads[1:]}, f)

"""The training loop: ``Trainer(cfg, resume=...).fit()``.

``setup`` builds everything from the config (``builders``: data, EBV set, network, step
functions), checks a resumed checkpoint against it (``resume``), and only when every check has
passed writes to the run folder (``run_folder``: held by a lock for the whole run). Then per
epoch, as torchvision's reference scripts do:

    train_one_epoch  ->  evaluate (every rank its shard, counts summed)  ->  end_epoch
                                                        (metrics.jsonl, last.ckpt, best.ckpt)

MindSpore compiles the step (``ms.jit`` in GRAPH mode); the loop stays in Python for the
per-epoch evaluation, atomic checkpoints and a progress bar with images/s. A run killed at any
point continues with ``resume="auto"``: it reloads ``last.ckpt`` and starts at the first epoch
that checkpoint does not cover, so no epoch is lost or repeated. ``callbacks`` see every step
and epoch (``callbacks.Callback``); the loop has no other hooks.
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional, Sequence

from mindspore import ops
from ebv_ms.progress import progress_bar

from ebv_ms.config import Config, ConfigError, check_run, save_config, validate
from .builders import (build_data, build_eval, build_network, build_training, init_parallel,
                       resolve_amp, scaler_params, setup_context)
from .callbacks import Callback
from .checkpoint import atomic_copy, save_checkpoint
from .distributed import broadcast_from_main_rank, check_same_start
from .ebv_source import resolve_ebv, start_run_ebv_file
from .evaluator import evaluate
from .logger import JsonlLog, open_log_file, setup_logger
from .resume import ResumeState
from .run_folder import RunLock, remove_stale_temps
from .train_step import SkippedStepGuard
from ebv_ms.errors import DivergenceError

__all__ = ["Trainer", "train"]

# with train.log_interval 0 the losses are still read (and checked) every this many steps
_READ_EVERY = 50


class Trainer:
    """Owns one run: ``Trainer(cfg, resume=...).fit()`` returns the final record."""

    def __init__(self, cfg: Config, resume: Optional[str] = None, rank: int = 0,
                 world_size: int = 1, callbacks: Sequence[Callback] = ()):
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        self.resume_arg = resume
        self.callbacks = list(callbacks)
        self.out = str(cfg.output_dir)
        self.last_path = os.path.join(self.out, "last.ckpt")
        self.best_path = os.path.join(self.out, "best.ckpt")
        self.lock = RunLock(self.out) if rank == 0 else None  # only rank 0 writes here
        self.jsonl: Optional[JsonlLog] = None                    # rank 0's metrics.jsonl
        self.resume: Optional[ResumeState] = None                # set by setup() on a resume
        self.start_epoch, self.best_top1, self.best_epoch = 0, -1.0, 0

    # ---------------------------------------------------------------- set-up
    def setup(self) -> None:
        """Build the run and check a resumed checkpoint; the run folder changes only at the end."""
        cfg, t = self.cfg, self.cfg.train
        if self.lock is not None:
            self.lock.acquire()  # before anything else: a second run into this folder stops here
        self.log = setup_logger(self.out, self.rank, defer_file=True)
        self.resume = resume = ResumeState.find(self.resume_arg, self.last_path, self.log)
        check_same_start(resume, self.rank, self.world_size)  # else the ranks would hang apart

        self.train_ds, self.train_info = build_data(cfg, "train", int(t.batch_size), True,
                                                    self.world_size, self.rank)
        if resume is not None:
            resume.check_classes(self.out, self.train_info.class_names)
        n_data = int(self.train_info.num_classes)
        if n_data != int(cfg.model.num_classes):
            raise ConfigError(f"config key 'model.num_classes' is {cfg.model.num_classes} but the "
                              f"training data has {n_data} classes; set model.num_classes={n_data}")
        self.steps_per_epoch = int(self.train_ds.get_dataset_size())
        if self.steps_per_epoch < 1:
            raise ConfigError(f"config key 'train.batch_size' ({t.batch_size}) is larger than this "
                              "rank's share of the training data; lower it")

        amp_level = resolve_amp(cfg)
        if resume is None:
            self.ebv = resolve_ebv(cfg, self.rank, progress=self.rank == 0, logger=self.log)
            self.network = build_network(cfg, self.ebv, amp_level)
        else:  # the checkpoint's network and EBV set (found or rebuilt, verified), its weights
            self.network, self.ebv = resume.network(cfg, self.rank, amp_level, self.log)
        parts = build_training(cfg, self.network, self.steps_per_epoch, amp_level)
        self.optimizer, self.scaler, self.step_fn, self.lrs = (parts.optimizer, parts.scaler,
                                                               parts.step, parts.lrs)
        self.skip_guard = SkippedStepGuard.for_scaler(self.scaler, int(t.max_skipped_steps))
        self.eval_parts = build_eval(cfg, self.network, self.rank, self.world_size)
        # evaluation on every rank uses rank 0's BatchNorm statistics: the model that is saved
        self.bn_stats = [p for p in self.network.get_parameters()
                         if p.name.endswith(("moving_mean", "moving_variance"))]
        if resume is not None:  # before any step compiles: restore replaces Parameter buffers
            # (load_param_into_net -> set_data), which a compiled graph would never read
            resume.restore(self.network, self.optimizer, scaler_params(self.scaler),
                           self.steps_per_epoch)
            self.start_epoch, self.best_top1, self.best_epoch = (resume.epoch, resume.best_top1,
                                                                 resume.best_epoch)
        from ebv_ms.models.classifier import parameter_totals
        counts = parameter_totals(self.network)
        self.log.info("model %s + %s head: %s parameters (%s trainable, %s frozen; BatchNorm "
                      "statistics apart); amp %s; "
                      "mode %s; %d step(s)/epoch x %d epochs; world size %d",
                      cfg.model.backbone, cfg.model.head, f"{counts['total']:,}",
                      f"{counts['trainable']:,}", f"{counts['frozen']:,}", amp_level, cfg.mode,
                      self.steps_per_epoch, t.epochs, self.world_size)

        # every check has passed: from here on the run owns the folder
        if self.rank == 0:
            remove_stale_temps([self.out, os.path.join(self.out, "logs")])
            open_log_file(self.log, self.out)
            self.train_info.save_class_mapping(self.out)  # index -> name, for eval/inference
            self.jsonl = JsonlLog(os.path.join(self.out, "metrics.jsonl"))
            self.jsonl.truncate_after(self.start_epoch)
            save_config(cfg, os.path.join(self.out, "config.yaml"))
            if self.ebv is not None and self.ebv.vectors.nbytes > self._inline_ebv_bytes():
                start_run_ebv_file(os.path.dirname(self.last_path), self.ebv)  # off the step path
        if resume is not None:
            self.log.info("resumed from %s: epoch %d/%d done, best top-1 %.2f%% (epoch %d)",
                          resume.path, self.start_epoch, t.epochs, self.best_top1, self.best_epoch)
            if self.rank == 0:
                resume.repair_best(self.best_path, bool(t.keep_best))
            resume.start_data(self.train_info)

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict:
        try:
            try:
                self.setup()
            except BaseException:  # nothing written yet: leave no empty run folder behind
                if self.lock is not None:
                    self.lock.release(undo=True)
                raise
            return self._fit()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _fit(self) -> dict:
        epochs = int(self.cfg.train.epochs)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        record = {}
        it = self.train_ds.create_dict_iterator(num_epochs=max(epochs - self.start_epoch, 1),
                                                output_numpy=False)
        for epoch in range(self.start_epoch + 1, epochs + 1):
            record = self.train_one_epoch(epoch, it)
            if epoch % max(int(self.cfg.train.eval_interval), 1) == 0 or epoch == epochs:
                record.update(self.evaluate(epoch))
            self.end_epoch(epoch, record)
        if self.start_epoch >= epochs:
            self.log.info("nothing to do: the checkpoint already covers all %d epochs", epochs)
        self.log.info("done: best top-1 %.2f%% at epoch %d; checkpoints in %s",
                      self.best_top1, self.best_epoch, self.out)
        result = {**record, "best_top1": self.best_top1, "best_epoch": self.best_epoch}
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def train_one_epoch(self, epoch: int, iterator) -> dict:
        """One pass over this rank's shard; returns the epoch's training record.

        The step's loss stays on the device: reading it every step would make the host wait for
        each step before queueing the next one on a GPU/NPU. The losses are read as one vector
        every ``train.log_interval`` steps (``_READ_EVERY`` when 0) and at the end of the epoch,
        where the divergence check looks at each of them; the skipped-step guard acts on every
        step (``finite`` is the host bool the loss-scaled step already reads)."""
        t, spe = self.cfg.train, self.steps_per_epoch
        self.network.set_train(True)
        bar = progress_bar(total=spe, desc=f"epoch {epoch}/{t.epochs}", unit="step",
                           disable=not (self.rank == 0 and t.progress_bar), dynamic_ncols=True,
                           mininterval=1.0, leave=False)
        log_every = int(t.log_interval or 0)
        read_every = log_every or _READ_EVERY
        pending, loss_sum, n_img, n_skipped, steps = [], 0.0, 0, 0, 0
        speed = _Throughput(self.world_size)
        t0 = time.perf_counter()
        for i, batch in enumerate(iterator):
            gstep = (epoch - 1) * spe + i
            for cb in self.callbacks:
                cb.on_train_step(self, gstep, batch)
            images = batch["image"]
            loss, finite = self.step_fn(images, batch["label"])
            if self.skip_guard is not None:  # raises when stalled at the lowest loss scale
                self.skip_guard(finite, self.scaler.scale_value)
            n_skipped += not finite
            pending.append((loss, finite))
            n_img, steps = n_img + int(images.shape[0]), i + 1
            ips = speed.update(n_img)
            bar.update(1)
            if steps % read_every == 0:
                loss_sum, loss_v = self._read_losses(epoch, steps, pending, loss_sum)
                pending = []
                lr = self.lrs[min(gstep, len(self.lrs) - 1)]
                bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", img_s=f"{ips:.0f}",
                                refresh=False)
                if self.rank == 0 and log_every and steps % log_every == 0:
                    self.log.info("epoch %d step %d/%d loss %.4f lr %.3e %.0f img/s", epoch,
                                  steps, spe, loss_v, lr, ips)
        if pending:
            loss_sum, _ = self._read_losses(epoch, steps, pending, loss_sum)
        bar.close()
        secs = time.perf_counter() - t0
        # samples the pipeline could not decode this epoch (replaced, never mislabelled):
        # the data's epochs count from 0, and a resumed run's sampler starts at its epoch
        n_bad = self.train_info.bad_count(epoch - 1)
        if n_bad:
            self.log.warning("epoch %d: %s", epoch, self.train_info.bad_report(epoch - 1))
        return {"epoch": epoch, "global_step": epoch * spe, "train_loss": loss_sum / max(steps, 1),
                "lr": self.lrs[min(epoch * spe - 1, len(self.lrs) - 1)],
                "epoch_seconds": round(secs, 3),
                "train_images_per_s": round(n_img * self.world_size / max(secs, 1e-9), 1),
                "skipped_steps": n_skipped, "bad_samples": n_bad}

    def _read_losses(self, epoch: int, steps: int, pending, loss_sum: float):
        """Read the losses of the ``pending`` (loss, finite) steps ending at ``steps`` (one host
        read) and check each applied step's loss is finite; returns (``loss_sum`` plus them, added
        in step order as before, the last one)."""
        values = ops.stack([loss for loss, _ in pending]).asnumpy()
        first = steps - len(pending)
        for k, ((_, finite), v) in enumerate(zip(pending, values)):
            v = float(v)
            if finite and not math.isfinite(v):
                raise DivergenceError(
                    f"training diverged at epoch {epoch} step {first + k}: loss is {v}; lower "
                    f"optim.lr ({self.cfg.optim.lr}) or enable train.loss_scale; "
                    f"{self.last_path} still holds the last good epoch")
            loss_sum += v
        return loss_sum, float(values[-1])

    def evaluate(self, epoch: int) -> dict:
        """Top-1/top-5 of the whole ``eval.split``, each rank evaluating its shard."""
        broadcast_from_main_rank(self.bn_stats)
        m = evaluate(self.network, self.eval_parts,
                     progress=self.rank == 0 and bool(self.cfg.train.progress_bar),
                     desc=f"eval {epoch}")
        report = self.eval_parts.info.bad_report()
        if report:  # each rank names its own shard's bad samples (in its own log)
            self.log.warning("evaluation: %s", report)
        return {"top1": m["top1"], "top5": m["top5"], "eval_samples": m["num_samples"],
                "eval_samples_per_rank": m["samples_per_rank"], "eval_bad_samples": m["bad_samples"],
                "eval_images_per_s": round(m["images_per_s"], 1)}

    def _inline_ebv_bytes(self) -> int:
        return int(float(self.cfg.train.ckpt_inline_ebv_mb) * 2**20)

    def end_epoch(self, epoch: int, record: dict) -> None:
        """Log the record; rank 0 appends it to metrics.jsonl and writes the checkpoints."""
        is_best = "top1" in record and record["top1"] > self.best_top1
        if is_best:
            self.best_top1, self.best_epoch = float(record["top1"]), epoch
        record["best_top1"], record["best_epoch"] = self.best_top1, self.best_epoch
        msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in record.items())
        self.log.info("epoch %d/%d: %s", epoch, self.cfg.train.epochs, msg)
        if self.rank == 0:
            # log first, then checkpoint: a kill in between makes the resume redo this epoch,
            # and truncate_after() drops the record written for it here
            self.jsonl.write(record)
            save_checkpoint(self.last_path, self.network, self.optimizer, epoch=epoch,
                            global_step=epoch * self.steps_per_epoch, config=self.cfg,
                            ebv=self.ebv, best_top1=self.best_top1, best_epoch=self.best_epoch,
                            metrics=record, class_names=self.train_info.class_names,
                            extra_params=scaler_params(self.scaler),
                            ebv_inline_max_bytes=self._inline_ebv_bytes())
            if is_best and self.cfg.train.keep_best:
                atomic_copy(self.last_path, self.best_path)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, record)


class _Throughput:
    """Images/s over all ranks since the first step (which includes graph compilation)."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.t_first = self.n_first = None

    def update(self, n_img: int) -> float:
        if self.t_first is None:
            self.t_first, self.n_first = time.perf_counter(), n_img
        el = time.perf_counter() - self.t_first
        return (n_img - self.n_first) * self.world_size / el if el > 0 else 0.0


def train(cfg: Config, resume: Optional[str] = None,
          callbacks: Sequence[Callback] = ()) -> dict:
    """Set up MindSpore from ``cfg`` and train; returns the last epoch's record.

    ``cfg`` is validated (every key, then the machine: ``check_run``) before anything else."""
    cfg = check_run(validate(cfg), training=True)
    setup_context(cfg)
    rank, world = init_parallel(cfg)
    return Trainer(cfg, resume=resume, rank=rank, world_size=world, callbacks=callbacks).fit()

"""The training loop: ``Trainer(cfg, resume=...).fit()``: ``setup`` builds and checks everything
before writing to the run folder, then per epoch ``train_one_epoch`` -> ``evaluate`` ->
``end_epoch`` (metrics.jsonl, last.ckpt, best.ckpt)."""
from __future__ import annotations

import math
import os
import time
from typing import Mapping, Optional, Sequence

from mindspore import ops

from ebv_ms.config import Config, check_run, save_config, validate
from ebv_ms.errors import DivergenceError
from ebv_ms.progress import progress_bar
from .builders import (build_data, build_eval, build_network, build_training, scaler_params,
                       setup_context)
from .checkpoint import (CheckpointError, CheckpointState, atomic_copy, checkpoint_ebv,
                         load_checkpoint, restore, save_checkpoint)
from .distributed import broadcast_from_main_rank, check_same_start, init_distributed
from .ebv_source import resolve_ebv, start_run_ebv_file
from .evaluator import evaluate
from .run_folder import (JsonlLog, RunLock, check_class_names, open_log_file, remove_stale_temps,
                         setup_logger)
from .train_step import SkippedStepGuard, resolve_amp_level

_READ_EVERY = 50  # with train.log_interval 0 the losses are still read (and checked) this often
_EBV_RECIPE_KEYS = ("path", "alpha", "method", "seed")  # a resume must not change these


def find_resume(resume: Optional[str], last_path: str, log) -> Optional[CheckpointState]:
    """The checkpoint to resume from (None: a fresh run); ``resume`` "auto"/"": ``last_path``."""
    if resume is None:
        if os.path.isfile(last_path):
            raise CheckpointError(
                f"{last_path} already exists: pass --resume to continue that run, or set "
                "output_dir to a new folder (nothing is overwritten)")
        return None
    path = last_path if resume in ("auto", "") else resume
    if not os.path.isfile(path):
        if resume in ("auto", ""):
            log.info("--resume: no checkpoint at %s yet; starting from scratch", path)
            return None
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    state = load_checkpoint(path)
    if not state.is_ebv_ms:
        raise CheckpointError(f"--resume: {path} is a plain weights file without optimizer "
                              "state/epoch; resume needs a last.ckpt written by train.py")
    return state


class Trainer:
    """Owns one run; ``fit()`` returns the final record. ``callbacks`` (tests/probes.py) watch the
    loop: their hooks on_train_begin, on_train_step, on_epoch_end and on_train_end, in order."""

    def __init__(self, cfg: Config, resume: Optional[str] = None, rank: int = 0,
                 world_size: int = 1, callbacks: Sequence = ()):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.resume_arg, self.callbacks = resume, list(callbacks)
        self.out = str(cfg.output_dir)
        self.last_path = os.path.join(self.out, "last.ckpt")
        self.best_path = os.path.join(self.out, "best.ckpt")
        self.lock = RunLock(self.out)  # taken by rank 0 only, which alone writes here
        self.jsonl: Optional[JsonlLog] = None                    # rank 0's metrics.jsonl
        self.start_epoch, self.best_top1, self.best_epoch = 0, -1.0, 0
        self.inline_ebv_bytes = int(float(cfg.train.ckpt_inline_ebv_mb) * 2**20)

    def setup(self) -> None:
        """Build the run and check a resumed checkpoint; the run folder changes only at the end."""
        cfg, t = self.cfg, self.cfg.train
        if self.rank == 0:
            self.lock.acquire()  # before anything else: a second run into this folder stops here
        self.log = setup_logger(self.out, self.rank)
        state = find_resume(self.resume_arg, self.last_path, self.log)
        check_same_start(state, self.rank, self.world_size)  # else the ranks would hang apart

        self.train_ds, self.train_info = build_data(cfg, "train", int(t.batch_size), True,
                                                    self.world_size, self.rank)
        # create_dataset has refused another number of classes, and a shard under one batch
        self.steps_per_epoch = spe = int(self.train_ds.get_dataset_size())
        if state is None:
            self.ebv = resolve_ebv(cfg, self.rank, progress=self.rank == 0)
        else:  # the classes of the checkpoint and of both folders' classes.json; its EBV set
            for folder in dict.fromkeys([self.out, os.path.dirname(os.path.abspath(state.path))]):
                check_class_names(folder, self.train_info.class_names)
            check_class_names(state.path, self.train_info.class_names, state.class_names)
            recorded = (state.config or {}).get("ebv") or {}
            if not isinstance(recorded, Mapping):  # a crafted record ("seed" in it: a TypeError)
                raise CheckpointError(f"{state.path}: damaged checkpoint metadata (its config's "
                                      f"'ebv' is a {type(recorded).__name__}, not a mapping)")
            changed = [k for k in _EBV_RECIPE_KEYS if k in recorded and recorded[k] != cfg.ebv[k]]
            if changed:
                was, now = (", ".join(f"ebv.{k}={c[k]!r}" for k in changed)
                            for c in (recorded, cfg.ebv))
                raise CheckpointError(f"{state.path} was trained with {was} but this run sets "
                                      f"{now}; resume with the same 'ebv' settings as the original "
                                      "run (or start a new output_dir)")
            # found or rebuilt, verified
            self.ebv = checkpoint_ebv(state, cfg, rank=self.rank, progress=self.rank == 0)
        amp_level = resolve_amp_level(cfg.train.amp_level, cfg.device_target)
        self.network = build_network(cfg, self.ebv, amp_level)
        self.lrs, self.optimizer, self.scaler, self.step_fn = build_training(cfg, self.network,
                                                                             spe, amp_level)
        resumed = None
        if state is not None:  # before any step compiles: a compiled graph keeps the old buffers
            restore(state, self.network, self.optimizer, scaler_params(self.scaler))
            if state.global_step != state.epoch * spe:
                raise CheckpointError(f"{state.path}: global step {state.global_step} != epoch "
                                      f"{state.epoch} x {spe} steps; the data or train.batch_size "
                                      "changed since that run; resume with the same settings")
            resumed = state.path
            self.start_epoch, self.best_top1, self.best_epoch = (state.epoch, state.best_top1,
                                                                 state.best_epoch)
            state = None  # its tensors and EBV copy (~4 GB per rank at 100k classes) are freed
        self.skip_guard = SkippedStepGuard.for_scaler(self.scaler, int(t.max_skipped_steps))
        self.eval_parts = build_eval(cfg, self.network, self.rank, self.world_size)
        from ebv_ms.models.classifier import parameter_totals
        counts = parameter_totals(self.network)
        self.log.info("model %s + %s head: %s parameters (%s trainable, %s frozen; BatchNorm "
                      "statistics apart); amp %s; mode %s; %d step(s)/epoch x %d epochs; world "
                      "size %d", cfg.model.backbone, cfg.model.head, f"{counts['total']:,}",
                      f"{counts['trainable']:,}", f"{counts['frozen']:,}", amp_level, cfg.mode,
                      spe, t.epochs, self.world_size)

        # every check has passed: from here on the run owns the folder
        if self.rank == 0:
            remove_stale_temps([self.out, os.path.join(self.out, "logs")])
            open_log_file(self.log, self.out)
            self.train_info.save_class_mapping(self.out)  # index -> name, for eval/inference
            self.jsonl = JsonlLog(os.path.join(self.out, "metrics.jsonl"))
            self.jsonl.truncate_after(self.start_epoch)
            save_config(cfg, os.path.join(self.out, "config.yaml"))
            if self.ebv is not None and self.ebv.vectors.nbytes > self.inline_ebv_bytes:
                start_run_ebv_file(self.out, self.ebv)  # off the step path
        if resumed is not None:
            self.log.info("resumed from %s: epoch %d/%d done, best top-1 %.2f%% (epoch %d)",
                          resumed, self.start_epoch, t.epochs, self.best_top1, self.best_epoch)
            if self.rank == 0 and t.keep_best and self.best_epoch == self.start_epoch > 0:
                try:  # a kill between writing last.ckpt and copying it to best.ckpt (or none)
                    ok = load_checkpoint(self.best_path).epoch == self.start_epoch
                except CheckpointError:
                    ok = False
                if not ok:
                    atomic_copy(resumed, self.best_path)
            self.train_info.set_start_epoch(self.start_epoch)  # the uninterrupted run's data order

    def fit(self) -> dict:
        try:
            try:
                self.setup()
            except BaseException:  # nothing written yet: leave no empty run folder behind
                self.lock.release(undo=True)  # (a lock never taken, on ranks > 0: nothing to do)
                raise
            epochs = int(self.cfg.train.epochs)
            for cb in self.callbacks:
                cb.on_train_begin(self)
            record = {"best_top1": self.best_top1, "best_epoch": self.best_epoch}  # no epoch left
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
            for cb in self.callbacks:
                cb.on_train_end(self, record)
            return record
        finally:
            self.lock.release()

    def train_one_epoch(self, epoch: int, iterator) -> dict:
        """One pass over this rank's shard. Losses stay on the device (a read per step makes the
        host wait for each step), read as one vector every ``read_every`` steps and at the end."""
        t, spe = self.cfg.train, self.steps_per_epoch
        self.network.set_train(True)
        bar = progress_bar(total=spe, desc=f"epoch {epoch}/{t.epochs}", unit="step",
                           disable=not (self.rank == 0 and t.progress_bar), dynamic_ncols=True,
                           mininterval=1.0, leave=False)
        log_every = int(t.log_interval or 0)
        read_every = log_every or _READ_EVERY
        pending, loss_sum, n_img, n_skipped, steps = [], 0.0, 0, 0, 0
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
            if steps == 1:  # images/s over all ranks since the first step (and its compilation)
                t_first, n_first = time.perf_counter(), n_img
            el = time.perf_counter() - t_first
            ips = (n_img - n_first) * self.world_size / el if el > 0 else 0.0
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
        n_bad = self.train_info.bad_count(epoch - 1)  # replaced samples; data epochs count from 0
        if n_bad:
            self.log.warning("epoch %d: %s", epoch, self.train_info.bad_report(epoch - 1))
        return {"epoch": epoch, "global_step": epoch * spe, "train_loss": loss_sum / max(steps, 1),
                "lr": self.lrs[min(epoch * spe - 1, len(self.lrs) - 1)],
                "epoch_seconds": round(secs, 3),
                "train_images_per_s": round(n_img * self.world_size / max(secs, 1e-9), 1),
                "skipped_steps": n_skipped, "bad_samples": n_bad}

    def _read_losses(self, epoch: int, steps: int, pending, loss_sum: float):
        """(``loss_sum`` + the ``pending`` (loss, finite) losses, the last); applied ones finite."""
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
        # evaluation on every rank uses rank 0's BatchNorm statistics: the model that is saved
        broadcast_from_main_rank(p for p in self.network.get_parameters()
                                 if p.name.endswith(("moving_mean", "moving_variance")))
        m = evaluate(self.network, self.eval_parts,
                     progress=self.rank == 0 and bool(self.cfg.train.progress_bar),
                     desc=f"eval {epoch}")
        report = self.eval_parts.info.bad_report()
        if report:  # each rank names its own shard's bad samples (in its own log)
            self.log.warning("evaluation: %s", report)
        return {"top1": m["top1"], "top5": m["top5"], "eval_samples": m["num_samples"],
                "eval_samples_per_rank": m["samples_per_rank"], "eval_bad_samples":
                m["bad_samples"], "eval_images_per_s": round(m["images_per_s"], 1)}

    def end_epoch(self, epoch: int, record: dict) -> None:
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
                            ebv_inline_max_bytes=self.inline_ebv_bytes)
            if is_best and self.cfg.train.keep_best:
                atomic_copy(self.last_path, self.best_path)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, record)


def train(cfg: Config, resume: Optional[str] = None, callbacks: Sequence = ()) -> dict:
    """Check ``cfg`` and the machine, set up MindSpore and train; returns the last record."""
    cfg = check_run(validate(cfg), training=True)
    setup_context(cfg)
    rank, world = init_distributed(cfg)
    return Trainer(cfg, resume=resume, rank=rank, world_size=world, callbacks=callbacks).fit()

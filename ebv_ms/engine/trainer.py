"""The training loop: data, model + head, EBV set, optimizer, per-epoch eval, checkpoints, logs.

MindSpore compiles the step (``ms.jit`` in GRAPH mode); the loop itself stays in Python so it
can evaluate each epoch, write ``last.ckpt`` / ``best.ckpt`` atomically, and show a tqdm bar
with images/s. A run killed at any point is continued with ``resume=True``: it reloads
``last.ckpt`` (weights, optimizer state incl. global step, loss scale, best so far) and
starts at the first epoch that checkpoint does not cover, so no epoch is lost or repeated.
"""
from __future__ import annotations

import math
import os
import signal
import time
from typing import Optional, Tuple

import numpy as np
from tqdm import tqdm

import mindspore as ms

from ebv_ms.config import Config, ConfigError, save_config
from .checkpoint import (CheckpointError, atomic_copy, load_checkpoint, restore_checkpoint,
                         save_checkpoint)
from .ebv_source import resolve_ebv
from .evaluator import count_parameters, evaluate
from .logger import JsonlLog, setup_logger
from .train_step import (SkippedStepGuard, build_eval_step, build_train_step, create_loss_scaler,
                         resolve_amp_level)

__all__ = ["setup_context", "init_parallel", "build_network", "build_data", "Trainer", "train"]

MODES = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}


def setup_context(cfg) -> None:
    """Device, execution mode (graph | pynative) and the global seed, from the config."""
    device = str(cfg.device_target)
    if device not in ("CPU", "GPU", "Ascend"):
        raise ConfigError(f"config key 'device_target' must be CPU, GPU or Ascend, got {device!r}")
    mode = str(cfg.mode).lower()
    if mode not in MODES:
        raise ConfigError(f"config key 'mode' must be graph or pynative, got {cfg.mode!r}")
    device_id = os.environ.get("DEVICE_ID")  # set per rank by the launch scripts
    if device != "CPU" and device_id not in (None, ""):
        ms.set_device(device, int(device_id))
    else:
        ms.set_device(device)
    ms.set_context(mode=MODES[mode])
    ms.set_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))


def init_parallel(cfg) -> Tuple[int, int]:
    """(rank, world_size); sets the data-parallel context when launched by mpirun/msrun."""
    from .distributed import init_distributed
    return init_distributed(cfg)


def build_network(cfg, ebv=None):
    """``create_classifier`` with the ``model`` section as its arguments, plus the EBV set."""
    from ebv_ms.models import create_classifier
    kwargs = dict(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model)
    return create_classifier(ebv=ebv, **kwargs)


def build_data(cfg, split: str, batch_size: int, is_training: bool, num_shards: int = 1,
               shard_id: int = 0):
    """``create_dataset`` with the ``data`` section; ``eval.test_size`` S sets the evaluation
    transform to resize S/0.875 then centre-crop S (the usual 256 -> 224 ratio)."""
    from ebv_ms.data import create_dataset
    data_cfg = dict(cfg.data)
    size = cfg.eval.get("test_size")
    if size and not is_training:
        data_cfg["eval_crop"] = int(size)
        data_cfg["eval_resize"] = int(round(int(size) / 0.875))
    return create_dataset(data_cfg, split, batch_size, is_training, num_shards=num_shards,
                          shard_id=shard_id, seed=int(cfg.seed),
                          num_classes=int(cfg.model.num_classes))


class Trainer:
    """Owns one run: ``Trainer(cfg, resume=...).fit()`` returns the final record."""

    def __init__(self, cfg: Config, resume: Optional[str] = None, rank: int = 0,
                 world_size: int = 1):
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        self.out = str(cfg.output_dir)
        self.last_path = os.path.join(self.out, "last.ckpt")
        self.best_path = os.path.join(self.out, "best.ckpt")
        os.makedirs(self.out, exist_ok=True)
        self.log = setup_logger(self.out, rank)
        self.jsonl = JsonlLog(os.path.join(self.out, "metrics.jsonl")) if rank == 0 else None
        self.resume_state = self._find_resume(resume)
        self.probe = None
        if world_size > 1:  # per-rank evidence (shard seen, final weights) for the launch test
            from .distributed import RankProbe
            self.probe = RankProbe(self.out)

    # ---------------------------------------------------------------- set-up
    def _find_resume(self, resume: Optional[str]):
        if resume is None:
            if os.path.isfile(self.last_path):
                raise CheckpointError(
                    f"{self.last_path} already exists: pass --resume to continue that run, or set "
                    "output_dir to a new folder (nothing is overwritten)")
            return None
        path = self.last_path if resume in ("auto", "") else resume
        if not os.path.isfile(path):
            if resume in ("auto", ""):
                self.log.info("--resume: no checkpoint at %s yet; starting from scratch", path)
                return None
            raise CheckpointError(f"--resume: checkpoint not found: {path}")
        state = load_checkpoint(path)
        if not state.is_ebv_ms:
            raise CheckpointError(f"--resume: {path} is a plain weights file without optimizer "
                                  "state/epoch; resume needs a last.ckpt written by train.py")
        return state

    def _check_config(self):
        """Fail on a bad optim/scheduler/train value before any data or model is built."""
        from ebv_ms.optim import OPTIMIZERS
        from ebv_ms.scheduler import SCHEDULERS
        cfg = self.cfg
        if str(cfg.optim.opt).lower() not in OPTIMIZERS + ("momentum",):
            raise ConfigError(f"config key 'optim.opt': unknown optimizer {cfg.optim.opt!r}; "
                              f"choose one of {OPTIMIZERS}")
        if cfg.scheduler.name not in SCHEDULERS:
            raise ConfigError(f"config key 'scheduler.name': unknown scheduler "
                              f"{cfg.scheduler.name!r}; choose one of {SCHEDULERS}")
        for key in ("epochs", "batch_size"):
            if int(cfg.train[key]) < 1:
                raise ConfigError(f"config key 'train.{key}' must be >= 1, got {cfg.train[key]}")
        if int(cfg.eval.batch_size) < 1:
            raise ConfigError(f"config key 'eval.batch_size' must be >= 1, got {cfg.eval.batch_size}")
        amp = resolve_amp_level(cfg.train.amp_level, cfg.device_target)
        create_loss_scaler(cfg.train.loss_scale, amp, float(cfg.train.loss_scale_value))
        SkippedStepGuard(int(cfg.train.max_skipped_steps))  # refuses a negative value

    def _build(self):
        self._check_config()
        cfg, t = self.cfg, self.cfg.train
        amp_level = resolve_amp_level(t.amp_level, cfg.device_target)
        self.jit = str(cfg.mode).lower() == "graph"
        self.train_ds, self.train_info = build_data(cfg, "train", int(t.batch_size), True,
                                                    self.world_size, self.rank)
        if self.rank == 0:
            self.val_ds, self.val_info = build_data(cfg, str(cfg.eval.split),
                                                    int(cfg.eval.batch_size), False)
        if self.rank == 0:  # class index -> name, saved with the run (eval/inference use it)
            self.train_info.save_class_mapping(self.out)
        n_data = int(self.train_info.num_classes)
        if n_data != int(cfg.model.num_classes):
            raise ConfigError(f"config key 'model.num_classes' is {cfg.model.num_classes} but the "
                              f"training data has {n_data} classes; set model.num_classes={n_data}")
        self.steps_per_epoch = int(self.train_ds.get_dataset_size())
        if self.steps_per_epoch < 1:
            raise ConfigError(f"config key 'train.batch_size' ({t.batch_size}) is larger than this "
                              "rank's share of the training data; lower it")

        self.ebv = resolve_ebv(cfg, self.rank, progress=self.rank == 0, logger=self.log)
        st = self.resume_state
        if st is not None and st.ebv_checksum and self.ebv is not None \
                and st.ebv_checksum != self.ebv.checksum():
            raise CheckpointError(f"{st.path} was trained with EBV set {st.ebv_checksum}, but this "
                                  f"config gives {self.ebv.checksum()}; resume with the same "
                                  "'ebv' settings (or ebv.path) as the original run")
        self.network = build_network(cfg, self.ebv)
        from ebv_ms.models.amp import apply_mixed_precision
        self.network = apply_mixed_precision(self.network, amp_level)  # embedding stays fp32
        from ebv_ms.loss import create_loss
        self.loss_fn = create_loss(**dict(cfg.loss))

        from ebv_ms.optim import create_optimizer
        from ebv_ms.scheduler import create_scheduler
        s, o = cfg.scheduler, cfg.optim
        self.lrs = create_scheduler(self.steps_per_epoch, int(t.epochs), float(o.lr), name=s.name,
                                    warmup_epochs=float(s.warmup_epochs),
                                    warmup_factor=float(s.warmup_factor), min_lr=float(s.min_lr))
        self.optimizer = create_optimizer(self.network, opt=o.opt, lr=self.lrs,
                                          weight_decay=float(o.weight_decay),
                                          momentum=float(o.momentum), nesterov=bool(o.nesterov),
                                          filter_bias_and_bn=bool(o.filter_bias_and_bn),
                                          betas=tuple(o.betas), eps=float(o.eps))
        self.scaler = create_loss_scaler(t.loss_scale, amp_level, float(t.loss_scale_value))
        self.step_fn = build_train_step(self.network, self.loss_fn, self.optimizer, jit=self.jit,
                                        loss_scaler=self.scaler,
                                        clip_grad_norm=float(t.clip_grad_norm))
        self.skip_guard = SkippedStepGuard.for_scaler(self.scaler, int(t.max_skipped_steps))
        self.eval_step = (build_eval_step(self.network, min(5, int(cfg.model.num_classes)),
                                          jit=self.jit) if self.rank == 0 else None)
        counts = count_parameters(self.network)
        self.log.info("model %s + %s head: %s parameters (%s trainable, %s frozen); amp %s; "
                      "mode %s; %d step(s)/epoch x %d epochs; world size %d",
                      cfg.model.backbone, cfg.model.head, f"{counts['total']:,}",
                      f"{counts['trainable']:,}", f"{counts['frozen']:,}", amp_level, cfg.mode,
                      self.steps_per_epoch, t.epochs, self.world_size)

    def _scaler_params(self):
        if self.scaler is None or not hasattr(self.scaler, "scale_value"):
            return {}
        out = {"scale_value": self.scaler.scale_value}
        if hasattr(self.scaler, "counter"):
            out["counter"] = self.scaler.counter
        return out

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict:
        self._build()
        cfg, t = self.cfg, self.cfg.train
        epochs = int(t.epochs)
        start, self.best_top1, self.best_epoch = 0, -1.0, 0
        if self.resume_state is not None:
            st = self.resume_state
            restore_checkpoint(st, self.network, self.optimizer, self._scaler_params())
            start, self.best_top1, self.best_epoch = st.epoch, st.best_top1, st.best_epoch
            expect = start * self.steps_per_epoch
            if st.global_step != expect:
                raise CheckpointError(f"{st.path}: global step {st.global_step} != epoch {start} x "
                                      f"{self.steps_per_epoch} steps; the data or train.batch_size "
                                      "changed since that run; resume with the same settings")
            self.log.info("resumed from %s: epoch %d/%d done, best top-1 %.2f%% (epoch %d)",
                          st.path, start, epochs, self.best_top1, self.best_epoch)
            if self.rank == 0:
                self._repair_best(st)
        if self.rank == 0:
            self.jsonl.truncate_after(start)
            save_config(cfg, os.path.join(self.out, "config.yaml"))
        if start:
            # the shuffle order and per-batch randomness the uninterrupted run would use next
            self.train_info.set_start_epoch(start)
        record = {}
        it = self.train_ds.create_dict_iterator(num_epochs=max(epochs - start, 1),
                                                output_numpy=False)
        for epoch in range(start + 1, epochs + 1):
            record = self._train_epoch(epoch, it)
            if epoch % max(int(t.eval_interval), 1) == 0 or epoch == epochs:
                if self.rank == 0:
                    m = evaluate(self.network, self.val_ds, int(cfg.model.num_classes),
                                 jit=self.jit, progress=bool(t.progress_bar),
                                 desc=f"eval {epoch}", eval_step=self.eval_step)
                    n_bad_val = self.val_info.bad_count()
                    if n_bad_val:
                        self.log.warning("evaluation: %s", self.val_info.bad_report())
                    record.update({"top1": m["top1"], "top5": m["top5"],
                                   "eval_samples": m["num_samples"], "eval_bad_samples": n_bad_val,
                                   "eval_images_per_s": round(m["images_per_s"], 1)})
            self._end_epoch(epoch, record)
        if self.probe is not None:
            self.probe.finish(self.network, steps=epochs * self.steps_per_epoch)
        if start >= epochs:
            self.log.info("nothing to do: the checkpoint already covers all %d epochs", epochs)
        self.log.info("done: best top-1 %.2f%% at epoch %d; checkpoints in %s",
                      self.best_top1, self.best_epoch, self.out)
        return {**record, "best_top1": self.best_top1, "best_epoch": self.best_epoch}

    def _train_epoch(self, epoch: int, iterator) -> dict:
        t = self.cfg.train
        self.network.set_train(True)
        spe, kill_at = self.steps_per_epoch, t.debug_kill_at_step
        bar = tqdm(total=spe, desc=f"epoch {epoch}/{t.epochs}", dynamic_ncols=True,
                   disable=not (self.rank == 0 and t.progress_bar), mininterval=1.0, leave=False)
        loss_sum, n_img, n_skipped = 0.0, 0, 0
        t0 = time.perf_counter()
        t_first, i = None, -1
        for i, batch in enumerate(iterator):
            gstep = (epoch - 1) * spe + i
            if kill_at is not None and gstep == int(kill_at):
                self.log.warning("train.debug_kill_at_step=%d reached: SIGKILL", gstep)
                for h in self.log.handlers:
                    h.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            images, labels = batch["image"], batch["label"]
            if self.probe is not None:
                self.probe.record_batch(labels)
            loss, finite = self.step_fn(images, labels)
            loss_v = float(loss.asnumpy())
            if self.skip_guard is not None:  # raises when stalled at the lowest loss scale
                self.skip_guard(bool(finite.asnumpy()), self.scaler.scale_value)
            if not bool(finite.asnumpy()):
                n_skipped += 1
            elif not math.isfinite(loss_v):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} step {i}: loss is {loss_v}; lower "
                    f"optim.lr ({self.cfg.optim.lr}) or enable train.loss_scale; {self.last_path} "
                    "still holds the last good epoch")
            loss_sum += loss_v
            n_img += int(images.shape[0])
            if t_first is None:
                t_first = time.perf_counter()  # the first step includes graph compilation
                n_first = n_img
            el = time.perf_counter() - t_first
            ips = (n_img - n_first) * self.world_size / el if el > 0 else 0.0
            bar.update(1)
            bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{self.lrs[min(gstep, len(self.lrs) - 1)]:.2e}",
                            img_s=f"{ips:.0f}", refresh=False)
            if self.rank == 0 and t.log_interval and (i + 1) % int(t.log_interval) == 0:
                self.log.info("epoch %d step %d/%d loss %.4f lr %.3e %.0f img/s", epoch, i + 1,
                              spe, loss_v, self.lrs[gstep], ips)
        bar.close()
        secs = time.perf_counter() - t0
        steps = i + 1
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

    def _end_epoch(self, epoch: int, record: dict) -> None:
        is_best = "top1" in record and record["top1"] > self.best_top1
        if is_best:
            self.best_top1, self.best_epoch = float(record["top1"]), epoch
        record["best_top1"], record["best_epoch"] = self.best_top1, self.best_epoch
        msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in record.items())
        self.log.info("epoch %d/%d: %s", epoch, self.cfg.train.epochs, msg)
        if self.rank != 0:
            return
        # log first, then checkpoint: a kill in between makes the resume redo this epoch,
        # and truncate_after() drops the record written for it here
        self.jsonl.write(record)
        save_checkpoint(self.last_path, self.network, self.optimizer, epoch=epoch,
                        global_step=epoch * self.steps_per_epoch, config=self.cfg, ebv=self.ebv,
                        best_top1=self.best_top1, best_epoch=self.best_epoch, metrics=record,
                        extra_params=self._scaler_params())
        if is_best and self.cfg.train.keep_best:
            atomic_copy(self.last_path, self.best_path)

    def _repair_best(self, st) -> None:
        """A kill between writing last.ckpt and copying it to best.ckpt: finish the copy."""
        if not self.cfg.train.keep_best or st.best_epoch != st.epoch or st.epoch == 0:
            return
        try:
            ok = os.path.isfile(self.best_path) and load_checkpoint(self.best_path).epoch == st.epoch
        except CheckpointError:
            ok = False
        if not ok:
            atomic_copy(st.path, self.best_path)


def train(cfg: Config, resume: Optional[str] = None) -> dict:
    """Set up MindSpore from ``cfg`` and train; returns the last epoch's record."""
    setup_context(cfg)
    rank, world = init_parallel(cfg)
    return Trainer(cfg, resume=resume, rank=rank, world_size=world).fit()

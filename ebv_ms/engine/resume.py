"""Resume state: which checkpoint a run continues from, whether it fits, and where to start.

``ResumeState.find`` picks and loads the checkpoint (``--resume``: OUTPUT_DIR/last.ckpt,
``--resume-from``: a given file) and refuses to start a fresh run over an existing one. Then,
before anything in the run folder is written, the run checks it against what it built: the
data's classes (``check_classes``), the EBV set (``ebv``: found and verified), and after ``restore`` the
global step against ``epoch x steps_per_epoch`` (else the data or batch size changed).
``restore`` drops the loaded checkpoint (its raw tensors and the EBV copy: ~4 GB per rank at
100k classes) once its values are in the network and optimizer. ``start_data`` makes the next
pass the one the uninterrupted run would have made, and ``repair_best`` finishes a
``best.ckpt`` copy a kill interrupted.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from .checkpoint import (CheckpointError, CheckpointState, atomic_copy, load_checkpoint,
                         network_from_checkpoint, restore)
from .run_folder import check_class_names

__all__ = ["ResumeState"]

# the settings that choose the EBV set: a resume must not change them (cache_dir and max_steps
# only say where the set is kept and how long generation may take)
_EBV_RECIPE_KEYS = ("path", "alpha", "method", "seed")


@dataclass
class ResumeState:
    """What a resumed run continues from (``epoch`` = last completed epoch, 1-based)."""

    path: str
    epoch: int
    global_step: int
    best_top1: float
    best_epoch: int
    checkpoint: Optional[CheckpointState] = field(default=None, repr=False)  # until restore()

    @classmethod
    def find(cls, resume: Optional[str], last_path: str,
             log: logging.Logger) -> Optional["ResumeState"]:
        """None for a fresh run (refused over an existing ``last_path``); else the loaded state.
        ``resume``: None (fresh), "auto"/"" (``last_path`` if it exists), or a checkpoint path."""
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
        return cls(path, state.epoch, state.global_step, state.best_top1, state.best_epoch, state)

    # ------------------------------------------------------------- checks (change nothing)
    def check_classes(self, run_folder: str, class_names: Sequence[str]) -> None:
        """The data must have the classes, in order, that the checkpoint records, and those of
        the run's ``classes.json`` (and of the one beside the checkpoint, for ``--resume-from``
        another folder)."""
        for folder in dict.fromkeys([run_folder, os.path.dirname(os.path.abspath(self.path))]):
            check_class_names(folder, class_names)
        check_class_names(self.path, class_names, self.checkpoint.class_names)

    def network(self, cfg, rank: int, amp_level: str, log: logging.Logger):
        """``(network, ebv)`` from the checkpoint (``network_from_checkpoint``), after refusing
        changed 'ebv' settings: the set is the one it was trained with (inside it, next to it,
        cached, or rebuilt from a closed-form recipe), checked against its recorded checksum."""
        recorded = (self.checkpoint.config or {}).get("ebv") or {}
        changed = [k for k in _EBV_RECIPE_KEYS if k in recorded and recorded[k] != cfg.ebv[k]]
        if changed:
            raise CheckpointError(
                f"{self.path} was trained with " + ", ".join(
                    f"ebv.{k}={recorded[k]!r}" for k in changed) + " but this run sets " +
                ", ".join(f"ebv.{k}={cfg.ebv[k]!r}" for k in changed) + "; resume with the same "
                "'ebv' settings as the original run (or start a new output_dir)")
        return network_from_checkpoint(self.checkpoint, cfg, rank=rank, progress=rank == 0,
                                       amp_level=amp_level, logger=log)

    def restore(self, network, optimizer, extra_params: Mapping, steps_per_epoch: int) -> None:
        """Load the optimizer and loss-scale state; check the step count; drop the file's
        tensors."""
        restore(self.checkpoint, network, optimizer, extra_params)
        self.checkpoint = None  # the values now live in the network and optimizer
        expect = self.epoch * steps_per_epoch
        if self.global_step != expect:
            raise CheckpointError(f"{self.path}: global step {self.global_step} != epoch "
                                  f"{self.epoch} x {steps_per_epoch} steps; the data or "
                                  "train.batch_size changed since that run; resume with the same "
                                  "settings")

    # ------------------------------------------------------------- after the checks
    def start_data(self, train_info) -> None:
        """The shuffle order and per-batch randomness the uninterrupted run would use next."""
        if self.epoch:
            train_info.set_start_epoch(self.epoch)

    def repair_best(self, best_path: str, keep_best: bool) -> None:
        """A kill between writing last.ckpt and copying it to best.ckpt: finish the copy."""
        if not keep_best or self.best_epoch != self.epoch or self.epoch == 0:
            return
        try:
            ok = os.path.isfile(best_path) and load_checkpoint(best_path).epoch == self.epoch
        except CheckpointError:
            ok = False
        if not ok:
            atomic_copy(self.path, best_path)

"""Callbacks: code that watches the training loop without living in it.

``Trainer(cfg, callbacks=[...])`` calls each hook of each callback in order, as mindcv's and
Keras' callbacks do. The loop itself has no test or debug switches; the tests install theirs
here (``tests/probes.py``: a per-rank probe of the shard and weights, a SIGKILL at a given step).
"""
from __future__ import annotations

__all__ = ["Callback"]


class Callback:
    """Override the hooks you need; ``trainer`` is the running ``Trainer`` (its ``network``,
    ``rank``, ``world_size``, ``steps_per_epoch``, ``log``, ``cfg``)."""

    def on_train_begin(self, trainer) -> None:
        """After set-up and resume, before the first step."""

    def on_train_step(self, trainer, global_step: int, batch) -> None:
        """Before each step, with its batch (``image``, ``label``); ``global_step`` counts from 0."""

    def on_epoch_end(self, trainer, epoch: int, record: dict) -> None:
        """After the epoch's evaluation, log record and checkpoint."""

    def on_train_end(self, trainer, result: dict) -> None:
        """After the last epoch (also when a resumed run had nothing left to do)."""

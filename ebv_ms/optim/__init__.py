"""Optimizers: ``create_optimizer`` (momentum SGD, AdamW) over trainable parameters only."""
from .optim_factory import OPTIMIZERS, create_optimizer

__all__ = ["create_optimizer", "OPTIMIZERS"]

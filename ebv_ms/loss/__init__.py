"""Losses: cross-entropy over head logits with label smoothing and soft (mixup) targets."""
from .ebv_loss import EBVLoss, create_loss

__all__ = ["EBVLoss", "create_loss"]

"""Learning-rate schedules as per-step lists: ``create_scheduler`` (warm-up + cosine)."""
from .scheduler_factory import SCHEDULERS, create_scheduler, warmup_cosine_lr

__all__ = ["create_scheduler", "warmup_cosine_lr", "SCHEDULERS"]

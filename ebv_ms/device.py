"""The one place that selects MindSpore's device (as torchvision's ``init_distributed_mode`` and
timm's ``init_distributed_device`` do for PyTorch)."""
from __future__ import annotations

import os
from typing import Optional


def set_device(target: Optional[str] = None) -> None:
    """Select ``target`` (None: the current one) and, on GPU/Ascend, this rank's card DEVICE_ID
    (set by msrun, and by `ebv_ms.tools.launch rank` under mpirun); calling it again is harmless."""
    import mindspore as ms
    target = target or ms.get_context("device_target")
    dev_id = os.environ.get("DEVICE_ID", "")  # device_id None: MindSpore's default
    ms.set_device(target, int(dev_id) if target != "CPU" and dev_id.isdigit() else None)

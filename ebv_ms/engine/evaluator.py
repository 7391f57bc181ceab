"""Top-1 / top-5 over a dataset, with images/s."""
from __future__ import annotations

import time
from typing import Dict

import numpy as np
from tqdm import tqdm

from .metrics import AccuracyMeter
from .train_step import build_eval_step

__all__ = ["evaluate", "count_parameters"]


def count_parameters(network) -> Dict[str, int]:
    """Total, trainable and frozen (e.g. the EBV matrix) parameter counts."""
    total = trainable = 0
    for p in network.get_parameters():
        n = int(np.prod(p.shape)) if p.shape else 1
        total += n
        if p.requires_grad:
            trainable += n
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def evaluate(network, dataset, num_classes: int, *, jit: bool = True, progress: bool = True,
             desc: str = "eval", eval_step=None) -> Dict[str, float]:
    """Run ``network`` (set to eval mode) over ``dataset``; returns top1/top5 (%), counts, img/s."""
    network.set_train(False)
    k = min(5, int(num_classes))
    step = eval_step or build_eval_step(network, k, jit=jit)
    meter = AccuracyMeter(ks=(1, 5))
    total = dataset.get_dataset_size()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
               mininterval=1.0)
    t0 = time.perf_counter()
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=False):
        idx = step(batch["image"]).asnumpy()
        labels = batch["label"].asnumpy()
        if labels.ndim != 1:
            raise ValueError("evaluation needs integer labels (B,); got soft targets: is mixup/"
                             "cutmix enabled on the evaluation split?")
        meter.update(idx, labels)
        bar.update(1)
        if bar.n % 10 == 0:
            bar.set_postfix(img_s=f"{meter.count / max(time.perf_counter() - t0, 1e-9):.0f}")
    bar.close()
    seconds = time.perf_counter() - t0
    out = meter.result()
    out["seconds"] = seconds
    out["images_per_s"] = meter.count / max(seconds, 1e-9)
    return out

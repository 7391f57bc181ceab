"""Top-1 / top-5 over the evaluation split: every rank evaluates its shard and the counts are
gathered in one collective. The sampler pads a shard with at most one repeat of another shard's
sample (so all ranks run as many batches); those last rows are left out of the counts."""
from __future__ import annotations

import time
from typing import Dict, Sequence

import numpy as np

from ebv_ms.progress import progress_bar

from .distributed import all_gather_counts


def topk_correct(topk_idx, labels, ks: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """How many rows have their label among the first k of ``topk_idx`` (B, K sorted best-first)."""
    hit = np.asarray(topk_idx) == np.asarray(labels).reshape(-1, 1)
    return {k: int(hit[:, :k].any(axis=1).sum()) for k in ks}


def evaluate(network, parts, *, progress: bool = True, desc: str = "eval") -> Dict[str, object]:
    """The whole split's top1/top5 (%), counts, bad samples and images/s; this rank's shard."""
    network.set_train(False)
    info = parts.info
    own = info.shard_samples - info.shard_padding   # rows of this shard that are its own samples
    correct, count = {1: 0, 5: 0}, 0
    bar = progress_bar(total=parts.dataset.get_dataset_size(), desc=desc, unit="batch",
                       disable=not progress, leave=False, dynamic_ncols=True, mininterval=1.0)
    t0 = time.perf_counter()
    for batch in parts.dataset.create_dict_iterator(num_epochs=1, output_numpy=False):
        idx = parts.step(batch["image"]).asnumpy()
        labels = batch["label"].asnumpy()  # (B,) int: build_eval's data has the eval recipe
        keep = max(0, min(len(labels), own - count))  # drop the padding at the end
        for k, c in topk_correct(idx[:keep], labels[:keep]).items():
            correct[k] += c
        count += keep
        bar.update(1)
        if bar.n % 10 == 0:
            bar.set_postfix(img_s=f"{count / max(time.perf_counter() - t0, 1e-9):.0f}",
                            refresh=False)
    bar.close()
    bad = set(info.bad.indices())  # of this shard's own samples (a padding repeat is another's)
    if info.shard_padding and bad:
        bad -= set(info.sampler.indices(0)[-info.shard_padding:].tolist())
    per_rank = all_gather_counts([correct[1], correct[5], count, len(bad)])
    seconds = time.perf_counter() - t0  # after the gather: the slowest rank's time
    c1, c5, n, bad = (int(v) for v in per_rank.sum(axis=0))
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "correct1": c1,
            "correct5": c5, "num_samples": n, "samples_per_rank": per_rank[:, 2].tolist(),
            "bad_samples": bad, "seconds": seconds, "images_per_s": n / max(seconds, 1e-9)}

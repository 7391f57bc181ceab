"""Mixed precision for a ``Classifier``: fp16 backbone, fp32 embedding (projection + head): the
heads are scale-invariant, so nothing bounds the embedding's norm (issue 13: 1.19e5 on CPU, tau
0.007, lr 0.5) and past fp16's 65,504 every O2 step is skipped. O1, MindSpore's rewrite,
regenerates each cell class's source as a new module (without the original's globals), so it
converts only the backbone (and the FC head's Dense), in a per-process temporary folder."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import mindspore as ms
from mindspore import nn

from ebv_ms.errors import ModelError


@functools.lru_cache(maxsize=None)
def _rewrite_dir() -> str:
    """O1's generated modules, read at the first step's compilation; removed at exit."""
    path = tempfile.mkdtemp(prefix="ebv_ms_amp_rewrite_")
    atexit.register(shutil.rmtree, path, True)
    return path


def _o1(cell: nn.Cell, dtype, what: str) -> nn.Cell:
    # MindSpore 2.10 hard-codes os.getcwd()/rewritten_network (rewrite/symbol_tree.py); nothing
    # else runs meanwhile: the data pipeline is not iterating yet when the model is built.
    old = os.getcwd()
    os.chdir(_rewrite_dir())
    try:
        return ms.amp.auto_mixed_precision(cell, "O1", dtype)
    except Exception as exc:  # noqa: BLE001 - the rewrite fails with arbitrary types
        raise ModelError(f"config key 'train.amp_level' is O1, but MindSpore's rewrite cannot "
                         f"convert the {what} ({type(exc).__name__}: {exc}); use "
                         "train.amp_level=O2 (the GPU/Ascend default) or O0") from exc
    finally:
        os.chdir(old)


def apply_mixed_precision(network: nn.Cell, amp_level: str, dtype=ms.float16) -> nn.Cell:
    """``network`` (a ``Classifier``) under ``amp_level``, its embedding in fp32: O2 / O3 / auto
    convert the whole network (same parameter names) and pin the projection back to fp32."""
    level = str(amp_level)
    if level == "O0":
        return network
    if level == "O1":
        network.backbone = _o1(network.backbone, dtype, "backbone")
        if isinstance(getattr(network.head, "fc", None), nn.Dense):
            network.head.fc = _o1(network.head.fc, dtype, "FC head")
        return network  # the projection and the fixed heads are left as they are: fp32
    projection = network.projection if getattr(network, "has_projection", False) else None
    network = ms.amp.auto_mixed_precision(network, level, dtype)
    if projection is not None:
        # O2/O3 mark every cell fp16; fp32 makes it cast its input up (measured: float32 out)
        projection.to_float(ms.float32)
    return network

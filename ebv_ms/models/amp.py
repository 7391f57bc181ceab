"""Mixed precision for a ``Classifier``: fp16 backbone, fp32 embedding (projection + head).

``mindspore.amp.auto_mixed_precision`` alone would also run the projection to d in fp16. The EBV
and cosine heads are scale-invariant, so nothing bounds the embedding's norm (issue 13: 1.19e5
on CPU, small CNN, tau 0.007, lr 0.5); past fp16's 65,504 every step under O2 is non-finite
and skipped. So the projection stays fp32 at every level; the heads keep themselves fp32
(``FrozenVectorHead.add_flags_recursive``).

O1 is MindSpore's rewrite: it regenerates each cell class's source as a new module (without
the original module's globals) in ``./rewritten_network/``. Here it is applied to the backbone
only (and to the FC head's Dense layer), so our heads are never regenerated, and it writes into
a per-process temporary folder instead of the working directory.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile

import mindspore as ms
from mindspore import nn

from ebv_ms.errors import ModelError

__all__ = ["apply_mixed_precision", "AMP_LEVELS"]

from ebv_ms.config import AMP_LEVELS  # noqa: E402 - the one list, with the config keys
_REWRITE_DIR = None


def _rewrite_dir() -> str:
    """A private folder for O1's generated modules, removed at exit. They must outlive the call:
    graph compilation reads their source (``inspect.getsource``) at the first step."""
    global _REWRITE_DIR
    if _REWRITE_DIR is None:
        _REWRITE_DIR = tempfile.mkdtemp(prefix="ebv_ms_amp_rewrite_")
        atexit.register(shutil.rmtree, _REWRITE_DIR, True)
    return _REWRITE_DIR


@contextlib.contextmanager
def _cwd(path: str):
    # MindSpore 2.10 hard-codes os.getcwd()/rewritten_network (rewrite/symbol_tree.py,
    # _get_cls_through_file); it has no setting for the folder. Nothing else runs meanwhile:
    # the data pipeline is not iterating yet when the model is built.
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _o1(cell: nn.Cell, dtype, what: str) -> nn.Cell:
    try:
        with _cwd(_rewrite_dir()):
            return ms.amp.auto_mixed_precision(cell, "O1", dtype)
    except Exception as exc:  # noqa: BLE001 - the rewrite fails with arbitrary types
        raise ModelError(
            f"config key 'train.amp_level' is O1, but MindSpore's rewrite cannot convert the {what} "
            f"({type(exc).__name__}: {exc}); use train.amp_level=O2 (the GPU/Ascend default) "
            "or O0") from exc


def apply_mixed_precision(network: nn.Cell, amp_level: str, dtype=ms.float16) -> nn.Cell:
    """``network`` (a ``Classifier``) under amp ``amp_level``, its embedding kept in fp32.

    O2 / O3 / auto convert the whole network (so parameter names, and checkpoints, are the
    same as without amp) and then pin the projection back to fp32; O1 converts the backbone
    (and an FC head's Dense) in place. Returns the network to train.
    """
    level = str(amp_level)
    if level not in AMP_LEVELS:
        raise ValueError(f"amp level must be one of {AMP_LEVELS}, got {amp_level!r}")
    if level == "O0":
        return network
    projection = network.projection if getattr(network, "has_projection", False) else None
    if level == "O1":
        network.backbone = _o1(network.backbone, dtype, "backbone")
        fc = getattr(network.head, "fc", None)
        if isinstance(fc, nn.Dense):
            network.head.fc = _o1(fc, dtype, "FC head")
        return network  # the projection and the fixed heads are left as they are: fp32
    network = ms.amp.auto_mixed_precision(network, level, dtype)
    if projection is not None:
        # O2/O3 mark every cell fp16 (auto casts its MatMul); the fp32 mark makes the cell cast
        # its fp16 input up and compute in fp32 (measured: the projection's output is float32)
        projection.to_float(ms.float32)
    return network

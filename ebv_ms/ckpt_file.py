"""MindSpore's ``.ckpt`` file (a protobuf of named tensors) read with checks first: MindSpore's
own loader trusts a tensor's dims, and crafted files crashed eval.py, and train.py through
``model.backbone_checkpoint``, with SIGSEGV or SIGABRT. Every checkpoint we read comes here."""
from __future__ import annotations

import math
import os
from typing import Dict, Union

import numpy as np

from .errors import EBVMSError

Entry = Union[np.ndarray, str]
MAX_DIMS = 8                        # MindSpore's own limit on a tensor's rank
DTYPES = {k: np.dtype(k.lower()) for k in (  # MindSpore's labels
    "Float16 Float32 Float64 Int8 UInt8 Int16 UInt16 Int32 UInt32 Int64 UInt64 Bool".split())}


class CheckpointError(EBVMSError, RuntimeError):
    """A checkpoint that cannot be used here (missing, damaged, crafted, or another model's)."""


def read_entries(path: str, hint: str = "use another checkpoint") -> Dict[str, Entry]:
    """A ``.ckpt`` as name -> read-only array or string; anything else is a ``CheckpointError``
    (``hint``: what to do instead)."""
    from google.protobuf import unknown_fields
    from mindspore.train.checkpoint_pb2 import Checkpoint

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a usable checkpoint ({why}); {hint}")

    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not a regular file (a checkpoint is a .ckpt file)")
    with open(path, "rb") as f:
        content = f.read()
    if content[-17:-10] == b"crc_num":  # MindSpore's optional CRC trailer (save crc_check=True)
        content = content[:-17]
    try:
        msg = Checkpoint.FromString(content)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from None
    del content
    if len(unknown_fields.UnknownFieldSet(msg)):
        raise bad("fields a MindSpore checkpoint does not have")
    parts: Dict[str, tuple] = {}
    for v in msg.value:
        if not v.HasField("tensor") or len(unknown_fields.UnknownFieldSet(v)) \
                or len(unknown_fields.UnknownFieldSet(v.tensor)):
            raise bad(f"entry {v.tag[:80]!r} is not a plain tensor")
        key = (v.tensor.tensor_type, tuple(v.tensor.dims))
        seen = parts.get(v.tag)  # a large tensor is written in consecutive chunks
        if seen is not None and v.tag != next(reversed(parts)):
            raise bad(f"{v.tag[:80]!r} appears twice")
        if seen is not None and seen[0] != key:
            raise bad(f"the chunks of {v.tag[:80]!r} disagree on dtype or shape")
        parts.setdefault(v.tag, (key, []))[1].append(v.tensor.tensor_content)
    del msg
    out: Dict[str, Entry] = {}
    for name in list(parts):
        (label, dims), chunks = parts.pop(name)
        data, what = b"".join(chunks), f"{name[:80]!r}"
        if label == "str":
            if dims != (0,) or len(data) % 4:
                raise bad(f"string {what} has dims {list(dims)[:10]} and {len(data)} bytes")
            try:
                out[name] = data.decode("utf-32-le").rstrip("\0")
            except UnicodeDecodeError:
                raise bad(f"string {what} is not UTF-32") from None
            continue
        if label not in DTYPES:
            raise bad(f"tensor {what} has dtype label {label[:40]!r}")
        if len(dims) > MAX_DIMS or any(d < 1 for d in dims):
            raise bad(f"tensor {what} has {len(dims)} dims {list(dims)[:10]} (1..{MAX_DIMS} "
                      "dims, each >= 1)")
        size = math.prod(dims) * DTYPES[label].itemsize
        if size != len(data):
            raise bad(f"tensor {what} declares {list(dims)} x {label} = {size} bytes but holds "
                      f"{len(data)}")
        out[name] = np.frombuffer(data, DTYPES[label]).reshape(dims)
    if not any(isinstance(v, np.ndarray) for v in out.values()):  # 0 bytes, say: not "no config"
        raise bad("empty: it holds no weight tensors")
    return out

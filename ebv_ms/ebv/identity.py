"""An EBV set's identity (its checksum plus N, d, alpha, method, seed): what a checkpoint
records, the file name a large set is kept under, and whether a given set is that set (a model
gives meaningless predictions against another set, so every load compares checksums)."""
from __future__ import annotations

import os
from typing import Mapping, Optional

import numpy as np

from .ebvset import EBVSet


def identity(ebv: EBVSet) -> dict:
    """The record a checkpoint keeps of ``ebv`` (``file``: set when it lives next to it)."""
    return {"checksum": ebv.checksum(), "num_classes": ebv.num_classes, "dim": ebv.dim,
            "alpha": ebv.alpha, "method": ebv.method, "seed": ebv.seed, "file": None}


def ebv_file_name(ebv: EBVSet) -> str:
    """File name of an external EBV set: shape and checksum, so one name is one set."""
    return f"ebv_N{ebv.num_classes}_d{ebv.dim}_{ebv.checksum()}.npz"


def safe_file_name(name) -> bool:
    """A plain file name (no folder part, no ``..``): resolved only inside a given folder."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
            and os.path.basename(name) == name and "/" not in name and "\\" not in name)


def describe(info: Mapping) -> str:
    """A recorded identity in words, for error messages."""
    where = f" (file {info['file']})" if info.get("file") else ""
    return (f"EBV set {info.get('checksum')}{where}: N={info.get('num_classes')}, "
            f"d={info.get('dim')}, alpha={info.get('alpha')}, method={info.get('method')}, "
            f"seed={info.get('seed')}")


def matches(info: Mapping, ebv: EBVSet, checksum: Optional[str] = None) -> bool:
    """Is ``ebv`` (or a set with ``checksum``) the recorded set? A plain weights file of an
    fp16-stored head records the set rounded to fp16: the given set rounded the same way."""
    if (checksum or ebv.checksum()) == info["checksum"]:
        return True
    dtype = info.get("dtype", "float32")
    if dtype == "float32" or ebv is None:
        return False
    return EBVSet(ebv.vectors.astype(dtype).astype(np.float32)).checksum() == info["checksum"]

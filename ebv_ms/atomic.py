"""Atomic file writes, used for everything the project saves (checkpoints, EBV sets, logs,
caches, demo archives).

``atomic_path(target)`` hands out a hidden temporary sibling of ``target``; when the block ends
cleanly the temporary is flushed to disk and ``os.replace``d over the target, so a kill at any
moment leaves either the old file or the new one, never half of one, and a failed write leaves
no temporary behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_path", "atomic_copy"]


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: str = "", fsync: bool = True) -> Iterator[str]:
    """Yield a temporary path in ``target``'s folder; replace ``target`` with it on success.

    ``suffix`` ends the temporary name, for writers that add an extension when it is missing
    (``np.savez`` adds ".npz", ``ms.save_checkpoint`` ".ckpt"). The folder is created.
    """
    folder, base = os.path.split(os.path.abspath(os.fspath(target)))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{base}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, os.fspath(target))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy ``src`` to ``dst`` atomically (see ``atomic_path``)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(os.fspath(src), tmp)

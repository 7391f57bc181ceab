"""Atomic file writes, used for every file the project writes whole (checkpoints, EBV sets,
config.yaml, classes.json, export sidecars, caches, demo archives); logs are appended line by
line instead.

``atomic_path(target)`` hands out a hidden temporary sibling of ``target``; when the block ends
cleanly the temporary is flushed to disk and ``os.replace``d over the target, so a kill at any
moment leaves either the old file or the new one, never half of one, and a failed write leaves
no temporary behind. A write that fails for lack of space or permission (``OSError``) is
reported as ``WriteError`` (an ``OSError`` and an ``EBVMSError``) naming the target and saying
that its previous version is intact, so the command lines print one line instead of a
traceback and the user knows ``last.ckpt`` survived.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator, Union

from .errors import WriteError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_path", "atomic_copy", "WriteError"]


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
    target = os.fspath(target)
    folder, base = os.path.split(os.path.abspath(target))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    stem = f".{base}.tmp{os.getpid()}"
    tmp = os.path.join(folder, stem + suffix)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        if isinstance(exc, WriteError):
            raise
        raise _write_error(target, exc) from exc
    finally:
        # the temporary, and any file the writer made beside it: ms.save_checkpoint writes
        # STEM.tmp first and leaves it behind when the disk is full, which keeps the disk full
        for name in os.listdir(folder):
            if name.startswith(stem):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))


def _write_error(target: str, exc: OSError) -> WriteError:
    why = exc.strerror or str(exc)
    if os.path.isfile(target):
        kept = f"the previous {os.path.basename(target)} is intact (nothing was replaced)"
    else:
        kept = "nothing was written"
    err = WriteError(f"could not write {target}: {why}; {kept}. Free space or choose a "
                     "writable folder, then run again")
    err.errno = exc.errno  # callers may still test for ENOSPC / EROFS
    return err


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy ``src`` to ``dst`` atomically (see ``atomic_path``)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(os.fspath(src), tmp)

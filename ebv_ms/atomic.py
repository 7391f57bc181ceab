"""Atomic file writes, for every file the project writes whole (checkpoints, EBV sets, config.yaml,
classes.json, export sidecars, caches, demo archives); logs are appended line by line.

A kill at any moment leaves the old file or the new one, never half of one. A write that fails
(``OSError``: no space, no permission) raises ``WriteError`` naming the target and saying its
previous version is intact, so the command lines print one line and the user knows ``last.ckpt``
survived.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator, Union

from .errors import WriteError

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_path", "atomic_copy", "WriteError"]


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: str = "", fsync: bool = True) -> Iterator[str]:
    """Yield a hidden temporary path beside ``target`` (its folder is created); when the block
    ends cleanly, flush it to disk and ``os.replace`` it over ``target``. ``suffix`` ends the
    temporary name, for writers that add a missing extension (``np.savez``: ".npz",
    ``ms.save_checkpoint``: ".ckpt")."""
    target = os.fspath(target)
    folder, base = os.path.split(os.path.abspath(target))
    stem = f".{base}.tmp{os.getpid()}"
    tmp = os.path.join(folder, stem + suffix)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except WriteError:
        raise
    except OSError as exc:
        raise _write_error(target, exc) from exc
    finally:
        # the temporary, and any file the writer made beside it: ms.save_checkpoint writes
        # STEM.tmp first and leaves it behind when the disk is full, which keeps the disk full
        for name in os.listdir(folder):
            if name.startswith(stem):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))


def _write_error(target: str, exc: OSError) -> WriteError:
    kept = f"the previous {os.path.basename(target)} is intact (nothing was replaced)" \
        if os.path.isfile(target) else "nothing was written"
    err = WriteError(f"could not write {target}: {exc.strerror or exc}; {kept}. Free space or "
                     "choose a writable folder, then run again")
    err.errno = exc.errno  # callers may still test for ENOSPC / EROFS
    return err


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(os.fspath(src), tmp)

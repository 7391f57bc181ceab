"""Atomic writes for every file the project writes whole (logs are appended line by line): a kill
leaves the old file or the new one, never half; a failed write raises ``WriteError`` naming the
target and saying its previous version is intact (so the user knows ``last.ckpt`` survived)."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

from .errors import WriteError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", fsync: bool = True) -> Iterator[str]:
    """A hidden temporary path beside ``target`` (its folder is created), flushed and moved over
    ``target`` when the block ends cleanly; ``suffix`` ends the temporary name for writers that
    add a missing extension (``np.savez``: ".npz", ``ms.save_checkpoint``: ".ckpt")."""
    target = os.fspath(target)
    folder, base = os.path.split(os.path.abspath(target))
    stem = f".{base}.tmp{os.getpid()}"
    tmp = os.path.join(folder, stem + suffix)
    try:
        os.makedirs(folder, exist_ok=True)
        try:
            yield tmp
            if fsync:
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:  # and what the writer made beside it (ms.save_checkpoint: STEM.tmp, disk full),
            for name in os.listdir(folder):  # not another pid's: .X.tmp12 starts .X.tmp1234
                if name == stem or name.startswith(stem + "."):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, name))
    except WriteError:
        raise
    except OSError as exc:
        kept = f"the previous {os.path.basename(target)} is intact (nothing was replaced)" \
            if os.path.isfile(target) else "nothing was written"
        err = WriteError(f"could not write {target}: {exc.strerror or exc}; {kept}. Free space or "
                         "choose a writable folder, then run again")
        err.errno = exc.errno  # callers may still test for ENOSPC / EROFS
        raise err from exc


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(os.fspath(src), tmp)

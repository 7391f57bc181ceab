"""The run folder (``output_dir``): one run at a time (``RunLock``, rank 0's), temporaries of
interrupted writes removed, and the class list a resumed run must see again (``classes.json``:
else every label index would silently mean another class)."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
from typing import List, Optional, Sequence

from ebv_ms.errors import EBVMSError

LOCK_NAME = ".run.lock"
CLASSES_NAME = "classes.json"
# atomic_path's temporary name: "." + target name + ".tmp" + writer pid + optional suffix
_TEMP = re.compile(r"^\..+\.tmp(?P<pid>\d+)(\.[A-Za-z0-9]+)?$")

_log = logging.getLogger("ebv_ms")


class RunFolderError(EBVMSError, RuntimeError):
    """The output folder cannot be used by this run (in use, or holds another data's run)."""


class RunLock:
    """``with RunLock(folder):`` an ``fcntl.flock`` on the folder itself (on ``.run.lock``, which
    records the holder, where directories cannot be locked). The kernel drops it when the process
    ends in any way (kill -9 too), so it is never stale; a second run is refused naming the
    holder."""

    def __init__(self, folder: str):
        self.folder = str(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        # new or empty (as check_run's writability probe leaves it): `release(undo=True)` may
        # remove it; ranks probe it at once, so check_run cannot remove it itself
        self._new = not os.path.isdir(self.folder) or not os.listdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        info = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise
            except OSError:  # no flock on directories here: lock the file
                os.close(fd)
                fd = os.dup(info)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(info)
            os.close(info)
            raise RunFolderError(
                f"output_dir {self.folder} is in use by another run ({holder}); wait for it to "
                "finish or stop it, or set output_dir to another folder") from None
        os.ftruncate(info, 0)
        os.write(info, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        os.close(info)
        self._fd = fd
        return self

    def release(self, undo: bool = False) -> None:
        """Give the folder up (the file stays: removing it would race with a waiting run).
        ``undo`` (the run failed before writing anything): remove the folder if it was new or
        empty and holds only the lock."""
        if self._fd is not None and undo and self._new and os.listdir(self.folder) == [LOCK_NAME]:
            os.unlink(self.path)
            try:
                os.rmdir(self.folder)
            except OSError:  # another process put something there meanwhile: keep it
                pass
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError):
        return "its pid is not recorded yet"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folders: Sequence[str]) -> List[str]:
    """Delete the temporaries of interrupted atomic writes (``.NAME.tmp<pid>``, possibly
    checkpoint-sized) in ``folders`` whose writer is gone; run under the lock."""
    removed = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            m = _TEMP.match(name)
            path = os.path.join(folder, name)
            if m is None or not os.path.isfile(path) or _pid_alive(int(m.group("pid"))):
                continue
            size = os.path.getsize(path)
            os.remove(path)
            removed.append(path)
            _log.info("removed %s (%.1f MB), left by an interrupted write of process %s",
                      path, size / 2 ** 20, m.group("pid"))
    return removed


def read_class_names(folder: str) -> Optional[List[str]]:
    """``folder``'s ``classes.json`` (None: none; damaged: ``RunFolderError``)."""
    path = os.path.join(folder, CLASSES_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "r", encoding="utf-8") as f:
            saved = json.load(f)["class_names"]
        if not isinstance(saved, list) or not all(isinstance(n, str) for n in saved):
            raise TypeError("class_names is not a list of strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{path} is unreadable ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:120]}); the run's class list cannot "
                             "be checked: restore it, or start a new output_dir") from None
    return saved


def check_class_names(where: str, class_names: Sequence[str],
                      saved: Optional[Sequence[str]] = None) -> None:
    """Refuse data whose classes differ from ``saved`` (a checkpoint's), else from the folder
    ``where``'s ``classes.json`` (if any)."""
    if saved is None:
        saved = read_class_names(where)
        where = os.path.join(where, CLASSES_NAME)
        if saved is None:
            return
    saved, names = list(saved), list(class_names)
    if saved == names:
        return
    common = min(len(saved), len(names))
    i = next((k for k, (a, b) in enumerate(zip(saved, names)) if a != b), common)
    at = (f"class {i} is {saved[i]!r} there and {names[i]!r} in the data" if i < common
          else f"the first {i} agree")
    raise RunFolderError(
        f"the data's classes differ from the run's {where} ({len(saved)} classes there, "
        f"{len(names)} in the data; {at}): its class indices would mean other classes. Use "
        "the data the run was trained on (data.path), or (to train) start a new output_dir")

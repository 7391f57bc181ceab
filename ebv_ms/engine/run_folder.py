"""The run folder (``output_dir``): one run at a time (``RunLock``), stale temporaries removed, the
class list a resumed run must see again (else label indices would silently mean other classes),
rank 0's ``train.log`` and ``metrics.jsonl`` (other ranks log to stdout: ``logs/rank_<r>.log``)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import re
import socket
import sys
import time
from typing import List, Mapping, Optional, Sequence

from ebv_ms.atomic import atomic_path
from ebv_ms.errors import EBVMSError

LOCK_NAME = ".run.lock"
CLASSES_NAME = "classes.json"
# atomic_path's temporary name, in full: "." + target + ".tmp" + pid (ASCII) + optional suffix
_TEMP = re.compile(r"\..+\.tmp(?P<pid>[0-9]+)(\.[A-Za-z0-9]+)?")

_log = logging.getLogger("ebv_ms")


class RunFolderError(EBVMSError, RuntimeError):
    """The output folder cannot be used by this run (in use, or holds another data's run)."""


class RunLock:
    """An ``fcntl.flock`` on the folder (on ``.run.lock``, which names the holder, where folders
    cannot be locked): dropped by the kernel however the process ends, so never stale."""

    def __init__(self, folder: str):
        self.folder = str(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        # new or empty (check_run's writability probe, shared by the ranks, leaves it so):
        # release(undo=True) may remove it
        self._new = not os.path.isdir(self.folder) or not os.listdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        info = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fd = None
        try:  # every descriptor is closed on every way out but success (fd then holds the lock)
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise
            except OSError:  # no flock on directories here: lock the file
                fd, folder_fd = os.dup(info), fd
                os.close(folder_fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(info, 0)
            os.write(info, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                       "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        except BaseException as exc:
            if fd is not None:
                os.close(fd)
            if not isinstance(exc, BlockingIOError):
                raise
            try:
                rec = json.loads(os.pread(info, 4096, 0).decode() or "{}")
                holder = f"pid {rec['pid']} on {rec['host']}, started {rec['started']}"
            # not a mapping ([1], "x", null, 1e999), or nested past the recursion limit
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                holder = "its pid is not recorded yet"
            raise RunFolderError(
                f"output_dir {self.folder} is in use by another run ({holder}); wait for it to "
                "finish or stop it, or set output_dir to another folder") from None
        finally:
            os.close(info)
        self._fd = fd
        return self

    def release(self, undo: bool = False) -> None:
        """Give the folder up (the file stays: removing it would race with a waiting run); ``undo``
        (nothing written): remove the folder if it was new or empty and holds only the lock."""
        if self._fd is None:
            return
        if undo and self._new and os.listdir(self.folder) == [LOCK_NAME]:
            os.unlink(self.path)
            with contextlib.suppress(OSError):  # another process put something there meanwhile
                os.rmdir(self.folder)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill would probe a process group
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process, or past pid_t
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


def remove_stale_temps(folders: Sequence[str]) -> None:
    """Delete the temporaries of interrupted atomic writes (``.NAME.tmp<pid>``, possibly
    checkpoint-sized) in ``folders`` whose writer is gone; run under the lock."""
    for folder in filter(os.path.isdir, folders):
        for name in sorted(os.listdir(folder)):
            m = _TEMP.fullmatch(name)
            path = os.path.join(folder, name)
            if m is None or not os.path.isfile(path) or _pid_alive(int(m.group("pid"))):
                continue
            size = os.path.getsize(path)
            os.remove(path)
            _log.info("removed %s (%.1f MB), left by an interrupted write of process %s",
                      path, size / 2 ** 20, m.group("pid"))


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
    """Refuse classes that differ from ``saved`` (a checkpoint's), else ``where``'s classes.json."""
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


def setup_logger(output_dir: Optional[str], rank: int = 0) -> logging.Logger:
    """The "ebv_ms" logger, to the console; rank 0's file lines are kept in memory until
    ``open_log_file`` (a run refused at set-up leaves the run folder's log untouched)."""
    logger = logging.getLogger("ebv_ms")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
                            datefmt="%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if output_dir and rank == 0:  # handed to the file handler by open_log_file
        handlers.append(logging.handlers.MemoryHandler(
            capacity=1 << 20, flushLevel=logging.CRITICAL + 1, flushOnClose=False))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


def open_log_file(logger: logging.Logger, output_dir: str) -> None:
    """Start writing rank 0's ``train.log`` (appending across resumes); kept lines go first."""
    fh = logging.FileHandler(os.path.join(output_dir, "train.log"), encoding="utf-8")
    fh.setFormatter(next((h.formatter for h in logger.handlers if h.formatter is not None), None))
    for h in list(logger.handlers):
        if isinstance(h, logging.handlers.MemoryHandler):
            h.setTarget(fh)
            h.flush()
            logger.removeHandler(h)
            h.close()
    logger.addHandler(fh)


class JsonlLog:
    """Append-only JSON-lines file; ``truncate_after(epoch)`` drops records a resume will redo."""

    def __init__(self, path: str):
        self.path = path  # in the run folder, which RunLock made

    def write(self, record: Mapping) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> List[dict]:
        if not os.path.isfile(self.path):
            return []
        out = []
        with open(self.path, "r", encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # blank, or a line cut by a kill mid-write
                    continue
                if not isinstance(rec, dict) or type(rec.get("epoch", 0)) is not int:
                    raise RunFolderError(f"{self.path} line {number} is not an epoch record "
                                         f"({line[:60]!r}); restore the file or remove that line")
                out.append(rec)
        return out

    def truncate_after(self, epoch: int) -> None:
        keep = [r for r in self.read() if r.get("epoch", 0) <= epoch]
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in keep)

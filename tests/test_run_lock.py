"""RunLock and the stale-temporary sweep on damaged run folders: clear refusals, no descriptor left
open on any way out, temporaries named with pids no process can have treated as stale."""
import errno
import fcntl
import os
import stat
import sys

import pytest

from ebv_ms.engine import run_folder
from ebv_ms.engine.run_folder import RunFolderError, RunLock, remove_stale_temps

IN_USE = r"is in use by another run \(its pid is not recorded yet\)"


def _open_fds():
    return sorted(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("record", [b"[1]", b'"x"', b"null", b"1e999", b"-Infinity", b"true",
                                    b'{"pid": 1}', b"[" * 5000, b'{"a":' * 1000, b"\xff\xfe"])
def test_a_held_folder_with_a_damaged_record_is_refused_clearly(tmp_path, record):
    (tmp_path / ".run.lock").write_bytes(record)
    held = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # another open file: another holder
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # Python's default, as without MindSpore (which sets 10,000)
    try:
        before = _open_fds()
        with pytest.raises(RunFolderError, match=IN_USE):
            RunLock(str(tmp_path)).acquire()
        assert _open_fds() == before
    finally:
        sys.setrecursionlimit(limit)
        os.close(held)


def _no_flock_on_directories(file_error):
    real = fcntl.flock

    def flock(fd, op):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "no flock on directories here")
        if file_error is not None:
            raise file_error
        return real(fd, op)
    return flock


@pytest.mark.parametrize("file_error", [BlockingIOError(errno.EWOULDBLOCK, "held"),
                                        OSError(errno.ENOLCK, "no locks")])
def test_the_fallback_lock_on_the_file_leaves_no_descriptor_when_it_fails(tmp_path, monkeypatch,
                                                                          file_error):
    monkeypatch.setattr(fcntl, "flock", _no_flock_on_directories(file_error))
    before = _open_fds()
    with pytest.raises(RunFolderError if isinstance(file_error, BlockingIOError) else OSError):
        RunLock(str(tmp_path)).acquire()
    assert _open_fds() == before


def test_a_failed_record_write_leaves_the_folder_free(tmp_path, monkeypatch):
    def full(fd, length):
        raise OSError(errno.ENOSPC, "disk full")
    monkeypatch.setattr(os, "ftruncate", full)
    before = _open_fds()
    with pytest.raises(OSError, match="disk full"):
        RunLock(str(tmp_path)).acquire()
    assert _open_fds() == before
    monkeypatch.undo()
    RunLock(str(tmp_path)).acquire().release()  # no leaked descriptor keeps the lock
    monkeypatch.setattr(fcntl, "flock", _no_flock_on_directories(None))
    monkeypatch.setattr(os, "ftruncate", full)
    with pytest.raises(OSError, match="disk full"):
        RunLock(str(tmp_path)).acquire()
    assert _open_fds() == before


def test_temporaries_named_with_impossible_pids_are_stale(tmp_path):
    alive = f".c.tmp{os.getpid()}"
    names = [".a.tmp0", ".b.tmp99999999999999999999", ".d.tmp2147483648", ".e.tmp4294967296.npy",
             ".f.tmp9223372036854775808", ".g.tmp2147483647", alive]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    remove_stale_temps([str(tmp_path)])
    assert os.listdir(tmp_path) == [alive]
    assert run_folder._pid_alive(os.getpid())
    for pid in (0, -1, -os.getpid(), -2 ** 31, -2 ** 70, 2 ** 31, 2 ** 63, 10 ** 30):
        assert not run_folder._pid_alive(pid), pid


def test_only_names_atomic_path_writes_are_temporaries(tmp_path):
    """Was \\d and $: Unicode digits (int() reads '١٢٣' as 123) and a name ending in a newline
    matched, so files atomic_path never writes were removed as dead writers' temporaries."""
    foreign = [".a.tmp\u0661\u0662\u0663", ".b.tmp\u0967\u0968", ".c.tmp12\n", ".d.tmp12.npz\n",
               ".e.tmp\uff11\uff12", ".f.tmp1\u0662.ckpt"]
    for name in foreign + [".g.tmp0"]:
        (tmp_path / name).write_bytes(b"x")
    remove_stale_temps([str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == sorted(foreign)

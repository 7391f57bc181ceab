"""atomic_path: the target is either the old file or the complete new one, never a mix."""
import os

import numpy as np
import pytest

from ebv_ms.atomic import atomic_copy, atomic_path


def test_success_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path / "sub") and not os.path.exists(target)
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path / "sub") == ["out.txt"]


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_suffix_for_writers_that_add_an_extension(tmp_path):
    target = tmp_path / "cache.bin"
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(3))       # would write tmp + ".npz" without the suffix
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    atomic_copy(target, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == target.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["cache.bin", "copy.bin"]


def test_another_pids_temporary_for_the_same_target_is_left_alone(tmp_path):
    """Was any name starting .T.tmp<pid>: a rank with pid 12 removed pid 1234's temporary."""
    target = tmp_path / "cache.npz"
    others = [f".cache.npz.tmp{os.getpid()}{d}{s}" for d in "07" for s in ("", ".npz")]
    for name in others:
        (tmp_path / name).write_bytes(b"another writer's")
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, a=np.arange(3))
    assert sorted(os.listdir(tmp_path)) == sorted(others + ["cache.npz"])

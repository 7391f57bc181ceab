"""Zip index and member reader: stored/deflated/zip64 members, cache reuse and rebuild, errors."""
import os
import pickle
import time
import zipfile

import numpy as np
import pytest

from ebv_ms.data.readers import BadMember, ZipMemberReader
from ebv_ms.tools.make_synthetic import encode, write_zip
from tagged_images import tagged_image
from ebv_ms.data.zip_index import (ArchiveError, _parse_central_directory, _read_central_directory,
                                   load_zip_index)


def build_zip_index(archive):
    """The central directory of ``archive`` parsed into flat arrays, no cache involved."""
    cd, n, _ = _read_central_directory(archive)
    return _parse_central_directory(archive, cd, n, False)


def _members(n=6):
    return {f"top/train/c{i % 2}/{i}.jpg": encode(tagged_image(i, i % 2, 16)) for i in range(n)}


def test_stored_and_deflated_members_read_back_exactly(tmp_path):
    members = _members()
    members["top/readme.txt"] = b"hello " * 100
    members["top/" + "long_name_" * 40 + ".jpg"] = encode(tagged_image(9, 0, 16))  # > one read's slack
    deflated = [n for i, n in enumerate(members) if i % 2]
    path = write_zip(str(tmp_path / "a.zip"), members, deflate=deflated)
    index = load_zip_index(path)
    with zipfile.ZipFile(path) as z:
        methods = {i.filename: i.compress_type for i in z.infolist()}
    assert set(methods.values()) == {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
    reader = ZipMemberReader(index)
    got = {index.name(i): bytes(reader.read(i)) for i in range(len(index))}
    assert got == members
    assert sorted(np.unique(index.method).tolist()) == [0, 8]


def test_zip64_local_extra_and_unicode_names(tmp_path):
    path = str(tmp_path / "z64.zip")
    data = encode(tagged_image(3, 1, 16))
    with zipfile.ZipFile(path, "w") as z:
        with z.open("tøp/val/ç1/x.jpg", "w", force_zip64=True) as f:  # zip64 extra in local header
            f.write(data)
        z.writestr("tøp/val/ç1/y.jpg", data, compress_type=zipfile.ZIP_DEFLATED)
    index = load_zip_index(path)
    reader = ZipMemberReader(index)
    assert [index.name(i) for i in range(2)] == ["tøp/val/ç1/x.jpg", "tøp/val/ç1/y.jpg"]
    assert bytes(reader.read(0)) == data and bytes(reader.read(1)) == data


def test_index_is_cached_reused_and_rebuilt_when_archive_changes(tmp_path):
    path = write_zip(str(tmp_path / "a.zip"), _members(4))
    first = load_zip_index(path)
    assert first.built and os.path.isdir(path + ".ebvidx")
    again = load_zip_index(path)
    assert not again.built and len(again) == 4
    assert isinstance(again.header_offset, np.memmap)  # memory-mapped, not copied
    time.sleep(0.01)
    write_zip(path, _members(7))  # new content, new size and mtime
    changed = load_zip_index(path)
    assert changed.built and len(changed) == 7
    assert not load_zip_index(path).built


def test_index_cache_dir_option(tmp_path):
    path = write_zip(str(tmp_path / "a.zip"), _members(2))
    index = load_zip_index(path, cache_dir=str(tmp_path / "cache"))
    assert index.cache_dir.startswith(str(tmp_path / "cache"))
    assert not os.path.exists(path + ".ebvidx")
    assert not load_zip_index(path, cache_dir=str(tmp_path / "cache")).built


def test_reader_pickles_without_handle_and_reopens(tmp_path):
    members = _members(3)
    path = write_zip(str(tmp_path / "a.zip"), members)
    reader = ZipMemberReader(load_zip_index(path))
    reader.read(0)
    assert reader._fd is not None
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._fd is None
    assert bytes(clone.read(2)) == members[clone.name(2)]


def test_worker_refuses_a_stale_index(tmp_path):
    path = write_zip(str(tmp_path / "a.zip"), _members(3))
    blob = pickle.dumps(ZipMemberReader(load_zip_index(path)))
    time.sleep(0.01)
    write_zip(path, _members(5))
    with pytest.raises(ArchiveError, match="changed after its index was built"):
        pickle.loads(blob)


def test_corrupt_member_is_a_bad_member_not_a_crash(tmp_path):
    members = _members(3)
    path = write_zip(str(tmp_path / "a.zip"), members, deflate=[list(members)[1]])
    index = load_zip_index(path)
    raw = bytearray(open(path, "rb").read())
    for i in (0, 1):  # flip bytes inside the data of members 0 (stored) and 1 (deflated)
        start = int(index.header_offset[i]) + 30 + len(index.name(i)) + 10
        raw[start:start + 4] = bytes(b ^ 0xFF for b in raw[start:start + 4])
    open(path, "wb").write(bytes(raw))
    reader = ZipMemberReader(load_zip_index(path))
    for i in (0, 1):
        with pytest.raises(BadMember, match="CRC|deflate|size"):
            reader.read(i)
    assert bytes(reader.read(2)) == members[reader.name(2)]


@pytest.mark.parametrize("content,what", [
    (None, "not found"),
    (b"", "not a zip archive"),
    (b"\xff\xd8 this is a JPEG, not a zip" * 10, "not a zip archive"),
    (b"cut off" * 10 + b"PK\x05\x06\0\0\0", "not a zip archive"),  # a signature without its record
])
def test_missing_or_non_zip_archive_errors_clearly(tmp_path, content, what):
    path = tmp_path / "data.zip"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ArchiveError, match=what):
        load_zip_index(str(path))


def test_truncated_archive_errors_clearly(tmp_path):
    path = write_zip(str(tmp_path / "a.zip"), _members(4))
    data = open(path, "rb").read()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="not a zip archive|truncated"):
        build_zip_index(str(cut))
    with pytest.raises(ArchiveError, match="directory"):
        load_zip_index(str(tmp_path))

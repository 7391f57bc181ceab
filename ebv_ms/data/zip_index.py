"""A cached index of a zip archive's members: flat arrays plus one blob of names (~100 MB at 1.8M
members, memory-mapped, shared through the page cache), parsed by hand (``zipfile``: ~1 GB, ~10 s).
Keyed by the sha256 of the central directory (~0.5 s at 1.8M): size and mtime survive ``cp -p``.
The end records are untrusted: counts and entries must fit in the directory before allocating."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import struct
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional
from zipfile import (stringCentralDir, stringEndArchive, stringEndArchive64,  # the records' layout
                     stringEndArchive64Locator, structCentralDir)

import numpy as np
from ..errors import EBVMSError
from ..progress import progress_bar

logger = logging.getLogger(__name__)

INDEX_VERSION = 2  # 2: keyed by the central directory digest
_ARRAYS = ("header_offset", "comp_size", "size", "method", "crc", "flags", "name_start", "names")

_CDIR = struct.Struct(structCentralDir)  # central directory file header, 46 bytes
_INT64_MAX = 2 ** 63 - 1
_NOT_REGULAR = "is not a regular file (a directory, FIFO, device or socket)"


class ArchiveError(EBVMSError, ValueError):
    """The archive is missing, unreadable or not a zip file; the message says what to do."""


def _fail(path: str, what: str) -> ArchiveError:
    return ArchiveError(f"{path}: {what}. Check data.path: it must be a readable .zip archive "
                        f"(read in place, not extracted) or a folder.")


def _read_central_directory(path: str):
    """(cd bytes, number of entries, sha256 of the directory and end record) from the end records."""
    try:  # O_NONBLOCK: a FIFO must be refused, not waited on
        f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except FileNotFoundError:
        raise _fail(path, "archive not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot be opened ({exc.strerror})") from None
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _fail(path, _NOT_REGULAR)
        file_size = f.seek(0, os.SEEK_END)
        if file_size < 22:
            raise _fail(path, f"is not a zip archive (only {file_size} bytes)")
        tail_len = min(file_size, 22 + 65535 + 20 + 56)
        f.seek(file_size - tail_len)
        tail = f.read(tail_len)
        pos = tail.rfind(stringEndArchive, 0, len(tail) - 18)  # a whole 22-byte record, not cut off
        if pos < 0:
            raise _fail(path, "is not a zip archive (no end-of-central-directory record; "
                              "a truncated download or another file format)")
        n_total, cd_size, cd_offset = struct.unpack_from("<10xH2L2x", tail, pos)
        loc = pos - 20
        if loc >= 0 and tail[loc:loc + 4] == stringEndArchive64Locator:
            eocd64_off = struct.unpack_from("<8xQ4x", tail, loc)[0]
            if eocd64_off > file_size - 56:
                raise _fail(path, "has a broken zip64 end-of-central-directory locator")
            f.seek(eocd64_off)
            rec = f.read(56)
            if rec[:4] != stringEndArchive64:
                raise _fail(path, "has a broken zip64 end-of-central-directory record")
            n_total, cd_size, cd_offset = struct.unpack_from("<32x3Q", rec)
        if cd_offset + cd_size > file_size:
            raise _fail(path, "is truncated (its central directory points past the end of the file)")
        if n_total > cd_size // _CDIR.size:
            raise _fail(path, f"is corrupt (its end record claims {n_total} members, but its "
                              f"central directory of {cd_size} bytes has room for at most "
                              f"{cd_size // _CDIR.size})")
        f.seek(cd_offset)
        cd = f.read(cd_size)
    if len(cd) != cd_size:
        raise _fail(path, "is truncated (short read of the central directory)")
    digest = hashlib.sha256(cd)
    digest.update(tail[pos:pos + 22])
    return cd, int(n_total), digest.hexdigest()


def _parse_central_directory(path: str, cd: bytes, n: int, progress: bool):
    header_offset, comp_size, size = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    method, crc, flags = np.empty(n, np.uint16), np.empty(n, np.uint32), np.empty(n, np.uint16)
    name_chunks: List[bytes] = []
    bad_utf8: List[int] = []
    unpack, p, end = _CDIR.unpack_from, 0, len(cd)
    bar = progress_bar(total=n, desc="indexing zip", unit="member", mininterval=1.0,
                       disable=not (progress and n > 200_000))
    for i in range(n):
        if p + 46 > end or cd[p:p + 4] != stringCentralDir:
            raise _fail(path, f"has a corrupt central directory (entry {i} of {n})")
        (_, _vm, _hv, _vn, _hn, flag, meth, _t, _d, crc32, csz, usz, nlen, elen, clen,
         _disk, _iattr, _eattr, hoff) = unpack(cd, p)
        if p + 46 + nlen + elen + clen > end:
            raise _fail(path, f"has a corrupt central directory (entry {i} of {n} runs past its end)")
        name = cd[p + 46:p + 46 + nlen]
        if csz == 0xFFFFFFFF or usz == 0xFFFFFFFF or hoff == 0xFFFFFFFF:
            # 64-bit fields are untrusted: clamped to int64 here, checked against the archive's
            # size and data.max_image_bytes when read (a bad member, not an OverflowError)
            usz, csz, hoff = (min(v, _INT64_MAX) for v in _zip64_extra(
                cd[p + 46 + nlen:p + 46 + nlen + elen], usz, csz, hoff))
        # not flagged UTF-8: cp437 per the spec. Flagged but not valid UTF-8 (no round trip): a lossy
        # decode would merge different names (two class folders became one); cp437 is one-to-one
        if not name.isascii() and not (flag & 0x800 and name.decode("utf-8", "replace").encode() == name):
            bad_utf8 += [i] if flag & 0x800 else []
            name = name.decode("cp437").encode("utf-8")
        header_offset[i], comp_size[i], size[i] = hoff, csz, usz
        method[i], crc[i], flags[i] = meth, crc32, flag
        name_chunks.append(name)
        p += 46 + nlen + elen + clen
        if (i & 0xFFFF) == 0:
            bar.update(min(0x10000, n - bar.n))
    bar.update(n - bar.n)
    bar.close()
    if bad_utf8:
        logger.warning("%s: %d member name(s) are flagged UTF-8 but are not valid UTF-8 (e.g. %r); "
                       "read as cp437 instead, so each keeps a distinct name", path,
                       len(bad_utf8), name_chunks[bad_utf8[0]].decode("utf-8")[:120])
    name_start = np.cumsum([0, *map(len, name_chunks)], dtype=np.int64)
    names = np.frombuffer(b"".join(name_chunks), dtype=np.uint8)
    if n and max(int(comp_size.max()), int(size.max())) < 2 ** 32:  # the usual case: halve them
        comp_size, size = comp_size.astype(np.uint32), size.astype(np.uint32)
    return dict(header_offset=header_offset, comp_size=comp_size, size=size, method=method,
                crc=crc, flags=flags, name_start=name_start, names=names)


def _zip64_extra(extra: bytes, *values: int):
    """(size, compressed size, header offset): those that are 0xFFFFFFFF read from the zip64 field."""
    q = 0
    while q + 4 <= len(extra):
        tag, ln = struct.unpack_from("<2H", extra, q)
        if tag == 0x0001:  # a short field reads as 0: a bad member
            wide = iter(struct.unpack_from("<3Q", extra[q + 4:q + 4 + ln] + bytes(24)))
            return [next(wide) if v == 0xFFFFFFFF else v for v in values]
        q += 4 + ln
    return list(values)


@dataclass
class ZipIndex:
    """Flat arrays describing every member of one archive (entries in central-directory order)."""

    archive: str
    header_offset: np.ndarray
    comp_size: np.ndarray
    size: np.ndarray
    method: np.ndarray
    crc: np.ndarray
    flags: np.ndarray
    name_start: np.ndarray
    names: np.ndarray  # uint8 blob of UTF-8 names
    cache_dir: Optional[str] = None
    built: bool = False  # True when this call built it (False: loaded from the cache)
    digest: str = ""     # sha256 of the central directory it was built from
    key: Optional[Dict[str, object]] = None  # path, size, mtime_ns when the digest was checked

    def __len__(self) -> int:
        return int(self.header_offset.shape[0])

    def name(self, i: int) -> str:
        a, b = int(self.name_start[i]), int(self.name_start[i + 1])
        return bytes(self.names[a:b]).decode("utf-8", "replace")

    def all_names(self) -> List[str]:
        """Every member name (a Python list: for layout detection, not for workers)."""
        blob, starts = bytes(self.names), self.name_start.tolist()
        return [blob[a:b].decode("utf-8", "replace") for a, b in zip(starts, starts[1:])]


def _load(loc: str, digest: str) -> Optional[Dict[str, np.ndarray]]:
    with contextlib.suppress(OSError, ValueError):  # a missing, partial or foreign index: rebuild
        with open(os.path.join(loc, "meta.json"), "r", encoding="utf-8") as f:
            meta = json.load(f)
        if isinstance(meta, dict) and meta.get("version") == INDEX_VERSION and meta.get("cd_sha256") == digest:
            return {k: np.load(os.path.join(loc, k + ".npy"), mmap_mode="r") for k in _ARRAYS}
    return None


def _save(loc: str, key: Dict[str, object], digest: str, arrays: Dict[str, np.ndarray]) -> None:
    os.makedirs(os.path.dirname(loc), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(loc))
    try:
        for k in _ARRAYS:
            np.save(os.path.join(tmp, k + ".npy"), arrays[k])
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"version": INDEX_VERSION, "archive": key, "cd_sha256": digest,
                       "members": int(len(arrays["size"])),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, f, indent=1)
        if os.path.isdir(loc):
            old = loc + f".old-{os.getpid()}"
            os.rename(loc, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, loc)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _load(loc, digest) is None:  # another rank won the race with a good index: fine
            raise


def load_zip_index(archive: str, cache_dir: Optional[str] = None, progress: bool = True,
                   rebuild: bool = False, location: Optional[str] = None,
                   must_exist: bool = False, digest: Optional[str] = None,
                   checked_key: Optional[Dict[str, object]] = None) -> ZipIndex:
    """The archive's index, memory-mapped from the cache or built (and cached if writable). Workers
    pass what their parent checked: the directory is not read again while size and mtime match,
    and a missing or different index is an error, not a rebuild (member numbers would differ)."""
    if not os.path.isfile(archive):
        raise _fail(archive, _NOT_REGULAR if os.path.exists(archive) else "archive not found")
    st = os.stat(archive)
    ap, loc = os.path.abspath(archive), location
    key = {"path": ap, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}
    if not loc:  # next to the archive if that folder is writable, else in a cache dir
        if cache_dir is None and not os.access(os.path.dirname(ap) or ".", os.W_OK):
            cache_dir = os.environ.get("EBV_MS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ebv_ms"))
        tag = hashlib.sha1(ap.encode("utf-8")).hexdigest()[:12]
        loc = os.path.join(cache_dir, f"{os.path.basename(ap)}.{tag}.ebvidx") if cache_dir else ap + ".ebvidx"
    cd = n = None
    if not (must_exist and digest and checked_key == key):
        cd, n, digest = _read_central_directory(archive)
    arrays = None if rebuild else _load(loc, digest)
    if arrays is None and must_exist:
        raise ArchiveError(f"{archive} changed after its index was built (or the index at {loc} "
                           f"was removed); restart the run so the index is rebuilt")
    built = arrays is None
    if built:
        t0 = time.perf_counter()
        arrays = _parse_central_directory(archive, cd, n, progress)
        try:
            _save(loc, key, digest, arrays)
            arrays = _load(loc, digest) or arrays
        except OSError as exc:
            logger.warning("could not cache the zip index at %s (%s); set data.index_cache_dir "
                           "to a writable folder to avoid rebuilding it every run", loc, exc)
            loc = None
        logger.info("indexed %d members of %s in %.1f s", len(arrays["size"]), archive,
                    time.perf_counter() - t0)
    return ZipIndex(archive=ap, cache_dir=loc, built=built, digest=digest, key=key, **arrays)

"""Byte readers: one zip member by offset (``ZipMemberReader``) or one file under a root (``FileReader``).

Both are picklable without their open state, so a ``GeneratorDataset`` can hand them to worker
processes: each process opens its own file descriptor lazily (re-opened after a fork, keyed by
pid) and reads with ``os.pread``, which has no shared file position and needs no lock.

A zip member is read with one ``pread`` of its local header plus data (the local header's
variable-length fields are parsed there, so the index needs only the header offset), then
inflated if deflated and checked against its CRC-32. Anything wrong raises ``BadMember`` with a
reason; the image source turns that into a skipped, reported sample.
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import Optional, Sequence

import numpy as np

from .zip_index import ZipIndex, load_zip_index

_LOCAL = struct.Struct("<4s5H3L2H")  # local file header, 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_SLACK = 320  # bytes read past the 30-byte local header for its name and extra field


class BadMember(Exception):
    """One sample cannot be read or decoded; ``str(exc)`` is the reason."""


class ZipMemberReader:
    """Reads members of one archive by index number, using its ``ZipIndex``."""

    def __init__(self, index: ZipIndex):
        self.archive = index.archive
        self._index_cache = index.cache_dir
        self._set_index(index)

    def _set_index(self, index: ZipIndex) -> None:
        self.index = index
        self._fd: Optional[int] = None
        self._pid: Optional[int] = None

    def __getstate__(self):
        state = {"archive": self.archive, "_index_cache": self._index_cache,
                 "digest": self.index.digest, "key": self.index.key}
        if self._index_cache is None:  # index only in memory: ship the arrays themselves
            state["index"] = self.index
        return state

    def __setstate__(self, state):
        self.archive = state["archive"]
        self._index_cache = state["_index_cache"]
        index = state.get("index")
        if index is None:
            index = load_zip_index(self.archive, location=self._index_cache, progress=False,
                                   must_exist=True, digest=state.get("digest"),
                                   checked_key=state.get("key"))
        self._set_index(index)

    def _handle(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            self._fd = os.open(self.archive, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = pid
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def name(self, member: int) -> str:
        return self.index.name(member)

    def read(self, member: int):
        """The member's bytes (``bytes`` or a ``memoryview``), CRC-checked; ``BadMember`` if not."""
        ix = self.index
        off = int(ix.header_offset[member])
        csz = int(ix.comp_size[member])
        usz = int(ix.size[member])
        method = int(ix.method[member])
        if int(ix.flags[member]) & 0x1:
            raise BadMember("encrypted zip member (not supported)")
        if method not in (0, 8):
            raise BadMember(f"zip compression method {method} not supported (only stored and deflated)")
        fd = self._handle()
        want = 30 + _SLACK + csz  # one read covers header, name and extra field in practice
        buf = os.pread(fd, want, off)
        if len(buf) < 30 or buf[:4] != _LOCAL_SIG:
            raise BadMember("bad local header (archive truncated or corrupt)")
        (_, _ver, _flag, _meth, _t, _d, _crc, _cs, _us, lnlen, lelen) = _LOCAL.unpack_from(buf)
        start = 30 + lnlen + lelen
        if len(buf) < start + csz:
            buf = os.pread(fd, start + csz, off)
            if len(buf) < start + csz:
                raise BadMember("member data truncated (archive shorter than its directory says)")
        data = memoryview(buf)[start:start + csz]
        if method == 8:
            try:
                raw = zlib.decompress(data, -15, usz if usz > 0 else zlib.DEF_BUF_SIZE)
            except zlib.error as exc:
                raise BadMember(f"deflate data corrupt ({exc})") from None
        else:
            raw = data  # no copy: crc32 and the decoder read the buffer in place
        if len(raw) != usz:
            raise BadMember(f"size mismatch ({len(raw)} bytes, directory says {usz})")
        if zlib.crc32(raw) != int(ix.crc[member]):
            raise BadMember("CRC-32 mismatch (member corrupt)")
        return raw

    def crc(self, member: int, raw) -> int:
        """CRC-32 of bytes ``read(member)`` returned: the directory's, which ``read`` checked."""
        return int(self.index.crc[member])


class FileReader:
    """Reads files ``root/<relative path>``; paths stored as one packed blob, not a list of str."""

    def __init__(self, root: str, paths: Sequence[str]):
        self.root = os.path.abspath(root)
        enc = [p.encode("utf-8", "surrogateescape") for p in paths]  # undecodable file names too
        self._starts = np.zeros(len(enc) + 1, np.int64)
        np.cumsum([len(e) for e in enc], out=self._starts[1:])
        self._blob = np.frombuffer(b"".join(enc), np.uint8) if enc else np.zeros(0, np.uint8)

    def name(self, member: int) -> str:
        a, b = int(self._starts[member]), int(self._starts[member + 1])
        return bytes(self._blob[a:b]).decode("utf-8", "surrogateescape")

    def path(self, member: int) -> str:
        return os.path.join(self.root, self.name(member))

    def read(self, member: int) -> bytes:
        try:
            with open(self.path(member), "rb") as f:
                return f.read()
        except OSError as exc:
            raise BadMember(f"cannot read file ({exc.strerror})") from None

    def crc(self, member: int, raw) -> int:
        """CRC-32 of bytes ``read(member)`` returned (a file may change between epochs)."""
        return zlib.crc32(raw)

    def close(self) -> None:
        pass

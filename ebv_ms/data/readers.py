"""Byte readers of a zip member by offset or a file under a root, picklable without their open
state (each worker opens its own descriptor). Reads are bounded before allocating (a crafted
zip64 size of 2^62 was a MemoryError; a 1 MB member inflating to 1 GiB cost 1.5 GB)."""
from __future__ import annotations

import contextlib
import os
import stat
import struct
import zlib
from typing import Sequence

import numpy as np

from .zip_index import ZipIndex, load_zip_index

_LOCAL_SIG = b"PK\x03\x04"
_SLACK = 320  # bytes read past the 30-byte local header for its name and extra field
# data.max_image_bytes: ~4x the largest ImageNet file (a 15 MB JPEG); a list file may be larger
MAX_IMAGE_BYTES = 64 << 20
MAX_LIST_BYTES = 1 << 30


class BadMember(Exception):
    """One sample cannot be read or decoded; ``str(exc)`` is the reason."""


def _too_large(size: int, max_bytes: int) -> str:
    return (f"{size} bytes, more than data.max_image_bytes = {max_bytes}; raise it if such "
            f"files are real images")


def read_regular(path: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (0: no cap), else ``BadMember``
    (O_NONBLOCK: a FIFO is refused, not waited on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadMember("not a regular file (a FIFO, device or socket)")
        if max_bytes and st.st_size > max_bytes:
            raise BadMember(f"file is {_too_large(st.st_size, max_bytes)}")
        data = f.read(max_bytes + 1 if max_bytes else -1)
    if max_bytes and len(data) > max_bytes:  # grew since fstat
        raise BadMember(f"file is {_too_large(len(data), max_bytes)}")
    return data


def printable(text: str) -> str:
    """``text`` with control and format characters (newline, ESC, bidi overrides) and undecodable
    bytes escaped, so a crafted file name cannot forge or recolour a line of output."""
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape",
                   "backslashreplace").decode("ascii") for c in text)


class ZipMemberReader:
    def __init__(self, index: ZipIndex):
        self.archive, self.index = index.archive, index
        self._fd = self._pid = None

    def __getstate__(self):
        ix = self.index  # an index only in memory: ship the arrays themselves
        return {"index": ix} if ix.cache_dir is None else {
            "archive": ix.archive, "location": ix.cache_dir, "digest": ix.digest, "key": ix.key}

    def __setstate__(self, state):
        self.__init__(state["index"] if "index" in state else load_zip_index(
            state["archive"], location=state["location"], progress=False, must_exist=True,
            digest=state["digest"], checked_key=state["key"]))

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # none yet, or the parent's (forked)
            self._fd, self._pid = os.open(self.archive, os.O_RDONLY | getattr(os, "O_BINARY", 0)), os.getpid()
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def name(self, member: int) -> str:
        return self.index.name(member)

    def read(self, member: int, max_bytes: int = MAX_IMAGE_BYTES):
        """The member's bytes (``bytes`` or a ``memoryview``), CRC-checked, else ``BadMember``."""
        ix = self.index
        off, csz, usz = int(ix.header_offset[member]), int(ix.comp_size[member]), int(ix.size[member])
        method = int(ix.method[member])
        if int(ix.flags[member]) & 0x1:
            raise BadMember("encrypted zip member (not supported)")
        if method not in (0, 8):
            raise BadMember(f"zip compression method {method} not supported (only stored and deflated)")
        fd = self._handle()
        if off + 30 + csz > self._size:
            raise BadMember(f"zip directory entry places {csz} bytes at offset {off}, past the end "
                            f"of the {self._size}-byte archive (corrupt or crafted)")
        if max_bytes and max(csz, usz) > max_bytes:
            raise BadMember(f"zip member is {_too_large(max(csz, usz), max_bytes)}")
        buf = os.pread(fd, 30 + _SLACK + csz, off)  # one read covers header, name and extra field in practice
        if len(buf) < 30 or buf[:4] != _LOCAL_SIG:
            raise BadMember("bad local header (archive truncated or corrupt)")
        start = 30 + sum(struct.unpack_from("<2H", buf, 26))  # + name and extra field lengths
        if len(buf) < start + csz:
            buf = os.pread(fd, start + csz, off)
            if len(buf) < start + csz:
                raise BadMember("member data truncated (archive shorter than its directory says)")
        data = memoryview(buf)[start:start + csz]
        if method == 8:
            inflater = zlib.decompressobj(-15)
            try:  # max_length: never more than the declared size (+1 to see that it is more)
                raw = inflater.decompress(data, usz + 1)
            except zlib.error as exc:
                raise BadMember(f"deflate data corrupt ({exc})") from None
            if len(raw) > usz or not inflater.eof and len(raw) == usz:
                raise BadMember(f"deflate data inflates to more than the declared {usz} bytes")
        else:
            raw = data  # no copy: crc32 and the decoder read the buffer in place
        if len(raw) != usz:
            raise BadMember(f"size mismatch ({len(raw)} bytes, directory says {usz})")
        if zlib.crc32(raw) != int(ix.crc[member]):
            raise BadMember("CRC-32 mismatch (member corrupt)")
        return raw

    def crc(self, member: int, raw) -> int:  # of bytes `read` returned: it checked the directory's
        return int(self.index.crc[member])


class FileReader:
    """Reads files ``root/<relative path>``; paths stored as one packed blob, not a list of str."""

    def __init__(self, root: str, paths: Sequence[str]):
        self.root = os.path.abspath(root)
        enc = [p.encode("utf-8", "surrogateescape") for p in paths]  # undecodable file names too
        self._starts = np.cumsum([0, *map(len, enc)], dtype=np.int64)
        self._blob = np.frombuffer(b"".join(enc), np.uint8)

    def name(self, member: int) -> str:
        a, b = int(self._starts[member]), int(self._starts[member + 1])
        return bytes(self._blob[a:b]).decode("utf-8", "surrogateescape")

    def below(self, folder: str, members: np.ndarray) -> "FileReader":
        """A reader of ``members`` (in that order) rooted at ``folder``, a folder they are in."""
        return FileReader(os.path.join(self.root, folder), [self.name(int(m))[len(folder):] for m in members])

    def read(self, member: int, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
        try:
            return read_regular(os.path.join(self.root, self.name(member)), max_bytes)
        except OSError as exc:
            raise BadMember(f"cannot read file ({exc.strerror})") from None

    def crc(self, member: int, raw) -> int:  # of the bytes: a file may change between epochs
        return zlib.crc32(raw)

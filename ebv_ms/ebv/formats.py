"""`load_ebv` / `save_ebv`, the format chosen by extension (docs/files.md): .npz native (vectors +
JSON metadata as uint8, no pickle, checksum verified), .npy (float32 N x d), .pkl / .pickle (the
authors' numpy/torch files via `safe_pickle`; written as a numpy array pickle, as theirs)."""
from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..atomic import atomic_path
from .ebvset import EBVError, EBVSet, degeneracy
from .safe_pickle import safe_load_pickle

NATIVE_FORMAT = "ebv-ms"
NATIVE_VERSION = 1
SUPPORTED_EXTENSIONS = (".npz", ".npy", ".pkl", ".pickle")

PathLike = Union[str, os.PathLike]
logger = logging.getLogger(__name__)


def _ext(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise EBVError(f"{path}: unknown EBV file extension {ext or '(none)'!r}; supported: "
                       f"{', '.join(SUPPORTED_EXTENSIONS)} (.npz = native format with metadata, "
                       ".npy = float32 N x d array, .pkl = authors' numpy/torch pickles)")
    return ext


def _check_magic(path: Path, magic: bytes, what: str) -> None:
    with open(path, "rb") as f:
        head = f.read(len(magic))
    if head != magic:
        raise EBVError(f"{path}: not a {what} (file starts with {head!r}, expected {magic!r})")


_NPZ_MAX_META = 16 << 20   # metadata JSON is a few hundred bytes; 16 MiB is corrupt
_DEFLATE_MAX_RATIO = 1032  # zlib's worst case: deflate cannot shrink data more than this
_CHUNK = 16 << 20          # read size: the only temporary a load needs beside the matrix


def _read_array(f, where: str, have: int, mmap_path: Optional[Path] = None,
                max_bytes: Optional[int] = None) -> np.ndarray:
    """The .npy array at ``f``'s position (``have`` bytes to its end), its size checked before
    allocating. With ``mmap_path`` an aligned array is mapped read-only (one copy per host in the
    page cache), else read in ``_CHUNK`` pieces into place: read whole, a 2 GB set peaked at 4.25 GB."""
    start = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        read = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = read(f)
    except Exception as exc:  # noqa: BLE001 - a garbled header raises ValueError, SyntaxError, ...
        text = f"{type(exc).__name__}: {exc}"
        raise EBVError(f"{where}: .npy header is not readable ({text[:200]}): the file is "
                       "corrupt or not written by numpy") from None
    if dtype.hasobject:
        raise EBVError(f"{where}: .npy holds an object array (pickled Python objects), refused: "
                       "EBV files are numeric matrices")
    shape, offset = tuple(int(n) for n in shape), f.tell()
    need, have = int(np.prod(shape, dtype=object)) * dtype.itemsize, have - (offset - start)
    if need != have:
        raise EBVError(f"{where}: header declares a {' x '.join(map(str, shape)) or 'scalar'} "
                       f"array of {dtype} ({need} bytes) but the file holds {have} bytes of data: "
                       "truncated or corrupt")
    if max_bytes is not None and need > max_bytes:
        raise EBVError(f"{where}: {need} bytes, expected at most {max_bytes}")
    shape = shape[::-1] if fortran else shape
    if mmap_path is not None and need and offset % dtype.alignment == 0:
        arr = np.memmap(mmap_path, dtype=dtype, mode="r", offset=offset, shape=shape)
        arr = arr.view(np.ndarray)  # a plain array; the mapping lives as long as it does
    else:
        arr = np.empty(shape, dtype=dtype)
        view, got = memoryview(arr.reshape(-1)).cast("B"), 0
        while got < need and (n := f.readinto(view[got:got + _CHUNK])):
            got += n
        if got != need:
            raise EBVError(f"{where}: data truncated ({got} of {need} bytes)")
    return arr.T if fortran else arr


def _read_npy(path: Path):
    _check_magic(path, b"\x93NUMPY", ".npy array file")
    with open(path, "rb") as f:
        arr = _read_array(f, str(path), path.stat().st_size, mmap_path=path)
    return arr, {"method": "unknown", "extra": {"source": str(path), "format": "npy"}}


def _read_npz_member(z: zipfile.ZipFile, path: Path, name: str, archive_size: int,
                     max_bytes: Optional[int] = None) -> np.ndarray:
    """One array of an .npz; a stored member is read (or mapped) at its offset, not via zipfile."""
    where = f"{path} (member {name})"
    info = z.getinfo(name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise EBVError(f"{where}: compression method {info.compress_type} not supported")
    if info.flag_bits & 0x61:  # bits 0, 6: encrypted; 5: patched data (zipfile cannot read them)
        raise EBVError(f"{where}: encrypted or patched zip member (flags 0x{info.flag_bits:04x}) "
                       "not supported")
    stored = info.compress_type == zipfile.ZIP_STORED
    if info.compress_size > archive_size or (stored and info.file_size != info.compress_size) \
            or info.file_size > info.compress_size * _DEFLATE_MAX_RATIO + 1024:
        raise EBVError(f"{where}: zip directory declares {info.file_size} bytes in "
                       f"{info.compress_size} stored bytes of a {archive_size}-byte file: corrupt")
    if stored and max_bytes is None:  # its bytes start after its local header
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise EBVError(f"{where}: local header missing: corrupt")
            start = info.header_offset + 30 + sum(struct.unpack("<HH", local[26:30]))
            if start + info.file_size > archive_size:
                raise EBVError(f"{where}: {info.file_size} bytes at offset {start} run past the "
                               f"end of the {archive_size}-byte file: corrupt")
            f.seek(start)
            return _read_array(f, where, info.file_size, mmap_path=path)
    with z.open(name) as f:  # deflated (or the small metadata member: its CRC is checked)
        return _read_array(f, where, info.file_size, max_bytes=max_bytes)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# every key of the native metadata with the type it must have (a tampered file is refused);
# alpha, seed and extra may be absent: their check holds for None
_META_KEYS = {
    "num_classes": (_is_int, "an integer"), "dim": (_is_int, "an integer"),
    "alpha": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and 0 <= v <= 1), "null or a number in [0, 1]"),
    "method": (lambda v: isinstance(v, str), "a string"),
    "seed": (lambda v: v is None or _is_int(v), "null or an integer"),
    "checksum": (lambda v: isinstance(v, str) and len(v) == 16
                 and all(c in "0123456789abcdef" for c in v), "16 hex digits"),
    "extra": (lambda v: v is None or isinstance(v, dict), "null or a JSON object"),
}


def _read_npz(path: Path):
    _check_magic(path, b"PK", ".npz (zip) file")
    size = path.stat().st_size
    with zipfile.ZipFile(path) as z:
        members = {(n[:-4] if n.endswith(".npy") else n): n for n in z.namelist()}
        if not {"vectors", "metadata"} <= set(members):
            raise EBVError(f"{path}: not an ebv-ms .npz file (needs arrays 'vectors' and "
                           f"'metadata', found {sorted(members)[:10]})")
        meta_raw = _read_npz_member(z, path, members["metadata"], size, _NPZ_MAX_META)
        vectors = _read_npz_member(z, path, members["vectors"], size)
    if meta_raw.dtype != np.uint8 or meta_raw.ndim != 1:
        raise EBVError(f"{path}: metadata entry must be a 1-D uint8 array (UTF-8 JSON), got "
                       f"{meta_raw.dtype} of shape {meta_raw.shape}")
    try:
        meta = json.loads(meta_raw.tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise EBVError(f"{path}: metadata entry is not valid JSON ({str(exc)[:200]})") from None
    if meta.get("format") != NATIVE_FORMAT:
        raise EBVError(f"{path}: metadata format {str(meta.get('format'))[:60]!r}, "
                       f"expected {NATIVE_FORMAT!r}")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise EBVError(f"{path}: metadata malformed (format_version {str(version)[:60]!r})")
    if version > NATIVE_VERSION:
        raise EBVError(f"{path}: written by a newer ebv-ms (format version "
                       f"{version} > {NATIVE_VERSION}); upgrade ebv-ms")
    for key, (ok, want) in _META_KEYS.items():
        if key == "checksum" and meta.get(key) is None:
            raise EBVError(f"{path}: metadata has no checksum, so the matrix cannot be verified "
                           "(the key was removed or nulled: file edited or corrupt); save the "
                           "set again with ebv_ms.ebv.save_ebv if its origin is trusted")
        if not ok(meta.get(key)):
            raise EBVError(f"{path}: metadata key '{key}' must be {want}, got "
                           f"{str(meta.get(key, '(missing)'))[:60]!r}: file edited or corrupt")
    if vectors.ndim == 2 and (meta["num_classes"], meta["dim"]) != vectors.shape:  # EBVSet: not 2-D
        raise EBVError(f"{path}: metadata says N={meta['num_classes']}, d={meta['dim']} "
                       f"but the matrix is {' x '.join(map(str, vectors.shape))}: file corrupt or edited")
    return vectors, {"alpha": meta.get("alpha"), "method": meta["method"], "seed": meta.get("seed"),
                     "extra": dict(meta.get("extra") or {}), "checksum": meta["checksum"]}


def _read_pickle(path: Path):
    data = path.read_bytes()
    try:
        obj = safe_load_pickle(data)
    except EBVError as exc:  # UnsafePickleError keeps its type
        raise type(exc)(f"{path}: {exc}") from None
    if not isinstance(obj, np.ndarray):
        raise EBVError(f"{path}: pickle holds a {type(obj).__name__}, not an EBV matrix "
                       "(expected a numpy array or torch tensor)")
    return obj, {"method": "pytorch_pkl" if b"torch._utils" in data[:256] else "numpy_pkl",
                 "extra": {"source": str(path), "format": "pkl"}}


_READERS = {".npy": _read_npy, ".npz": _read_npz, ".pkl": _read_pickle, ".pickle": _read_pickle}


def load_ebv(path: PathLike) -> EBVSet:
    """Read an EBV set; errors name the file. A degenerate set (identical rows, d = 1) loads with
    a warning: training with it stays at chance for the classes concerned."""
    path = Path(path)
    ext = _ext(path)
    if not path.exists():
        raise FileNotFoundError(f"EBV file not found: {path}")
    if path.is_dir():
        raise EBVError(f"{path}: is a directory, not an EBV file")
    if path.stat().st_size == 0:
        raise EBVError(f"{path}: file is empty")
    try:
        matrix, how = _READERS[ext](path)
    except EBVError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError,
            NotImplementedError) as exc:  # zipfile's unsupported versions and methods
        raise EBVError(f"{path}: not a readable {ext} file ({type(exc).__name__}: {exc})") from None
    want = how.pop("checksum", None)
    try:
        ebv = EBVSet(matrix, **how)
    except EBVError as exc:
        raise EBVError(f"{path}: not an EBV set: {exc}") from None
    if why := degeneracy(ebv.vectors):
        logger.warning("%s: degenerate EBV set: %s", path, why)
    if want is not None and ebv.checksum() != want:
        raise EBVError(f"{path}: checksum mismatch (metadata {want}, vectors {ebv.checksum()}): "
                       "the matrix was modified or the file is corrupt")
    return ebv


def _metadata(ebv: EBVSet) -> dict:
    from .. import __version__
    return {
        "format": NATIVE_FORMAT, "format_version": NATIVE_VERSION, "num_classes": ebv.num_classes,
        "dim": ebv.dim, "alpha": None if ebv.alpha is None else float(ebv.alpha),
        "method": str(ebv.method), "seed": None if ebv.seed is None else int(ebv.seed),
        "checksum": ebv.checksum(), "extra": ebv.extra or {}, "ebv_ms_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


_PAGE = 4096
_PAD_ID = 0xD935  # the extra-field id Android's zipalign uses for padding


def _write_npz(f, arrays: dict) -> None:
    """``np.savez`` with each array's data on a page boundary (padding in the member's local
    header), so `_read_array` can map it in place; np.load and zip tools read it as usual."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, arr in arrays.items():
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.file_size = info.compress_size = len(head.getvalue()) + arr.nbytes
            info.CRC = 0  # FileHeader below only measures the header; zipfile sets both
            info.extra = struct.pack("<HH", _PAD_ID, 0)
            used = f.tell() + len(info.FileHeader(True)) + len(head.getvalue())
            pad = -used % _PAGE
            info.extra = struct.pack("<HH", _PAD_ID, pad) + bytes(pad)
            with z.open(info, "w", force_zip64=True) as out:
                out.write(head.getvalue())
                out.write(memoryview(np.ascontiguousarray(arr)).cast("B"))


def save_ebv(ebv: EBVSet, path: PathLike) -> Path:
    """Write ``ebv`` to ``path``; the format follows the extension (see module docstring)."""
    if not isinstance(ebv, EBVSet):
        ebv = EBVSet(ebv)
    path = Path(path)
    ext = _ext(path)
    if ext == ".npz":
        try:
            meta = json.dumps(_metadata(ebv), sort_keys=True).encode("utf-8")
        except TypeError as exc:
            raise EBVError(f"{path}: EBVSet.extra must be JSON-serialisable ({exc})") from None
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a crash leaves no half-written set
        if ext == ".npy":
            np.save(f, ebv.vectors, allow_pickle=False)
        elif ext == ".npz":
            _write_npz(f, {"vectors": ebv.vectors, "metadata": np.frombuffer(meta, dtype=np.uint8)})
        else:  # .pkl / .pickle: numpy array pickle, as in the authors' MindSpore repository
            pickle.dump(ebv.vectors, f, protocol=4)
    return path

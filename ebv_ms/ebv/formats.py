"""Reading and writing EBV sets: `load_ebv` / `save_ebv`, the format chosen by file extension.

* ``.npz`` -- the native format: ``vectors`` (float32 N x d) plus ``metadata`` (UTF-8 JSON as a
  uint8 array, so it loads with ``allow_pickle=False``) recording N, d, alpha, method, seed,
  extra and the set's checksum, which is verified on load.
* ``.npy`` -- a plain float32 N x d array (what ``--out FILE.npy`` writes; no metadata).
* ``.pkl`` / ``.pickle`` -- the authors' released files (numpy arrays or torch CUDA tensors),
  read through the restricted unpickler of `safe_pickle`; writing gives a numpy float32 array
  pickle, which the authors' MindSpore code loads as is.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Union

import numpy as np

from ..atomic import atomic_path

from .ebvset import EBVError, EBVSet
from .safe_pickle import UnsafePickleError, safe_load_pickle

__all__ = ["load_ebv", "save_ebv", "SUPPORTED_EXTENSIONS", "NATIVE_FORMAT", "NATIVE_VERSION"]

NATIVE_FORMAT = "ebv-ms"
NATIVE_VERSION = 1
SUPPORTED_EXTENSIONS = (".npz", ".npy", ".pkl", ".pickle")

PathLike = Union[str, os.PathLike]


def _ext(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise EBVError(f"{path}: unknown EBV file extension {ext or '(none)'!r}; supported: "
                       f"{', '.join(SUPPORTED_EXTENSIONS)} (.npz = native format with metadata, "
                       ".npy = float32 N x d array, .pkl = authors' numpy/torch pickles)")
    return ext


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"EBV file not found: {path}")
    if path.is_dir():
        raise EBVError(f"{path}: is a directory, not an EBV file")
    if path.stat().st_size == 0:
        raise EBVError(f"{path}: file is empty")


def _make_set(path: Path, matrix, **meta) -> EBVSet:
    try:
        return EBVSet(matrix, **meta)
    except EBVError as exc:
        raise EBVError(f"{path}: not an EBV set: {exc}") from None


# --------------------------------------------------------------------------- readers


def _check_magic(path: Path, magic: bytes, what: str) -> None:
    with open(path, "rb") as f:
        head = f.read(len(magic))
    if head != magic:
        raise EBVError(f"{path}: not a {what} (file starts with {head!r}, expected {magic!r})")


def _load_npy(path: Path) -> EBVSet:
    _check_magic(path, b"\x93NUMPY", ".npy array file")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays, bad header, truncated data
        raise EBVError(f"{path}: not a readable .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise EBVError(f"{path}: not a readable .npy file ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise EBVError(f"{path}: expected one array in a .npy file, got {type(arr).__name__}")
    return _make_set(path, arr, method="unknown", extra={"source": str(path), "format": "npy"})


def _load_npz(path: Path) -> EBVSet:
    _check_magic(path, b"PK", ".npz (zip) file")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if not {"vectors", "metadata"} <= names:
                raise EBVError(f"{path}: not an ebv-ms .npz file (needs arrays 'vectors' and "
                               f"'metadata', found {sorted(names)})")
            vectors = z["vectors"]
            meta_raw = z["metadata"]
    except EBVError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise EBVError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(np.asarray(meta_raw, dtype=np.uint8).tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise EBVError(f"{path}: metadata entry is not valid JSON ({exc})") from None
    if meta.get("format") != NATIVE_FORMAT:
        raise EBVError(f"{path}: metadata format {meta.get('format')!r}, expected {NATIVE_FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or not isinstance(meta.get("extra", {}), (dict, type(None))):
        raise EBVError(f"{path}: metadata malformed (format_version {version!r}, extra of type "
                       f"{type(meta.get('extra')).__name__})")
    if version > NATIVE_VERSION:
        raise EBVError(f"{path}: written by a newer ebv-ms (format version "
                       f"{meta.get('format_version')} > {NATIVE_VERSION}); upgrade ebv-ms")
    shape = getattr(vectors, "shape", None)
    if shape is not None and len(shape) == 2 and \
            (meta.get("num_classes"), meta.get("dim")) != tuple(int(s) for s in shape):
        raise EBVError(f"{path}: metadata says N={meta.get('num_classes')}, d={meta.get('dim')} "
                       f"but the matrix is {shape[0]} x {shape[1]}: file corrupt or edited")
    ebv = _make_set(path, vectors, alpha=meta.get("alpha"), method=meta.get("method", "unknown"),
                    seed=meta.get("seed"), extra=dict(meta.get("extra") or {}))
    want = meta.get("checksum")
    if want is not None and ebv.checksum() != want:
        raise EBVError(f"{path}: checksum mismatch (metadata {want}, vectors {ebv.checksum()}): "
                       "the matrix was modified or the file is corrupt")
    return ebv


def _load_pickle(path: Path) -> EBVSet:
    data = path.read_bytes()
    try:
        obj = safe_load_pickle(data)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except EBVError as exc:
        raise EBVError(f"{path}: {exc}") from None
    if not isinstance(obj, np.ndarray):
        raise EBVError(f"{path}: pickle holds a {type(obj).__name__}, not an EBV matrix "
                       "(expected a numpy array or torch tensor)")
    is_torch = b"torch._utils" in data[:256]
    return _make_set(path, obj, method="pytorch_pkl" if is_torch else "numpy_pkl",
                     extra={"source": str(path), "format": "pkl"})


_READERS = {".npy": _load_npy, ".npz": _load_npz, ".pkl": _load_pickle, ".pickle": _load_pickle}


def load_ebv(path: PathLike) -> EBVSet:
    """Read an EBV set from ``.npz`` (native), ``.npy`` or the authors' ``.pkl`` files.

    Raises `EBVError` naming the file and the problem for anything that is not a usable set,
    and `safe_pickle.UnsafePickleError` (an EBVError) for a pickle outside the allow-list.
    """
    path = Path(path)
    ext = _ext(path)
    _check_file(path)
    return _READERS[ext](path)


# --------------------------------------------------------------------------- writers


def _metadata(ebv: EBVSet) -> dict:
    from .. import __version__
    alpha = None if ebv.alpha is None else float(ebv.alpha)
    seed = None if ebv.seed is None else int(ebv.seed)
    return {
        "format": NATIVE_FORMAT, "format_version": NATIVE_VERSION,
        "num_classes": ebv.num_classes, "dim": ebv.dim, "alpha": alpha,
        "method": str(ebv.method), "seed": seed, "checksum": ebv.checksum(),
        "extra": ebv.extra or {}, "ebv_ms_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary sibling: a crash never leaves a half-written set."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def save_ebv(ebv: EBVSet, path: PathLike) -> Path:
    """Write ``ebv`` to ``path``; the format follows the extension (see module docstring)."""
    if not isinstance(ebv, EBVSet):
        ebv = EBVSet(ebv)
    path = Path(path)
    ext = _ext(path)
    vectors = np.ascontiguousarray(ebv.vectors, dtype=np.float32)
    if ext == ".npy":
        _atomic_write(path, lambda f: np.save(f, vectors, allow_pickle=False))
    elif ext == ".npz":
        try:
            meta = json.dumps(_metadata(ebv), sort_keys=True).encode("utf-8")
        except TypeError as exc:
            raise EBVError(f"{path}: EBVSet.extra must be JSON-serialisable ({exc})") from None
        meta_arr = np.frombuffer(meta, dtype=np.uint8)
        _atomic_write(path, lambda f: np.savez(f, vectors=vectors, metadata=meta_arr))
    else:  # .pkl / .pickle: numpy array pickle, as in the authors' MindSpore repository
        _atomic_write(path, lambda f: pickle.dump(vectors, f, protocol=4))
    return path

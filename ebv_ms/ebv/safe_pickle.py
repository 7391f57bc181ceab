"""Restricted unpickling of EBV matrices saved by numpy or PyTorch, with neither torch nor a GPU.

Why: the authors released their sets as ``pickle.dump`` files (numpy arrays, and torch CUDA
tensors), and a ``.pkl`` from the internet is untrusted input: ``pickle.load`` runs whatever
callable the file names. Here every global the file asks for goes through an allow-list that
maps it to a local, argument-checking function; anything else raises `UnsafePickleError`
before any of the file's code could run.

What the formats need (checked against the released files with ``pickletools``):

* numpy array: ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`` then BUILD
  with ``(version, shape, numpy.dtype('f4', False, True) + BUILD state, fortran, raw bytes)``.
  Neither the dtype nor the array state is handed to numpy's own ``__setstate__``: local
  stand-ins check them (numeric dtype, no fields, byte count = shape x itemsize) and build a
  copy with ``np.frombuffer``, so no attacker-chosen state reaches numpy's C code.
* torch tensor: ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
  requires_grad, collections.OrderedDict())`` where ``storage`` is
  ``torch.storage._load_from_bytes(b'...')``. Those bytes are torch's legacy (non-zip)
  serialisation of one storage: five protocol-2 pickles -- magic number, protocol version
  (1001), sys info (``little_endian``, type sizes), the storage object as a persistent id
  ``('storage', torch.FloatStorage, key, location, numel, view_metadata)``, the list of
  storage keys -- then, per key, an int64 little-endian element count and the raw data.
  The location ("cuda:0") is ignored: the data are plain bytes, little-endian (torch converts
  on big-endian machines when writing), so ``sys_info['little_endian']`` is not consulted.
"""
from __future__ import annotations

import io
import math
import pickle
import struct
from collections import OrderedDict
from typing import Any, Callable, Dict, Tuple

import numpy as np

from .ebvset import EBVError

__all__ = ["UnsafePickleError", "safe_load_pickle", "load_torch_legacy_storage"]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
TORCH_LEGACY_PROTOCOL = 1001

# Dtypes an EBV pickle may contain (numpy dtype strings); no object, void or string dtypes.
_SAFE_DTYPES = {np.dtype(t) for t in (
    "f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")}

# torch legacy storage class name -> numpy dtype of its elements ("bfloat16" handled apart).
_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"), "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}


class UnsafePickleError(EBVError):
    """The pickle asks for something outside the allow-list; nothing from it was run."""


# --------------------------------------------------------------------------- numpy


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` inside the pickle (the real class would allow NEWOBJ)."""

    def __reduce__(self):  # never re-pickled
        raise TypeError("internal marker")


_NDARRAY = _NDArrayClass()


class _DType:
    """A numeric numpy dtype being unpickled; BUILD state is checked here, never by numpy's C."""

    __slots__ = ("dtype",)

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str):
            raise UnsafePickleError(f"numpy dtype spec {spec!r} refused")
        try:
            dt = np.dtype(spec)
        except TypeError as exc:
            raise UnsafePickleError(f"numpy dtype {spec!r} refused ({exc})") from None
        if dt not in _SAFE_DTYPES:
            raise UnsafePickleError(f"numpy dtype {spec!r} refused (only numeric dtypes)")
        self.dtype = dt

    def __setstate__(self, state):
        # numpy: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, meta])
        if not (isinstance(state, tuple) and len(state) in (8, 9)):
            raise UnsafePickleError(f"numpy dtype state {state!r} refused")
        byteorder, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise UnsafePickleError("structured / sub-array numpy dtypes refused")
        if byteorder not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"numpy dtype byte order {byteorder!r} refused")
        if byteorder in "<>":
            self.dtype = self.dtype.newbyteorder(byteorder)


class _ArrayState:
    """The array ``_reconstruct`` starts; its BUILD state becomes a copy via ``np.frombuffer``."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # numpy: (version, shape, dtype, is_fortran, raw bytes); version-less 4-tuples are older
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise UnsafePickleError(f"numpy array state of type {type(state).__name__} refused")
        shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType):
            raise UnsafePickleError(f"numpy array of dtype {type(dtype).__name__} refused")
        if not isinstance(raw, (bytes, bytearray)):  # object arrays carry a list of objects
            raise UnsafePickleError(f"numpy array data of type {type(raw).__name__} refused")
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise EBVError(f"numpy array shape {shape!r} malformed")
        dt = dtype.dtype
        if len(raw) != math.prod(shape) * dt.itemsize:
            raise EBVError(f"numpy array data has {len(raw)} bytes, shape {shape} of {dt} needs "
                           f"{math.prod(shape) * dt.itemsize}: file truncated or corrupt")
        arr = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order="F" if fortran else "C")
        self.array = arr.astype(dt.newbyteorder("="), copy=True)


def _safe_reconstruct(cls, shape, typecode):
    """``numpy.core.multiarray._reconstruct``, only for plain ndarrays and numpy's (0,) stub."""
    if cls is not _NDARRAY:
        raise UnsafePickleError(f"numpy _reconstruct of {cls!r} refused (only numpy.ndarray)")
    if tuple(shape) != (0,) or not isinstance(typecode, bytes):
        raise UnsafePickleError(f"unexpected numpy _reconstruct arguments {shape!r}, {typecode!r}")
    return _ArrayState()


def _safe_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` for numeric dtypes from raw bytes."""
    if not isinstance(dtype, _DType) or not isinstance(data, bytes) \
            or len(data) != dtype.dtype.itemsize:
        raise UnsafePickleError(f"numpy scalar of {dtype!r} refused")
    return np.frombuffer(data, dtype=dtype.dtype)[0]


def _safe_frombuffer(buf, dtype, shape, order):
    """``numpy.core.numeric._frombuffer``: how numpy pickles arrays under protocol 5."""
    if not isinstance(dtype, _DType) or not isinstance(buf, (bytes, bytearray)) \
            or order not in ("C", "F"):
        raise UnsafePickleError("numpy _frombuffer with unexpected arguments refused")
    state = _ArrayState()
    state.__setstate__((tuple(shape) if isinstance(shape, (tuple, list)) else shape, dtype,
                        order == "F", buf))
    return state.array


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode(str, 'latin1')``: how protocols 0-2 store bytes objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with {type(text).__name__}, {encoding!r} refused")
    return text.encode("latin1")


def _resolve(obj):
    """Replace a finished `_ArrayState` by its array (top level, lists, tuples, dict values)."""
    if isinstance(obj, _ArrayState):
        if obj.array is None:
            raise EBVError("numpy array in the pickle was never filled (truncated or corrupt)")
        return obj.array
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(o) for o in obj)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v)) for k, v in obj.items())
    return obj


# --------------------------------------------------------------------------- torch


class _TorchStorage:
    """A torch storage decoded to a 1-D numpy array (what ``_load_from_bytes`` returns here)."""

    __slots__ = ("array", "location")

    def __init__(self, array: np.ndarray, location: str):
        self.array = array
        self.location = location

    def __setstate__(self, state):  # BUILD on a storage is not part of the format
        raise UnsafePickleError("BUILD on a torch storage refused")


class _TorchStorageType:
    """Stands for ``torch.FloatStorage`` etc. inside the legacy storage pickle."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name = name
        self.dtype = _TORCH_STORAGE_DTYPES[name]

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"calling torch.{self.name} refused")

    def __setstate__(self, state):
        raise UnsafePickleError(f"BUILD on torch.{self.name} refused")


def _as_int(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise EBVError(f"torch tensor {what} must be an int, got {x!r}")
    return int(x)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """``torch._utils._rebuild_tensor[_v2]`` -> a numpy copy of the strided view, bounds-checked."""
    if not isinstance(storage, _TorchStorage):
        raise UnsafePickleError(f"torch tensor over {type(storage).__name__} refused (needs a storage)")
    offset = _as_int(storage_offset, "storage offset")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) \
            or len(size) != len(stride):
        raise EBVError(f"torch tensor size/stride malformed: {size!r} / {stride!r}")
    size = tuple(_as_int(s, "size") for s in size)
    stride = tuple(_as_int(s, "stride") for s in stride)
    data = storage.array
    numel = math.prod(size)
    if offset < 0 or min(size, default=1) < 0 or min(stride, default=0) < 0:
        raise EBVError(f"torch tensor has negative offset/size/stride: {offset}, {size}, {stride}")
    if numel:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= data.size:
            raise EBVError(f"torch tensor (offset {offset}, size {size}, stride {stride}) reaches "
                           f"element {last} of a storage of {data.size}: file truncated or corrupt")
        if numel > data.size:
            raise EBVError(f"torch tensor of {numel} elements over a storage of {data.size} "
                           "(expanded views are not supported)")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(data[offset:] if numel else data[:0], shape=size,
                                           strides=tuple(st * item for st in stride),
                                           writeable=False)
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    """``torch._utils._rebuild_parameter``: an nn.Parameter is its data here."""
    if not isinstance(data, np.ndarray):
        raise UnsafePickleError(f"torch parameter over {type(data).__name__} refused")
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from ``allowed``; no persistent ids."""

    def __init__(self, file, allowed: Dict[Tuple[str, str], Any]):
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused global '{module}.{name}': not needed by numpy/torch EBV files, "
                "and loading it could run arbitrary code") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refused persistent id {pid!r} outside a torch storage")


class _TorchStorageUnpickler(_RestrictedUnpickler):
    """The storage record of torch's legacy format: only ``('storage', ...)`` persistent ids."""

    def __init__(self, file):
        super().__init__(file, {("torch", n): _TorchStorageType(n) for n in _TORCH_STORAGE_DTYPES})
        self.records = {}

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"refused persistent id {pid!r} in torch storage bytes")
        storage_type, key, location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _TorchStorageType) or not isinstance(key, str) \
                or not isinstance(location, str):
            raise UnsafePickleError(f"malformed torch storage record {pid!r}")
        numel = _as_int(numel, "storage size")
        if key in self.records and self.records[key][:2] != (storage_type, numel):
            raise EBVError(f"torch storage {key} declared twice with different types/sizes")
        self.records[key] = (storage_type, numel, location)
        if view is not None:  # very old torch: a view (view_key, offset, view_size) of `key`
            if not (isinstance(view, tuple) and len(view) == 3):
                raise UnsafePickleError(f"malformed torch storage view {view!r}")
            return ("view", key, _as_int(view[1], "view offset"), _as_int(view[2], "view size"))
        return ("root", key)


_NUMPY_GLOBALS: Dict[Tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x names
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = _safe_reconstruct
    _NUMPY_GLOBALS[(_mod, "scalar")] = _safe_scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _NUMPY_GLOBALS[(_mod, "_frombuffer")] = _safe_frombuffer
_NUMPY_GLOBALS[("numpy", "ndarray")] = _NDARRAY
_NUMPY_GLOBALS[("numpy", "dtype")] = _DType
_NUMPY_GLOBALS[("collections", "OrderedDict")] = OrderedDict
_NUMPY_GLOBALS[("_codecs", "encode")] = _latin1_bytes


def _read_exact(f: io.BytesIO, n: int, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise EBVError(f"torch storage bytes truncated while reading {what} "
                       f"({len(b)} of {n} bytes)")
    return b


def load_torch_legacy_storage(data: bytes) -> _TorchStorage:
    """Decode ``torch.storage._load_from_bytes`` bytes (legacy torch.save of one storage)."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"torch _load_from_bytes of {type(data).__name__} refused")
    f = io.BytesIO(bytes(data))
    if data[:2] == b"PK":
        raise EBVError("torch storage in zip serialisation is not supported (expected the legacy "
                       "format torch uses when pickling tensors)")

    def load(unpickler_cls=_RestrictedUnpickler, what="header"):
        try:
            u = unpickler_cls(f) if unpickler_cls is _TorchStorageUnpickler else unpickler_cls(f, {})
            return u, u.load()
        except EBVError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt bytes raise anything
            raise EBVError(f"torch storage bytes corrupt ({what}): {exc}") from exc

    _, magic = load(what="magic number")
    if magic != TORCH_LEGACY_MAGIC:
        raise EBVError(f"not torch legacy storage bytes (magic number {magic!r})")
    _, version = load(what="protocol version")
    if version != TORCH_LEGACY_PROTOCOL:
        raise EBVError(f"unsupported torch legacy protocol version {version!r}")
    load(what="sys info")  # torch writes counts and data little-endian whatever this says
    u, obj = load(_TorchStorageUnpickler, "storage record")
    _, keys = load(what="storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise EBVError(f"torch storage keys malformed: {keys!r}")
    remaining = len(data) - f.tell()
    arrays = {}
    for key in keys:
        if key not in u.records:
            raise EBVError(f"torch storage key {key!r} has no record")
        stype, numel, location = u.records[key]
        (count,) = struct.unpack("<q", _read_exact(f, 8, f"size of storage {key}"))
        itemsize = stype.dtype.itemsize
        if count != numel or count < 0 or count * itemsize > remaining:
            raise EBVError(f"torch storage {key}: {count} elements recorded, {numel} declared, "
                           f"{remaining} bytes left: file truncated or corrupt")
        raw = _read_exact(f, count * itemsize, f"data of storage {key}")
        arr = np.frombuffer(raw, dtype=stype.dtype)
        if stype.name == "BFloat16Storage":  # bfloat16 = top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        arrays[key] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        remaining = len(data) - f.tell()
    if not (isinstance(obj, tuple) and obj and obj[0] in ("root", "view")):
        raise EBVError("torch storage bytes hold no storage record")
    if obj[1] not in arrays:
        raise EBVError(f"torch storage {obj[1]!r} has no data")
    arr = arrays[obj[1]]
    if obj[0] == "view":
        _, _, off, n = obj
        if off < 0 or n < 0 or off + n > arr.size:
            raise EBVError(f"torch storage view [{off}:{off + n}] outside {arr.size} elements")
        arr = arr[off:off + n]
    return _TorchStorage(arr, u.records[obj[1]][2])


_TORCH_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): load_torch_legacy_storage,
}

ALLOWED_GLOBALS = {**_NUMPY_GLOBALS, **_TORCH_GLOBALS}


def allowed_globals() -> list:
    """The ``module.name`` globals a pickle may use (for docs and error messages)."""
    return sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)


def safe_load_pickle(data: bytes) -> Any:
    """Unpickle ``data`` through the allow-list; raises `UnsafePickleError` / `EBVError`.

    The result is whatever the pickle built from numpy arrays, torch tensors (as numpy arrays),
    OrderedDicts and plain Python values; the caller decides whether it is an EBV matrix.
    """
    try:
        return _resolve(_RestrictedUnpickler(io.BytesIO(data), ALLOWED_GLOBALS).load())
    except EBVError:
        raise
    except MemoryError as exc:
        raise EBVError(f"pickle asks for more memory than available ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pickles raise anything
        raise EBVError(f"not a readable pickle ({type(exc).__name__}: {exc})") from exc

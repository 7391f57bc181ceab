"""Restricted unpickling of the authors' released EBV files (numpy arrays, torch CUDA tensors)
without torch or a GPU; the formats and every rule's reason: docs/files.md.

Every global goes through an allow-list of argument-checking stand-ins, so nothing of the file runs.
A file of S bytes costs O(S) whatever it holds (a memo can make 1 KB a DAG of 2^40 paths): on the
pure-Python unpickler, BUILD acts only on the array/dtype stand-ins, dict keys and set items are
plain scalars (hashing a tuple walks it as a tree), lengths are checked against S, allowed calls are
charged to a budget of 8 x S and at most 2^18 opcodes run. The C unpickler cannot bound the last two.
"""
from __future__ import annotations

import io
import math
import pickle
import reprlib
import struct
from collections import OrderedDict, namedtuple
from typing import Any

import numpy as np

from .ebvset import EBVError

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
TORCH_LEGACY_PROTOCOL = 1001

_SAFE_DTYPES = {np.dtype(t) for t in "f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1".split()}
_MAX_DIM = 1 << 62  # larger shapes / sizes are corrupt (and would make the products slow)


class UnsafePickleError(EBVError):
    """The pickle asks for something outside the allow-list; nothing from it was run."""


_REPR = reprlib.Repr()
vars(_REPR).update(maxlevel=3, maxtuple=4, maxlist=4, maxdict=4, maxset=4, maxfrozenset=4,
                   maxdeque=4, maxarray=4, maxstring=60, maxother=60, maxlong=40)


def excerpt(obj, limit: int = 120) -> str:
    """A bounded ``repr`` of file-controlled data (at most ~4^3 nodes visited, ``limit`` chars)."""
    try:
        text = _REPR.repr(obj)
    except Exception:  # noqa: BLE001 - a hostile object's repr may fail
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _why(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


def _ordered_dict(*args, **kwargs):
    """``collections.OrderedDict()``: torch's empty backward hooks (items come by SETITEMS)."""
    if args or kwargs:
        raise UnsafePickleError("collections.OrderedDict with arguments refused")
    return OrderedDict()


_NDARRAY = object()  # stands for numpy.ndarray (the real class would allow NEWOBJ)


class _DType:
    """A numeric numpy dtype being unpickled; BUILD state is checked here, never by numpy's C."""

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str):
            raise UnsafePickleError(f"numpy dtype spec {excerpt(spec)} refused")
        try:  # numeric dtype codes are short ('f4', '<f8', 'float64' is 7)
            dt = np.dtype(spec) if len(spec) <= 8 else None
        except TypeError as exc:
            raise UnsafePickleError(f"numpy dtype {excerpt(spec)} refused ({exc})") from None
        if dt not in _SAFE_DTYPES:
            raise UnsafePickleError(f"numpy dtype {excerpt(spec)} refused (only numeric dtypes)")
        self.dtype = dt

    def __setstate__(self, state):
        # numpy: (version, byteorder, subarray, names, fields, elsize, alignment, flags[, meta])
        if not (isinstance(state, tuple) and len(state) in (8, 9)):
            raise UnsafePickleError(f"numpy dtype state {excerpt(state)} refused")
        byteorder, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise UnsafePickleError("structured / sub-array numpy dtypes refused")
        if byteorder not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"numpy dtype byte order {excerpt(byteorder)} refused")
        if byteorder in "<>":
            self.dtype = self.dtype.newbyteorder(byteorder)


def _array(shape, dtype, fortran, raw) -> np.ndarray:
    """A native-order copy of an array's raw bytes via ``np.frombuffer``, size checked first."""
    if not isinstance(dtype, _DType):
        raise UnsafePickleError(f"numpy array of dtype {type(dtype).__name__} refused")
    if not isinstance(raw, (bytes, bytearray)):  # object arrays carry a list of objects
        raise UnsafePickleError(f"numpy array data of type {type(raw).__name__} refused")
    if not isinstance(shape, (tuple, list)) or len(shape) > 64 or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < _MAX_DIM for n in shape):
        raise EBVError(f"numpy array shape {excerpt(shape)} malformed")
    shape, dt = tuple(shape), dtype.dtype
    if len(raw) != math.prod(shape) * dt.itemsize:
        raise EBVError(f"numpy array data has {len(raw)} bytes, shape {shape} of {dt} needs "
                       f"{math.prod(shape) * dt.itemsize}: file truncated or corrupt")
    arr = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dt.newbyteorder("="), copy=True)


class _ArrayState:
    """The array ``_reconstruct`` starts; BUILD fills it through `_array`."""

    array = None

    def __setstate__(self, state):
        # numpy: (version, shape, dtype, is_fortran, raw bytes); version-less 4-tuples are older
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise UnsafePickleError(f"numpy array state of type {type(state).__name__} refused")
        self.array = _array(*state)


def _safe_reconstruct(cls, shape, typecode):
    """``numpy.core.multiarray._reconstruct``, only for plain ndarrays and numpy's (0,) stub."""
    if cls is not _NDARRAY:
        raise UnsafePickleError(f"numpy _reconstruct of {excerpt(cls)} refused (only numpy.ndarray)")
    if not isinstance(shape, tuple) or shape != (0,) or not isinstance(typecode, bytes):
        raise UnsafePickleError(f"unexpected numpy _reconstruct arguments {excerpt(shape)}, "
                                f"{excerpt(typecode)}")
    return _ArrayState()


def _safe_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` for numeric dtypes from raw bytes."""
    if not isinstance(dtype, _DType) or not isinstance(data, bytes) \
            or len(data) != dtype.dtype.itemsize:
        raise UnsafePickleError(f"numpy scalar of {excerpt(dtype)} refused")
    return np.frombuffer(data, dtype=dtype.dtype)[0]


def _safe_frombuffer(buf, dtype, shape, order):
    """``numpy.core.numeric._frombuffer``: how numpy pickles arrays under protocol 5."""
    if not isinstance(dtype, _DType) or not isinstance(buf, (bytes, bytearray)) \
            or order not in ("C", "F"):
        raise UnsafePickleError("numpy _frombuffer with unexpected arguments refused")
    return _array(shape, dtype, order == "F", buf)


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode(str, 'latin1')``: how protocols 0-2 store bytes objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with {type(text).__name__}, {excerpt(encoding)} refused")
    return text.encode("latin1")


_TorchStorage = namedtuple("_TorchStorage", "array")  # what ``_load_from_bytes`` returns here


class _TorchStorageType(namedtuple("_TorchStorageType", "name dtype")):
    """Stands for ``torch.FloatStorage`` etc. inside the legacy storage pickle."""

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"calling torch.{self.name} refused")


# torch legacy storage classes with the numpy dtype of their elements (bfloat16 widened when read)
_STORAGE_TYPES = {("torch", f"{k}Storage"): _TorchStorageType(f"{k}Storage", np.dtype(v)) for k, v in (
    ("Float", "<f4"), ("Double", "<f8"), ("Half", "<f2"), ("BFloat16", "<u2"), ("Long", "<i8"),
    ("Int", "<i4"), ("Short", "<i2"), ("Char", "i1"), ("Byte", "u1"), ("Bool", "?"),
    ("Untyped", "u1"))}


def _as_int(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or abs(int(x)) >= _MAX_DIM:
        raise EBVError(f"torch tensor {what} must be an int below 2^62, got {excerpt(x)}")
    return int(x)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """``torch._utils._rebuild_tensor[_v2]`` -> a numpy copy of the strided view, bounds-checked."""
    if not isinstance(storage, _TorchStorage):
        raise UnsafePickleError(f"torch tensor over {type(storage).__name__} refused (needs a storage)")
    offset = _as_int(storage_offset, "storage offset")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) \
            or len(size) != len(stride) or len(size) > 64:
        raise EBVError(f"torch tensor size/stride malformed: {excerpt(size)} / {excerpt(stride)}")
    size = tuple(_as_int(s, "size") for s in size)
    stride = tuple(_as_int(s, "stride") for s in stride)
    data, numel = storage.array, math.prod(size)
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
    view = np.lib.stride_tricks.as_strided(data[offset:] if numel else data[:0], shape=size,
                                           strides=tuple(st * data.itemsize for st in stride),
                                           writeable=False)
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    """``torch._utils._rebuild_parameter``: an nn.Parameter is its data here."""
    if not isinstance(data, np.ndarray):
        raise UnsafePickleError(f"torch parameter over {type(data).__name__} refused")
    return data


_BUDGET = 8  # x the file size: the official files use ~4 (storage parsed, copied, viewed, copied)
_PLAIN_KEYS = (str, bytes, int, float, bool, type(None))
_BASE_DISPATCH = pickle._Unpickler.dispatch  # the pure-Python unpickler's opcode table
_MAX_OPS = 1 << 18  # EBV pickles hold a few dozen opcodes (the matrix is one BINBYTES)


def _counted(load_op):
    def op(self):
        self._ops += 1
        if self._ops > _MAX_OPS:
            raise EBVError(f"pickle runs more than {_MAX_OPS} opcodes; numpy/torch EBV files need a "
                           "few dozen (the matrix is one block of bytes): refused as corrupt or "
                           "hostile")
        load_op(self)
    return op


def _plain_keys(name: str, what: str, keys, target=None):
    """The stock opcode ``name``, once its keys / items are plain scalars (and its target a dict)."""
    base = _BASE_DISPATCH[getattr(pickle, name)[0]]

    def op(self):
        if target is not None and not isinstance(target(self), dict):
            raise UnsafePickleError(f"{name} on {type(target(self)).__name__} refused")
        for k in keys(self):
            if type(k) not in _PLAIN_KEYS:
                raise UnsafePickleError(f"{what} of type {type(k).__name__} refused (EBV files use "
                                        "only str/number keys; hashing a nested tuple can take "
                                        "time exponential in the file size)")
        base(self)
    return op


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler: globals from ``allowed``, the opcode changes above."""

    dispatch = dict(_BASE_DISPATCH)

    def __init__(self, file, allowed: dict, size: int, storage: bool = False):
        super().__init__(file)
        self._ops, self._size, self._left = 0, int(size), _BUDGET * int(size) + (1 << 20)
        self._allowed = {k: v if v is _NDARRAY or isinstance(v, _TorchStorageType)
                         else self._charged(v) for k, v in allowed.items()}
        self.records = {} if storage else None

    def _charge(self, obj) -> None:
        """Bytes the allowed globals take in and build, against a few times the file's size."""
        obj = obj.array if isinstance(obj, _TorchStorage) else obj
        sized = isinstance(obj, (bytes, bytearray, str, tuple, list, dict))
        self._left -= (obj.nbytes if isinstance(obj, np.ndarray) else len(obj) if sized else 1) + 1
        if self._left < 0:
            raise EBVError(f"pickle of {self._size} bytes asks to build more than {_BUDGET} x its "
                           "size (the same data referenced again and again through the memo): "
                           "refused as corrupt or hostile")

    def _charged(self, fn):
        """``fn`` charging its arguments and result (a per-load closure: no state survives)."""
        def call(*args, **kwargs):
            for a in args + tuple(kwargs.values()):
                self._charge(a)
            out = fn(*args, **kwargs)
            self._charge(out)
            return out
        return call

    def find_class(self, module, name):  # both str: GLOBAL decodes them, STACK_GLOBAL checks
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        what = f"{module}.{name}"
        what = what if len(what) <= 120 else what[:117] + "..."
        raise UnsafePickleError(f"refused global '{what}': not needed by numpy/torch EBV files, "
                                "and loading it could run arbitrary code")

    def persistent_load(self, pid):
        if self.records is None:
            raise UnsafePickleError(f"refused persistent id {excerpt(pid)} outside a torch storage")
        # ('storage', type, key, location, numel, view): views (very old torch) are not supported
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and pid[5:] in ((), (None,))):
            raise UnsafePickleError(f"refused persistent id {excerpt(pid)} in torch storage bytes")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, _TorchStorageType) or not isinstance(key, str) \
                or not isinstance(location, str):
            raise UnsafePickleError(f"malformed torch storage record {excerpt(pid)}")
        numel = _as_int(numel, "storage size")
        if self.records.setdefault(key, (storage_type, numel)) != (storage_type, numel):
            raise EBVError(f"torch storage {excerpt(key)} declared twice with different types/sizes")
        return ("root", key)

    def _load_build(self):
        inst = self.stack[-2]
        if type(inst) not in (_ArrayState, _DType):
            raise UnsafePickleError(f"BUILD (setting state) on {type(inst).__name__} refused: "
                                    "EBV files set state only on numpy arrays and dtypes")
        state = self.stack.pop()
        self._charge(state)
        inst.__setstate__(state)
        if isinstance(inst, _ArrayState):
            self._charge(inst.array)
            self._charge(inst.array)  # the bytes() copy made on the way
    dispatch[pickle.BUILD[0]] = _load_build

    def _load_bytearray8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._size:  # bytearray(n) is allocated before the bytes are read
            raise EBVError(f"pickle declares a {n}-byte array in a {self._size}-byte file: "
                           "truncated or corrupt")
        b = bytearray(n)
        if self.readinto(b) != n:
            raise EBVError("pickle data truncated (BYTEARRAY8)")
        self.append(b)
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    for _args in (("SETITEM", "dict key", lambda u: u.stack[-2:-1], lambda u: u.stack[-3]),
                  ("SETITEMS", "dict key", lambda u: u.stack[0::2],
                   lambda u: u.metastack[-1][-1] if u.metastack and u.metastack[-1] else None),
                  ("DICT", "dict key", lambda u: u.stack[0::2]),
                  ("FROZENSET", "set item", lambda u: u.stack),
                  ("ADDITEMS", "set item", lambda u: u.stack)):
        dispatch[getattr(pickle, _args[0])[0]] = _plain_keys(*_args)
    del _args
    # every opcode counted: the pure-Python unpickler costs ~1-5 us per opcode on this machine
    dispatch = {k: _counted(f) for k, f in dispatch.items()}


def load_torch_legacy_storage(data: bytes) -> _TorchStorage:
    """``torch.storage._load_from_bytes``: five pickles (magic, version, sys info, storage record,
    keys), then per key an int64 count and little-endian data (docs/files.md)."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"torch _load_from_bytes of {type(data).__name__} refused")
    f = io.BytesIO(bytes(data))
    if data[:2] == b"PK":
        raise EBVError("torch storage in zip serialisation is not supported (expected the legacy "
                       "format torch uses when pickling tensors)")

    def load(what, storage=False):
        try:
            u = _RestrictedUnpickler(f, _STORAGE_TYPES if storage else {}, len(data), storage)
            return u, u.load()
        except EBVError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt bytes raise anything
            raise EBVError(f"torch storage bytes corrupt ({what}): {_why(exc)}") from None

    _, magic = load("magic number")
    if magic != TORCH_LEGACY_MAGIC:
        raise EBVError(f"not torch legacy storage bytes (magic number {excerpt(magic)})")
    _, version = load("protocol version")
    if version != TORCH_LEGACY_PROTOCOL:
        raise EBVError(f"unsupported torch legacy protocol version {excerpt(version)}")
    load("sys info")
    u, obj = load("storage record", storage=True)
    _, keys = load("storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise EBVError(f"torch storage keys malformed: {excerpt(keys)}")
    arrays = {}
    for key in keys:
        if key not in u.records:
            raise EBVError(f"torch storage key {excerpt(key)} has no record")
        stype, numel = u.records[key]
        head = f.read(8)
        if len(head) != 8:
            raise EBVError(f"torch storage bytes truncated while reading size of storage {key} "
                           f"({len(head)} of 8 bytes)")
        (count,) = struct.unpack("<q", head)
        remaining = len(data) - f.tell()
        if count != numel or count < 0 or count * stype.dtype.itemsize > remaining:
            raise EBVError(f"torch storage {key}: {count} elements recorded, {numel} declared, "
                           f"{remaining} bytes left: file truncated or corrupt")
        arr = np.frombuffer(f.read(count * stype.dtype.itemsize), dtype=stype.dtype)
        if stype.name == "BFloat16Storage":  # bfloat16 = top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        arrays[key] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if not (isinstance(obj, tuple) and obj and obj[0] == "root"):
        raise EBVError("torch storage bytes hold no storage record")
    if obj[1] not in arrays:
        raise EBVError(f"torch storage {excerpt(obj[1])} has no data")
    return _TorchStorage(arrays[obj[1]])


ALLOWED_GLOBALS = {
    **{(m, n): fn for m in ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x / 2.x
       for n, fn in (("_reconstruct", _safe_reconstruct), ("scalar", _safe_scalar))},
    **{(m, "_frombuffer"): _safe_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DType,
    ("collections", "OrderedDict"): _ordered_dict, ("_codecs", "encode"): _latin1_bytes,
    **{("torch._utils", n): _rebuild_tensor for n in ("_rebuild_tensor_v2", "_rebuild_tensor")},
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): load_torch_legacy_storage,
}


def safe_load_pickle(data: bytes) -> Any:
    """The top-level object of ``data`` (a numpy array for numpy and torch EBV files), unpickled
    through the allow-list; containers are not walked (that could take 2^S steps)."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), ALLOWED_GLOBALS, len(data)).load()
    except EBVError:
        raise
    except MemoryError as exc:
        raise EBVError(f"pickle asks for more memory than available ({_why(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pickles raise anything
        raise EBVError(f"not a readable pickle ({_why(exc)})") from None
    if isinstance(obj, _ArrayState):
        if obj.array is None:
            raise EBVError("numpy array in the pickle was never filled (truncated or corrupt)")
        return obj.array
    return obj

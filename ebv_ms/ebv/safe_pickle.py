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

Cost bounded by the file's size S, whatever it holds (a file of S bytes is accepted or refused
in O(S) time and memory): the opcodes run on Python's own pure-Python unpickler (each opcode
consumes at least one byte) with these changes --

* BUILD only on the two stand-ins that need state (`_ArrayState`, `_DType`); anything else,
  e.g. ``__name__`` / ``__defaults__`` onto an allowed function, is refused;
* dict keys and set items must be plain scalars (str, bytes, int, float, bool, None): hashing
  a tuple walks it as a tree, and a memo of shared sub-tuples makes that tree 2^k nodes;
* declared lengths (BYTEARRAY8 allocates before reading) are checked against the file size;
* every call of an allowed global is charged the size of its arguments and its result against
  a budget of a few times S, so memo references cannot make the same bytes be copied or parsed
  again and again;
* at most 2^18 opcodes (EBV files have a few dozen), so the pure-Python speed (~1-5 us per
  opcode) stays about a second at worst;
* the result walk visits each object once (by id), and messages quote bounded excerpts
  (`excerpt`), never a full ``repr``.
"""
from __future__ import annotations

import io
import math
import pickle
import reprlib
import struct
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from .ebvset import EBVError

__all__ = ["UnsafePickleError", "safe_load_pickle", "load_torch_legacy_storage", "excerpt"]

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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxtuple, _REPR.maxlist, _REPR.maxdict = 3, 4, 4, 4
_REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 4
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40


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


_MAX_DIM = 1 << 62  # larger shapes / sizes are corrupt (and would make the products slow)


def _dims(shape, what: str) -> tuple:
    if not isinstance(shape, (tuple, list)) or len(shape) > 64 or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < _MAX_DIM for n in shape):
        raise EBVError(f"{what} {excerpt(shape)} malformed")
    return tuple(shape)


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
            raise UnsafePickleError(f"numpy dtype spec {excerpt(spec)} refused")
        if len(spec) > 8:  # numeric dtype codes are short ('f4', '<f8', 'float64' is 7)
            raise UnsafePickleError(f"numpy dtype {excerpt(spec)} refused (only numeric dtypes)")
        try:
            dt = np.dtype(spec)
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
        shape = _dims(shape, "numpy array shape")
        dt = dtype.dtype
        if len(raw) != math.prod(shape) * dt.itemsize:
            raise EBVError(f"numpy array data has {len(raw)} bytes, shape {shape} of {dt} needs "
                           f"{math.prod(shape) * dt.itemsize}: file truncated or corrupt")
        arr = np.frombuffer(bytes(raw), dtype=dt).reshape(shape, order="F" if fortran else "C")
        self.array = arr.astype(dt.newbyteorder("="), copy=True)


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
    state = _ArrayState()
    state.__setstate__((_dims(shape, "numpy array shape"), dtype, order == "F", buf))
    return state.array


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode(str, 'latin1')``: how protocols 0-2 store bytes objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with {type(text).__name__}, {excerpt(encoding)} refused")
    return text.encode("latin1")


def _resolve(root):
    """Replace finished `_ArrayState`s by their arrays (in lists, tuples, dict values).

    Each object is visited once, by id: a memo can make a structure of S bytes a DAG with 2^S
    paths, which a recursive walk (or ``repr``) would treat as a tree.
    """
    done: Dict[int, Any] = {}
    open_: set = set()
    stack = [root]
    while stack:
        obj = stack[-1]
        key = id(obj)
        if key in done:
            stack.pop()
            continue
        if isinstance(obj, _ArrayState):
            if obj.array is None:
                raise EBVError("numpy array in the pickle was never filled (truncated or corrupt)")
            done[key] = obj.array
            stack.pop()
            continue
        if not isinstance(obj, (list, tuple, dict)):
            done[key] = obj
            stack.pop()
            continue
        children = list(obj.values()) if isinstance(obj, dict) else obj
        if key not in open_:  # first visit: children first
            open_.add(key)
            for c in children:
                if id(c) in open_ and id(c) not in done:
                    raise EBVError("pickle holds a self-referencing structure, not an EBV matrix")
                if id(c) not in done:
                    stack.append(c)
            continue
        stack.pop()
        if isinstance(obj, dict):
            out = type(obj)((k, done[id(v)]) for k, v in obj.items())
        elif isinstance(obj, list):
            out = [done[id(c)] for c in obj]
        else:
            out = tuple(done[id(c)] for c in obj)
        done[key] = out
    return done[id(root)]


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


class _Budget:
    """Bytes the allowed globals may take in and build for one file: a few times its size."""

    __slots__ = ("size", "left")
    FACTOR = 8  # the official files use ~4: storage bytes parsed, copied, then viewed and copied

    def __init__(self, size: int):
        self.size = int(size)
        self.left = self.FACTOR * self.size + (1 << 20)

    def charge(self, obj) -> None:
        if isinstance(obj, (bytes, bytearray, str)):
            n = len(obj)
        elif isinstance(obj, np.ndarray):
            n = obj.nbytes
        elif isinstance(obj, _TorchStorage):
            n = obj.array.nbytes
        elif isinstance(obj, (tuple, list, dict)):
            n = len(obj)
        else:
            n = 1
        self.left -= n + 1
        if self.left < 0:
            raise EBVError(f"pickle of {self.size} bytes asks to build more than "
                           f"{self.FACTOR} x its size (the same data referenced again and again "
                           "through the memo): refused as corrupt or hostile")


class _Global:
    """An allowed global as the pickle sees it: charges its arguments and result to the budget.

    Per load, with slots and no ``__setstate__`` reachable from BUILD, so a file cannot leave
    state on the module's functions for the rest of the process.
    """

    __slots__ = ("_fn", "_budget")

    def __init__(self, fn, budget: _Budget):
        self._fn = fn
        self._budget = budget

    def __call__(self, *args, **kwargs):
        for a in args + tuple(kwargs.values()):
            self._budget.charge(a)
        out = self._fn(*args, **kwargs)
        self._budget.charge(out)
        return out

    def __reduce__(self):  # never re-pickled
        raise TypeError("internal stand-in")


_PLAIN_KEYS = (str, bytes, int, float, bool, type(None))


def _plain(keys, what: str) -> None:
    for k in keys:
        if type(k) not in _PLAIN_KEYS:
            raise UnsafePickleError(f"{what} of type {type(k).__name__} refused (EBV files use "
                                    "only str/number keys; hashing a nested tuple can take "
                                    "time exponential in the file size)")


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


class _RestrictedUnpickler(pickle._Unpickler):
    """Python's pure-Python unpickler, globals only from ``allowed``, no persistent ids,
    and the opcode changes listed in the module docstring (cost O(file size))."""

    dispatch = dict(_BASE_DISPATCH)

    def __init__(self, file, allowed: Dict[Tuple[str, str], Any], size: int,
                 budget: Optional[_Budget] = None):
        super().__init__(file)
        self._ops = 0
        self._size = int(size)
        self._budget = budget or _Budget(size)
        self._allowed = {k: v if isinstance(v, (_NDArrayClass, _TorchStorageType))
                         else _Global(v, self._budget) for k, v in allowed.items()}

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            what = f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) \
                else excerpt((module, name))
            if len(what) > 120:
                what = what[:117] + "..."
            raise UnsafePickleError(
                f"refused global '{what}': not needed by numpy/torch EBV files, and loading it "
                "could run arbitrary code") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refused persistent id {excerpt(pid)} outside a torch storage")

    # ---- opcodes whose cost or effect the stock unpickler does not bound
    def _load_build(self):
        inst = self.stack[-2]
        if type(inst) not in (_ArrayState, _DType):
            raise UnsafePickleError(f"BUILD (setting state) on {type(inst).__name__} refused: "
                                    "EBV files set state only on numpy arrays and dtypes")
        state = self.stack.pop()
        self._budget.charge(state)
        inst.__setstate__(state)
        if isinstance(inst, _ArrayState):
            self._budget.charge(inst.array)
            self._budget.charge(inst.array)  # the bytes() copy made on the way
    dispatch[pickle.BUILD[0]] = _load_build

    def _load_setitem(self):
        if not isinstance(self.stack[-3], dict):
            raise UnsafePickleError(f"SETITEM on {type(self.stack[-3]).__name__} refused")
        _plain(self.stack[-2:-1], "dict key")
        _BASE_DISPATCH[pickle.SETITEM[0]](self)
    dispatch[pickle.SETITEM[0]] = _load_setitem

    def _load_setitems(self):
        target = self.metastack[-1][-1] if self.metastack and self.metastack[-1] else None
        if not isinstance(target, dict):
            raise UnsafePickleError(f"SETITEMS on {type(target).__name__} refused")
        _plain(self.stack[0::2], "dict key")
        _BASE_DISPATCH[pickle.SETITEMS[0]](self)
    dispatch[pickle.SETITEMS[0]] = _load_setitems

    def _load_dict(self):
        _plain(self.stack[0::2], "dict key")
        _BASE_DISPATCH[pickle.DICT[0]](self)
    dispatch[pickle.DICT[0]] = _load_dict

    def _load_frozenset(self):
        _plain(self.stack, "set item")
        _BASE_DISPATCH[pickle.FROZENSET[0]](self)
    dispatch[pickle.FROZENSET[0]] = _load_frozenset

    def _load_additems(self):
        _plain(self.stack, "set item")
        _BASE_DISPATCH[pickle.ADDITEMS[0]](self)
    dispatch[pickle.ADDITEMS[0]] = _load_additems

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


# every opcode counted: the pure-Python unpickler costs ~1-5 us per opcode on this machine
_RestrictedUnpickler.dispatch = {k: _counted(f) for k, f in _RestrictedUnpickler.dispatch.items()}


class _TorchStorageUnpickler(_RestrictedUnpickler):
    """The storage record of torch's legacy format: only ``('storage', ...)`` persistent ids."""

    def __init__(self, file, size: int):
        super().__init__(file, {("torch", n): _TorchStorageType(n) for n in _TORCH_STORAGE_DTYPES},
                         size)
        self.records = {}

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"refused persistent id {excerpt(pid)} in torch storage bytes")
        storage_type, key, location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _TorchStorageType) or not isinstance(key, str) \
                or not isinstance(location, str):
            raise UnsafePickleError(f"malformed torch storage record {excerpt(pid)}")
        numel = _as_int(numel, "storage size")
        if key in self.records and self.records[key][:2] != (storage_type, numel):
            raise EBVError(f"torch storage {excerpt(key)} declared twice with different types/sizes")
        self.records[key] = (storage_type, numel, location)
        if view is not None:  # very old torch: a view (view_key, offset, view_size) of `key`
            if not (isinstance(view, tuple) and len(view) == 3):
                raise UnsafePickleError(f"malformed torch storage view {excerpt(view)}")
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
_NUMPY_GLOBALS[("collections", "OrderedDict")] = _ordered_dict
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
            u = unpickler_cls(f, len(data)) if unpickler_cls is _TorchStorageUnpickler \
                else unpickler_cls(f, {}, len(data))
            return u, u.load()
        except EBVError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt bytes raise anything
            raise EBVError(f"torch storage bytes corrupt ({what}): {_why(exc)}") from None

    _, magic = load(what="magic number")
    if magic != TORCH_LEGACY_MAGIC:
        raise EBVError(f"not torch legacy storage bytes (magic number {excerpt(magic)})")
    _, version = load(what="protocol version")
    if version != TORCH_LEGACY_PROTOCOL:
        raise EBVError(f"unsupported torch legacy protocol version {excerpt(version)}")
    load(what="sys info")  # torch writes counts and data little-endian whatever this says
    u, obj = load(_TorchStorageUnpickler, "storage record")
    _, keys = load(what="storage keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise EBVError(f"torch storage keys malformed: {excerpt(keys)}")
    remaining = len(data) - f.tell()
    arrays = {}
    for key in keys:
        if key not in u.records:
            raise EBVError(f"torch storage key {excerpt(key)} has no record")
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
        raise EBVError(f"torch storage {excerpt(obj[1])} has no data")
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
        return _resolve(_RestrictedUnpickler(io.BytesIO(data), ALLOWED_GLOBALS, len(data)).load())
    except EBVError:
        raise
    except MemoryError as exc:
        raise EBVError(f"pickle asks for more memory than available ({_why(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pickles raise anything
        raise EBVError(f"not a readable pickle ({_why(exc)})") from None

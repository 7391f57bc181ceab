"""EBV files: native/.npy/.pkl round trips, the authors' released files, safety, bad files."""
import os
import pickle
import struct

import numpy as np
import pytest

from ebv_ms.ebv import (EBVError, EBVSet, UnsafePickleError, load_ebv, pairwise_stats,
                        save_ebv)
from ebv_ms.ebv.safe_pickle import TORCH_LEGACY_MAGIC

# README of ../shared/official_ebv: (file, N, d, min angle, coherence, Welch, Ave. Del. Ang.)
OFFICIAL = [
    ("pytorch_eq_100_1000.pkl", 1000, 100, 82.24, 0.13504, 0.09492, 4.847),
    ("pytorch_eq_200_1000.pkl", 1000, 200, 85.41, 0.08003, 0.06328, 3.368),
    ("pytorch_eq_300_1000.pkl", 1000, 300, 86.67, 0.05803, 0.04833, 2.643),
    ("pytorch_eq_400_1000.pkl", 1000, 400, 87.48, 0.04402, 0.03875, 2.181),
    ("pytorch_eq_500_1000.pkl", 1000, 500, 87.99, 0.03502, 0.03164, 1.820),
    ("pytorch_eq_1000_1000.pkl", 1000, 1000, 89.98, 0.00040, 0.0, 0.010),
    ("mindspore_eq_1000_1000.pkl", 1000, 1000, 89.98, 0.00040, 0.0, 0.010),
    ("pytorch_eq_150_150.pkl", 150, 150, 89.89, 0.00200, 0.0, None),
    ("pytorch_eq_81_81.pkl", 81, 81, 89.88, 0.00205, 0.0, None),
]


# ----------------------------------------------------------------- building torch-like pickles
# Written opcode by opcode (torch is not installed): the same layout as the released files.

def _x(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def legacy_storage_bytes(arr, storage_type="FloatStorage", location="cuda:0", key="94301796263136",
                         sys_info=None, record=None):
    """torch's legacy save of one storage: magic, version, sys info, record, keys, raw data."""
    arr = np.ascontiguousarray(arr).ravel()
    sys_info = sys_info if sys_info is not None else pickle.dumps(
        {"protocol_version": 1001, "little_endian": True,
         "type_sizes": {"short": 2, "int": 4, "long": 4}}, 2)
    if record is None:
        record = (b"\x80\x02(" + _x("storage") + f"ctorch\n{storage_type}\n".encode() + _x(key)
                  + _x(location) + b"J" + struct.pack("<i", arr.size) + b"NtQ.")
    return (pickle.dumps(TORCH_LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + sys_info + record
            + pickle.dumps([key], 2) + struct.pack("<q", arr.size) + arr.tobytes())


def torch_tensor_pickle(inner: bytes, offset, size, stride) -> bytes:
    """pickle.dump of a tensor: _rebuild_tensor_v2(_load_from_bytes(inner), offset, size, ...)."""
    def tup(t):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in t) + b"t"
    return (b"\x80\x03ctorch._utils\n_rebuild_tensor_v2\n(ctorch.storage\n_load_from_bytes\n"
            + b"B" + struct.pack("<I", len(inner)) + inner + b"\x85R"
            + b"J" + struct.pack("<i", offset) + tup(size) + tup(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR.")


class _Evil:
    """Pickles as os.system('touch <path>'): must never run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


# ----------------------------------------------------------------- round trips

def _some_set():
    w = np.random.default_rng(3).standard_normal((12, 5))
    return EBVSet(w, alpha=0.5, method="official", seed=7, extra={"steps": 10, "note": "x"})


def test_native_round_trip_keeps_metadata_and_checksum(tmp_path):
    s = _some_set()
    p = save_ebv(s, tmp_path / "set.npz")
    t = load_ebv(p)
    assert np.array_equal(t.vectors, s.vectors) and t.vectors.dtype == np.float32
    assert (t.alpha, t.method, t.seed, t.extra) == (0.5, "official", 7, {"steps": 10, "note": "x"})
    assert t.checksum() == s.checksum()
    with np.load(p, allow_pickle=False) as z:   # documented layout, no pickle needed
        assert z["vectors"].shape == (12, 5) and z["metadata"].dtype == np.uint8


def test_npy_is_plain_float32_array(tmp_path):
    s = _some_set()
    save_ebv(s, tmp_path / "set.npy")
    raw = np.load(tmp_path / "set.npy", allow_pickle=False)
    assert raw.dtype == np.float32 and raw.shape == (12, 5)
    t = load_ebv(tmp_path / "set.npy")
    assert np.array_equal(t.vectors, s.vectors) and t.checksum() == s.checksum()


def test_pkl_written_as_numpy_array_and_read_back(tmp_path):
    s = _some_set()
    save_ebv(s, tmp_path / "eq_5_12.pkl")
    with open(tmp_path / "eq_5_12.pkl", "rb") as f:   # what the authors' code does
        assert np.array_equal(pickle.load(f), s.vectors)
    assert load_ebv(tmp_path / "eq_5_12.pkl").checksum() == s.checksum()


def test_unknown_extension_lists_supported(tmp_path):
    with pytest.raises(EBVError, match=r"\.txt.*\.npz, \.npy, \.pkl"):
        save_ebv(_some_set(), tmp_path / "set.txt")
    (tmp_path / "set.h5").write_bytes(b"x")
    with pytest.raises(EBVError, match=r"set\.h5.*supported"):
        load_ebv(tmp_path / "set.h5")


# ----------------------------------------------------------------- the authors' files

@pytest.mark.parametrize("name,n,d,min_ang,coh,welch,delta", OFFICIAL, ids=[o[0] for o in OFFICIAL])
def test_official_files_reproduce_readme(official_dir, name, n, d, min_ang, coh, welch, delta):
    s = load_ebv(official_dir / name)
    assert (s.num_classes, s.dim) == (n, d)
    st = pairwise_stats(s.vectors, block_size=512)
    assert round(st.min_angle_deg, 2) == pytest.approx(min_ang, abs=1e-9)
    assert st.coherence == pytest.approx(coh, abs=1e-5)
    assert st.welch_bound == pytest.approx(welch, abs=1e-5)
    if delta is not None:
        assert st.mean_delta_angle_deg == pytest.approx(delta, abs=0.005)


def test_both_1000_1000_files_load_identically(official_dir):
    a = load_ebv(official_dir / "pytorch_eq_1000_1000.pkl")
    b = load_ebv(official_dir / "mindspore_eq_1000_1000.pkl")
    assert a.method == "pytorch_pkl" and b.method == "numpy_pkl"
    assert a.checksum() == b.checksum()


def test_official_file_converts_to_native(official_dir, tmp_path):
    a = load_ebv(official_dir / "pytorch_eq_81_81.pkl")
    b = load_ebv(save_ebv(a, tmp_path / "eq_81_81.npz"))
    assert b.checksum() == a.checksum() and b.method == "pytorch_pkl"


def test_torch_layout_offset_strides_and_dtypes(tmp_path):
    store = np.arange(14, dtype=np.float64) + 1.0
    p = tmp_path / "t.pkl"
    # a transposed 3 x 4 view starting at element 2, in a DoubleStorage
    p.write_bytes(torch_tensor_pickle(legacy_storage_bytes(store, "DoubleStorage"), 2, (3, 4), (1, 3)))
    want = store[2:].reshape(4, 3).T
    got = load_ebv(p).vectors
    assert np.allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True))
    half = np.array([[1, 2], [3, 4]], dtype=np.float16)
    p.write_bytes(torch_tensor_pickle(legacy_storage_bytes(half, "HalfStorage", "cpu"), 0, (2, 2), (2, 1)))
    assert np.allclose(load_ebv(p).vectors[0], np.array([1, 2]) / np.sqrt(5), atol=1e-6)
    bf16 = np.array([0x3F80, 0x4000, 0x4040, 0x4080], dtype="<u2")   # 1, 2, 3, 4 in bfloat16
    p.write_bytes(torch_tensor_pickle(legacy_storage_bytes(bf16, "BFloat16Storage"), 0, (2, 2), (2, 1)))
    assert np.allclose(load_ebv(p).vectors[1], np.array([3, 4]) / 5.0, atol=1e-6)


def test_torch_view_outside_storage_is_refused(tmp_path):
    p = tmp_path / "t.pkl"
    p.write_bytes(torch_tensor_pickle(legacy_storage_bytes(np.ones(6, np.float32)), 0, (3, 4), (4, 1)))
    with pytest.raises(EBVError, match=r"t\.pkl.*truncated or corrupt"):
        load_ebv(p)


# ----------------------------------------------------------------- untrusted pickles

def test_pickle_calling_os_system_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*refused global '(posix|os|nt)\.system'"):
        load_ebv(p)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["sys_info", "record", "array_dtype"])
def test_nested_malicious_pickle_is_refused(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker), 2)
    p = tmp_path / "evil.pkl"
    if where == "sys_info":      # inside the torch storage bytes
        inner = legacy_storage_bytes(np.ones(4, np.float32), sys_info=evil)
        p.write_bytes(torch_tensor_pickle(inner, 0, (2, 2), (2, 1)))
    elif where == "record":      # the storage type of the persistent id is os.system(...)
        rec = (b"\x80\x02(" + _x("storage") + evil[2:-1] + _x("k") + _x("cpu")
               + b"J\x04\x00\x00\x00NtQ.")
        inner = legacy_storage_bytes(np.ones(4, np.float32), key="k", record=rec)
        p.write_bytes(torch_tensor_pickle(inner, 0, (2, 2), (2, 1)))
    else:                        # an object array whose element is the payload
        p.write_bytes(pickle.dumps(np.array([[_Evil(marker)]], dtype=object)))
    with pytest.raises(UnsafePickleError, match="refused"):
        load_ebv(p)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"),
                                         ("numpy", "load"), ("torch", "load")])
def test_other_globals_are_refused_by_name(tmp_path, module, name):
    p = tmp_path / "g.pkl"
    p.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x001\x85R.")
    with pytest.raises(UnsafePickleError, match=f"'{module}.{name}'"):
        load_ebv(p)


# ----------------------------------------------------------------- files that are not EBV sets

@pytest.mark.parametrize("arr,msg", [
    (np.ones(5, np.float32), "2-D"),
    (np.ones((2, 3, 4), np.float32), "2-D"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (np.array([[1.0, 0.0], [0.0, 0.0]]), "zero row"),
    (np.array([["a", "b"]]), "numeric"),
    (np.zeros((0, 4), np.float32), "empty"),
])
def test_bad_matrices_in_files_are_named(tmp_path, arr, msg):
    p = tmp_path / "bad.npy"
    np.save(p, arr)
    with pytest.raises(EBVError, match=msg) as ei:
        load_ebv(p)
    assert str(p) in str(ei.value)


def test_npz_matrix_not_2d_is_refused_by_the_set_after_its_metadata(tmp_path):
    """A native file whose vectors are not N x d: EBVSet names it (one check of the matrix), once
    the metadata is read; a file also damaged in its metadata is refused for that first."""
    p = save_ebv(_some_set(), tmp_path / "set.npz")
    with np.load(p, allow_pickle=False) as z:
        meta = z["metadata"]
    for i, arr in enumerate([np.ones(5, np.float32), np.ones((2, 3, 4), np.float32),
                             np.float32(1.0)]):
        bad = tmp_path / f"bad{i}.npz"
        np.savez(bad, vectors=arr, metadata=meta)
        with pytest.raises(EBVError, match=rf"^{bad}: not an EBV set: EBV matrix must be 2-D "
                                           rf"\(num_classes x dim\), got shape"):
            load_ebv(bad)
    newer = np.frombuffer(meta.tobytes().replace(b'"format_version": 1', b'"format_version": 2'),
                          np.uint8)
    np.savez(tmp_path / "newer.npz", vectors=np.ones(5, np.float32), metadata=newer)
    with pytest.raises(EBVError, match="written by a newer ebv-ms"):
        load_ebv(tmp_path / "newer.npz")


def test_nan_inf_rows_are_found_exactly_from_the_norms():
    """float32's largest value in 70,000 columns is a finite row (squares summed in float64 do
    not overflow); float64 past float32 is inf; float16 inf and NaN are found."""
    from ebv_ms.ebv.ebvset import validate_matrix
    big = np.full((3, 70_000), np.finfo(np.float32).max, np.float32)
    assert np.allclose(validate_matrix(big), 1 / np.sqrt(70_000))
    with np.errstate(over="ignore"):
        for w, count, first in [(np.array([[1.0, 0.0], [1.0, 1e300]]), 1, 1),
                                (np.array([[1, 0], [np.inf, 0], [0, np.nan]], np.float16), 2, 1)]:
            with pytest.raises(EBVError, match=rf"NaN/inf in {count} row\(s\), first row {first}"):
                validate_matrix(w)


def test_bad_file_contents(tmp_path, official_dir):
    cases = {
        "empty.npy": b"",
        "empty.pkl": b"",
        "garbage.npz": b"not a zip file at all",
        "garbage.npy": b"\x93NUMPY nonsense",
        "trunc.pkl": (official_dir / "pytorch_eq_81_81.pkl").read_bytes()[:5000],
        "trunc_np.pkl": (official_dir / "mindspore_eq_1000_1000.pkl").read_bytes()[:100000],
    }
    np.save(tmp_path / "trunc.npy", np.ones((100, 10), np.float32))
    cases["trunc.npy"] = (tmp_path / "trunc.npy").read_bytes()[:1000]
    np.save(tmp_path / "obj.npy", np.array([[1.0, None]], dtype=object), allow_pickle=True)
    cases["obj.npy"] = (tmp_path / "obj.npy").read_bytes()
    cases["dict.pkl"] = pickle.dumps({"w": [1.0, 2.0]})
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(EBVError) as ei:
            load_ebv(p)
        assert str(p) in str(ei.value), name
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_ebv(tmp_path / "missing.npy")


def test_native_file_tampering_is_detected(tmp_path):
    p = save_ebv(_some_set(), tmp_path / "set.npz")
    with np.load(p, allow_pickle=False) as z:
        vec, meta = z["vectors"].copy(), z["metadata"]
    vec[0, 0] += 0.25
    np.savez(tmp_path / "tampered.npz", vectors=vec, metadata=meta)
    with pytest.raises(EBVError, match="checksum mismatch"):
        load_ebv(tmp_path / "tampered.npz")
    np.savez(tmp_path / "other.npz", a=vec)
    with pytest.raises(EBVError, match="needs arrays 'vectors' and 'metadata'"):
        load_ebv(tmp_path / "other.npz")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_decoded_without_numpy_setstate(protocol):
    from ebv_ms.ebv.safe_pickle import safe_load_pickle
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 3)).astype(np.float32),
              np.asfortranarray(rng.standard_normal((3, 5))),
              rng.standard_normal((2, 6)).astype(">f4"),
              np.arange(6, dtype=np.int16).reshape(2, 3)]
    for a in arrays:
        b = safe_load_pickle(pickle.dumps(a, protocol=protocol))
        assert b.dtype == a.dtype.newbyteorder("=") and np.array_equal(a, b)
    assert safe_load_pickle(pickle.dumps(np.float32(0.25), protocol=protocol)) == np.float32(0.25)
    structured = np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])
    with pytest.raises(UnsafePickleError, match="refused"):
        safe_load_pickle(pickle.dumps(structured, protocol=protocol))

"""Hostile EBV files: cost bounded by the file's size, no state left behind, clear refusals.

Pickles are written opcode by opcode (protocol 2/4/5 opcodes). The blow-up cases run in one
subprocess with a timeout: before the fixes they ran for minutes (a 40-level memo of shared
tuples is 2^40 nodes to a tree walk, a hash or a repr).
"""
import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ebv_ms.ebv import EBVError, EBVSet, UnsafePickleError, load_ebv, save_ebv
from ebv_ms.ebv import safe_pickle

REPO = Path(__file__).resolve().parents[1]


def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _shared_tuples(levels=40, start=0):
    """t0 = (), t(k+1) = (t(k), t(k)): 2^levels leaves in ~5 bytes per level, memo slots start.."""
    out = b")q" + bytes([start]) + b"0"
    for k in range(levels):
        out += b"h" + bytes([start + k]) + b"h" + bytes([start + k]) + b"\x86q" + bytes([start + k + 1]) + b"0"
    return out + b"h" + bytes([start + levels])


def _proto(n=2):
    return b"\x80" + bytes([n])


NUMPY = "numpy.core.multiarray"

BLOWUPS = {
    # the result walk and error messages
    "top_level": _proto() + _shared_tuples() + b".",
    "in_list": _proto() + b"]" + _shared_tuples() + b"a.",
    "dict_value": _proto() + b"}" + b"U\x01k" + _shared_tuples() + b"s.",
    # hashing it
    "dict_key": _proto() + b"}" + _shared_tuples() + b"Ns.",
    "set_item": _proto(4) + b"\x8f(" + _shared_tuples() + b"\x90.",
    "frozenset": _proto(4) + b"(" + _shared_tuples() + b"\x91.",
    # quoted in the refusal of an allowed global
    "dtype_arg": _proto() + _global("numpy", "dtype") + _shared_tuples(start=1) + b"\x85R.",
    "reconstruct_args": _proto() + _global(NUMPY, "_reconstruct") + _global("numpy", "ndarray")
    + _shared_tuples(start=1) + b"U\x01b\x87R.",
    "torch_size": _proto() + _global("torch._utils", "_rebuild_tensor_v2")
    + b"(NK\x00" + _shared_tuples(start=1) + b"h\x01\x89tR.",
    "refused_global_arg": _proto() + _global("os", "system") + _shared_tuples(start=1) + b"\x85R.",
    # deep nesting instead of sharing
    "deep_lists": _proto() + b"]" * 200_000 + b"a" * 199_999 + b".",
    "deep_tuples": _proto() + b"(" * 100_000 + b")" + b"t" * 100_000 + b".",
}


def _run_isolated(files, timeout=90):
    code = ("import json, sys, time\n"
            "from ebv_ms.ebv import load_ebv\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    t = time.perf_counter()\n"
            "    try:\n"
            "        load_ebv(p); r = 'accepted'\n"
            "    except Exception as e:\n"
            "        r = type(e).__name__ + ': ' + str(e)\n"
            "    out[p] = [r, time.perf_counter() - t]\n"
            "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code, *map(str, files)], cwd=REPO,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_shared_and_deep_structures_cost_linear_time_and_bounded_messages(tmp_path):
    files = {}
    for name, data in BLOWUPS.items():
        assert len(data) < 1024 or name.startswith("deep"), name
        files[name] = tmp_path / f"{name}.pkl"
        files[name].write_bytes(data)
    out = _run_isolated(files.values())
    for name, p in files.items():
        result, seconds = out[str(p)]
        assert result.startswith(("EBVError", "UnsafePickleError")), (name, result)
        assert str(p) in result and len(result) < 600, (name, len(result), result[:300])
        assert seconds < 10, (name, seconds)
    assert "refused global 'os.system'" in out[str(files["refused_global_arg"])][0]
    for name in ("dict_key", "set_item", "frozenset"):
        assert "of type tuple refused" in out[str(files[name])][0], name


class _SharedState:
    """Pickles as ``_reconstruct(ndarray, (0,), b'b')`` + BUILD with one shared state tuple."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state)


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def test_memo_references_cannot_multiply_the_data(tmp_path):
    # 256 KB of matrix data, referenced from 4,000 arrays (1 GB before the fix) in a 300 KB file
    state = np.ones((256, 256), np.float32).__reduce__()[2]
    p = tmp_path / "copies.pkl"
    p.write_bytes(pickle.dumps([_SharedState(state)] * 1 + [_SharedState(state) for _ in range(4000)], 4))
    assert p.stat().st_size < 400_000
    with pytest.raises(EBVError, match="more than 8 x its size"):
        load_ebv(p)


@pytest.mark.parametrize("what", ["load_from_bytes", "rebuild_tensor"])
def test_torch_storage_referenced_again_and_again_is_refused(tmp_path, what):
    from test_files import legacy_storage_bytes
    inner = legacy_storage_bytes(np.ones(64 * 1024, np.float32))       # 256 KB of data
    head = (_proto(3) + b"]q\x00" + _global("torch.storage", "_load_from_bytes") + b"q\x01"
            + b"B" + struct.pack("<I", len(inner)) + inner + b"q\x02\x85Rq\x03")
    if what == "load_from_bytes":   # parse the same bytes 4,000 times
        body = b"a" + b"h\x01h\x02\x85Ra" * 4000
    else:                           # copy the same storage into 4,000 tensors
        head += b"a" + _global("torch._utils", "_rebuild_tensor_v2") + b"q\x040"
        body = b"h\x04(h\x03K\x00J\x00\x00\x01\x00\x85K\x01\x85\x89tRa" * 4000
    p = tmp_path / "t.pkl"
    p.write_bytes(head + body + b".")
    with pytest.raises(EBVError, match="more than 8 x its size"):
        load_ebv(p)


def test_opcode_count_is_bounded():
    for body in (b"N0" * 150_000, b"]" * 300_000):   # 300 KB of cheap opcodes, of empty lists
        with pytest.raises(EBVError, match="opcodes"):
            safe_pickle.safe_load_pickle(_proto() + body + b"N.")


def test_declared_sizes_beyond_the_file_are_refused_before_allocating():
    for op in (b"\x96", b"\x8e", b"\x8d"):   # BYTEARRAY8, BINBYTES8, BINUNICODE8 of 2^40 bytes
        data = _proto(5) + op + struct.pack("<Q", 1 << 40) + b"x" * 16 + b"."
        with pytest.raises(EBVError) as ei:
            safe_pickle.safe_load_pickle(data)
        assert "MemoryError" not in str(ei.value)


ALLOWED = [("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"), ("numpy", "ndarray"),
           ("collections", "OrderedDict"), ("_codecs", "encode"), ("numpy.core.multiarray", "scalar"),
           ("torch._utils", "_rebuild_tensor_v2"), ("torch.storage", "_load_from_bytes")]


@pytest.mark.parametrize("module,name", ALLOWED)
@pytest.mark.parametrize("form", ["dict", "slots"])
def test_build_on_allowed_globals_is_refused_and_leaves_no_state(module, name, form):
    before = {k: (getattr(v, "__name__", None), getattr(v, "__defaults__", None),
                  dict(getattr(v, "__dict__", {})))
              for k, v in safe_pickle.ALLOWED_GLOBALS.items()}
    state = b"}(U\x08__name__U\x05pwnedU\x0c__defaults__K\x01\x85U\x03pwnK\x01u"
    if form == "slots":
        state = b"N" + state + b"\x86"
    data = _proto() + _global(module, name) + state + b"b."
    with pytest.raises(UnsafePickleError, match="BUILD"):
        safe_pickle.safe_load_pickle(data)
    after = {k: (getattr(v, "__name__", None), getattr(v, "__defaults__", None),
                 dict(getattr(v, "__dict__", {})))
             for k, v in safe_pickle.ALLOWED_GLOBALS.items()}
    assert after == before


def test_build_on_a_finished_array_is_refused():
    # numpy's own __setstate__ must never see file data, also not on an array already built
    data = pickle.dumps(np.ones((2, 2), np.float32), 5)[:-1] + b"Nb."   # _frombuffer, then BUILD
    with pytest.raises(UnsafePickleError, match="BUILD"):
        safe_pickle.safe_load_pickle(data)


# ----------------------------------------------------------------- .npy / .npz headers

def _npy_bytes(header: dict, data: bytes = b"", raw_header: bytes = None) -> bytes:
    import io
    f = io.BytesIO()
    if raw_header is None:
        np.lib.format.write_array_header_1_0(f, header)
    else:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw_header)) + raw_header)
    return f.getvalue() + data


HUGE = {"descr": "<f4", "fortran_order": False, "shape": (10 ** 6, 10 ** 6)}
SMALL = {"descr": "<f4", "fortran_order": False, "shape": (10, 10)}
GARBLED = [b"{'descr': '<f4', 'fortran_order': False, 'shape': (((((  \n",
           b"\xff\xfe garbage \x00\n", b"{'descr': 'O', 'fortran_order': False, 'shape': (2,), }\n",
           b"{'descr': '<f4', 'fortran_order': False, 'shape': (-5, 3), }     \n"]


def _write_npz(p, members: dict, compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(p, "w", compress) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _meta_npy(meta: dict) -> bytes:
    import io
    f = io.BytesIO()
    np.save(f, np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return f.getvalue()


@pytest.mark.parametrize("ext", [".npy", ".npz", ".npz-deflated"])
def test_npy_headers_declaring_more_or_less_than_the_file_are_refused(tmp_path, ext):
    ok = save_ebv(EBVSet(np.eye(10, dtype=np.float32)), tmp_path / "ok.npz")
    with zipfile.ZipFile(ok) as z:
        meta = z.read("metadata.npy")
    cases = [_npy_bytes(HUGE, b"\0" * 400), _npy_bytes(SMALL, b"\0" * 399),
             _npy_bytes(SMALL, b"\0" * 401)] + [_npy_bytes({}, b"\0" * 64, g) for g in GARBLED]
    for k, data in enumerate(cases):
        p = tmp_path / f"case{k}{ext[:4]}"
        if ext == ".npy":
            p.write_bytes(data)
        else:
            _write_npz(p, {"vectors.npy": data, "metadata.npy": meta},
                       zipfile.ZIP_DEFLATED if "deflated" in ext else zipfile.ZIP_STORED)
        with pytest.raises(EBVError) as ei:
            load_ebv(p)
        msg = str(ei.value)
        assert str(p) in msg and ("declares" in msg or "header is not readable" in msg
                                  or "object array" in msg), (k, msg)
        assert len(msg) < 500


def test_npz_member_whose_directory_lies_about_its_size(tmp_path):
    p = save_ebv(EBVSet(np.eye(10, dtype=np.float32)), tmp_path / "s.npz")
    data = bytearray(p.read_bytes())
    # uncompressed size of 'vectors.npy' in the central directory -> 2^32 - 2
    for pos in [i for i in range(len(data)) if data[i:i + 4] == b"PK\x01\x02"]:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + name_len] == b"vectors.npy":
            struct.pack_into("<L", data, pos + 24, 0xFFFFFFFE)
    p.write_bytes(bytes(data))
    with pytest.raises(EBVError, match="declares"):
        load_ebv(p)


@pytest.mark.parametrize("deflated", [False, True])
@pytest.mark.parametrize("field,offset,value", [
    ("flags", 8, 0x0001), ("flags", 8, 0x0020), ("flags", 8, 0x0040),   # encrypted, patched, strong
    ("version needed", 6, 0x009C), ("method", 10, 93)])
def test_npz_member_with_a_zip_feature_zipfile_cannot_read_is_refused(tmp_path, deflated, field,
                                                                     offset, value):
    """zipfile signals these with RuntimeError / NotImplementedError: each must be one EBVError."""
    p = save_ebv(EBVSet(np.eye(10, dtype=np.float32)), tmp_path / "s.npz")
    if deflated:
        with zipfile.ZipFile(p) as z:
            members = {n: z.read(n) for n in z.namelist()}
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            for n, b in members.items():
                z.writestr(n, b)
    data = bytearray(p.read_bytes())
    for name in (b"metadata.npy", b"vectors.npy"):
        edited = bytearray(data)
        for pos in [i for i in range(len(edited)) if edited[i:i + 4] == b"PK\x01\x02"]:
            name_len = struct.unpack_from("<H", edited, pos + 28)[0]
            if edited[pos + 46:pos + 46 + name_len] == name:
                struct.pack_into("<H", edited, pos + offset, value)
        p.write_bytes(bytes(edited))
        with pytest.raises(EBVError, match="s.npz"):
            load_ebv(p)


@pytest.mark.parametrize("edit,msg", [
    (lambda m: m.pop("checksum"), "no checksum"),
    (lambda m: m.update(checksum=None), "no checksum"),
    (lambda m: m.update(alpha="abc"), "'alpha' must be"),
    (lambda m: m.update(alpha=[0.1]), "'alpha' must be"),
    (lambda m: m.update(method=[1]), "'method' must be"),
    (lambda m: m.update(seed="7"), "'seed' must be"),
    (lambda m: m.update(seed=True), "'seed' must be"),
    (lambda m: m.update(num_classes="10"), "'num_classes' must be"),
    (lambda m: m.update(checksum=12), "'checksum' must be"),
    (lambda m: m.update(extra=[1]), "'extra' must be"),
    (lambda m: m.update(format_version="1"), "format_version"),
])
def test_native_metadata_of_the_wrong_kind_is_refused(tmp_path, edit, msg):
    p = save_ebv(EBVSet(np.eye(10, dtype=np.float32), alpha=0.1, seed=1), tmp_path / "s.npz")
    with zipfile.ZipFile(p) as z:
        vec, meta = z.read("vectors.npy"), json.loads(np.load(p)["metadata"].tobytes())
    edit(meta)
    _write_npz(p, {"vectors.npy": vec, "metadata.npy": _meta_npy(meta)})
    with pytest.raises(EBVError, match=msg):
        load_ebv(p)


@pytest.mark.parametrize("alpha", [10 ** 20, -10 ** 400, 10 ** 400],
                         ids=["1e20", "-1e400", "1e400"])
def test_native_metadata_alpha_integer_beyond_int64_is_refused_as_the_others(tmp_path, alpha):
    """np.isfinite raised a bare TypeError (no file name) on integers beyond int64."""
    p = save_ebv(EBVSet(np.eye(10, dtype=np.float32), alpha=0.1, seed=1), tmp_path / "s.npz")
    with zipfile.ZipFile(p) as z:
        vec, meta = z.read("vectors.npy"), json.loads(np.load(p)["metadata"].tobytes())
    meta["alpha"] = alpha
    _write_npz(p, {"vectors.npy": vec, "metadata.npy": _meta_npy(meta)})
    with pytest.raises(EBVError, match="s.npz: metadata key 'alpha' must be null or a number"):
        load_ebv(p)


def test_native_metadata_round_trip_still_loads(tmp_path):
    ebv = EBVSet(np.eye(10, dtype=np.float32)[:, ::-1].copy(order="F"), alpha=0.1, seed=1)
    b = load_ebv(save_ebv(ebv, tmp_path / "s.npz"))
    assert np.array_equal(b.vectors, ebv.vectors) and b.alpha == 0.1 and b.seed == 1


@pytest.mark.parametrize("w,msg", [
    (np.repeat(np.eye(4, dtype=np.float32), 2, axis=0), "rows 0 and 1 are identical"),
    (np.vstack([np.eye(6, dtype=np.float32), np.eye(6, dtype=np.float32)[3:4]]), "rows 3 and 6"),
    (np.array([[1.0], [-1.0], [2.0]], np.float32), "d=1"),
])
@pytest.mark.parametrize("ext", [".npz", ".npy", ".pkl"])
def test_degenerate_sets_load_with_a_warning(tmp_path, caplog, w, msg, ext):
    p = save_ebv(EBVSet(w), tmp_path / f"d{ext}")
    with caplog.at_level("WARNING"):
        load_ebv(p)
    assert msg in caplog.text and str(p) in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_ebv(save_ebv(EBVSet(np.eye(8, dtype=np.float32)), tmp_path / f"ok{ext}"))
    assert "degenerate" not in caplog.text

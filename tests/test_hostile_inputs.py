"""Hostile data inputs (issue 17 §3-4): files that are no files, zip bombs, crafted zip64 sizes,
forged names and non-ASCII labels. Each ends as a skipped and counted sample or one error line,
within bounded time and memory; memory is measured in a fresh process."""
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from conftest import ROOT, run_script
from ebv_ms.data import LayoutError
from ebv_ms.data.dataset import open_split
from ebv_ms.data.layouts import parse_list
from ebv_ms.tools.make_synthetic import write_zip
from tagged_images import flat_jpeg
from ebv_ms.data.zip_index import ArchiveError

GIB = 1 << 30


def _probe(code: str, timeout: int = 120) -> dict:
    """Run ``code`` in a fresh Python (this checkout first on the path); it sets ``out`` (a dict),
    returned with the process's peak RSS in MB and exit status."""
    wrapped = ("import json, resource, sys\nfrom memstat import status_mb\nout = {}\n" + code +
               "\nout['peak_mb'] = status_mb('VmHWM')\n"
               "print('PROBE' + json.dumps(out))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + str(ROOT / "tests"))
    r = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=str(ROOT))
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBE")]
    assert r.returncode == 0 and lines, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return json.loads(lines[-1][5:])


class _Unblocker:
    """A FIFO at ``path``; if a reader is still blocked on it after ``patience`` s, a writer
    opens and closes it so the (old, blocking) reader returns and the test can fail cleanly."""

    def __init__(self, path, patience=15.0):
        self.path, self.patience = str(path), patience
        os.mkfifo(self.path)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.wait(self.patience):
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader blocked on it
                pass

    def close(self):
        self.done.set()


def _jpeg(k):
    return flat_jpeg(k, 16)


def _good_zip_members(n=6):
    return {f"d/train/c{i % 2}/{i}.jpg": _jpeg(i) for i in range(n)}


# ----------------------------------------------------------------------------- FIFOs, devices
def test_a_fifo_as_data_path_or_list_file_is_refused_at_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0.jpg").write_bytes(_jpeg(0))
    fifo = _Unblocker(tmp_path / "data.zip")
    lst = _Unblocker(tmp_path / "train.txt")
    try:
        t = time.perf_counter()
        with pytest.raises(ArchiveError, match="not a regular file"):
            open_split({"path": fifo.path}, "train")
        with pytest.raises(LayoutError, match="train.txt.*not a regular file"):
            open_split({"path": str(tmp_path), "split_lists": {"train": "train.txt"}}, "train")
        assert time.perf_counter() - t < 10
    finally:
        fifo.close()
        lst.close()


@pytest.mark.slow
def test_fifos_and_devices_among_images_are_skipped_and_counted(tmp_path):
    """predict.py's folder walk lists every *.jpg: a FIFO must not block it, a symlink to
    /dev/zero must not be read without end (it was, to a MemoryError at 6.4 GB)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        (folder / f"good{i}.jpg").write_bytes(_jpeg(i))
    os.mkfifo(folder / "b.jpg")
    os.symlink("/dev/zero", folder / "z.jpg")
    code = f"""
import threading, os
from ebv_ms.deploy.predicting import collect_images
from ebv_ms.data.readers import BadMember
il = collect_images([{str(folder)!r}])[0]
for i, name in enumerate(il.names):
    try:
        il.source.load(i, decode=False)
        out[os.path.basename(name)] = ''
    except BadMember as exc:
        out[os.path.basename(name)] = str(exc)
"""
    # the address-space limit keeps the old unbounded read from taking the machine's memory
    out = _probe("resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n" + code,
                 timeout=60)
    assert out.pop("peak_mb") < 1500
    assert {k: v for k, v in out.items() if v} == {"b.jpg": "not a regular file (a FIFO, device or socket)",
                                                  "z.jpg": "not a regular file (a FIFO, device or socket)"}
    assert sorted(out) == ["b.jpg", "good0.jpg", "good1.jpg", "good2.jpg", "z.jpg"]


def test_image_files_over_the_byte_cap_are_bad_samples(tmp_path):
    big = tmp_path / "d" / "train" / "c0" / "big.jpg"
    for i in range(4):
        p = tmp_path / "d" / "train" / f"c{i % 2}" / f"{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_jpeg(i))
    with open(big, "wb") as f:  # sparse: a real JPEG start, then 100 MB of nothing
        f.write(_jpeg(0))
        f.truncate(100 << 20)
    src = open_split({"path": str(tmp_path / "d"), "max_image_bytes": 1 << 20}, "train").source
    reasons = {src.name(i): src.check(i) for i in range(len(src))}
    assert reasons.pop("c0/big.jpg").startswith(f"file is {100 << 20} bytes, more than data.max_image_bytes = {1 << 20}")
    assert set(reasons.values()) == {""}


# ----------------------------------------------------------------------------- zip bombs
def _rewrite_directory(data: bytes, edits: dict) -> bytes:
    """The archive with some central-directory entries changed: ``edits[name]`` sets ``usz``,
    ``csz`` or ``hoff``; values of 2^32 - 1 or more go into a zip64 extra field, as a crafted
    archive would declare them."""
    eocd = data.rfind(b"PK\x05\x06")
    (_, _d, _cd, n_disk, n, cd_size, cd_off, _c) = struct.unpack_from("<4s4H2LH", data, eocd)
    cd, p, out = data[cd_off:cd_off + cd_size], 0, []
    fmt = struct.Struct("<4s4B4HL2L5H2L")
    for _ in range(n):
        f = list(fmt.unpack_from(cd, p))
        nlen, elen, clen = f[12], f[13], f[14]
        name = cd[p + 46:p + 46 + nlen]
        extra, comment = cd[p + 46 + nlen:p + 46 + nlen + elen], cd[p + 46 + nlen + elen:p + 46 + nlen + elen + clen]
        e = edits.get(name.decode())
        if e:
            z64 = b""
            for field, k in (("usz", 11), ("csz", 10), ("hoff", 18)):  # zip64 order: usz, csz, hoff
                if field in e:
                    if e[field] >= 0xFFFFFFFF:
                        f[k] = 0xFFFFFFFF
                        z64 += struct.pack("<Q", e[field])
                    else:
                        f[k] = e[field]
            if z64:
                extra = struct.pack("<2H", 1, len(z64)) + z64
            f[13] = len(extra)
        out.append(fmt.pack(*f) + name + extra + comment)
        p += 46 + nlen + elen + clen
    new_cd = b"".join(out)
    return (data[:cd_off] + new_cd
            + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n_disk, n, len(new_cd), cd_off, 0))


@pytest.fixture(scope="module")
def bomb_zip(tmp_path_factory):
    """Good JPEGs plus 'bomb.jpg' (a ~1 MB deflated member that inflates to 1 GiB, declared
    honestly) and 'liar.jpg' (the same stream, declaring 1,000 bytes)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in _good_zip_members().items():
            z.writestr(name, data)
        zero = bytes(1 << 20)
        for name in ("d/train/c0/bomb.jpg", "d/train/c1/liar.jpg"):
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as f:
                for _ in range(GIB >> 20):
                    f.write(zero)
    data = _rewrite_directory(path.read_bytes(), {"d/train/c1/liar.jpg": {"usz": 1000}})
    path.write_bytes(data)
    assert len(data) < 5 << 20
    return path


_TRAIN_ONE_EPOCH = """
from ebv_ms.data import create_dataset
ds, info = create_dataset({{"path": {path!r}, "image_size": 8}}, "train", 2, True, num_workers=2)
for _ in ds.create_dict_iterator(num_epochs=1, output_numpy=True):
    pass
out["bad"] = sorted([info.source.name(i) for i in info.bad.indices(0)])
out["report"] = info.bad_report(0)
"""


@pytest.mark.slow
def test_zip_bomb_members_are_refused_before_inflating(bomb_zip):
    out = _probe(_TRAIN_ONE_EPOCH.format(path=str(bomb_zip)))
    assert out["bad"] == ["d/train/c0/bomb.jpg", "d/train/c1/liar.jpg"]
    assert f"zip member is {GIB} bytes, more than data.max_image_bytes" in out["report"]
    assert "inflates to more than the declared 1000 bytes" in out["report"]
    base = _probe(_TRAIN_ONE_EPOCH.format(path=write_zip(str(bomb_zip.parent / "good.zip"),
                                                         _good_zip_members())))
    assert out["peak_mb"] < base["peak_mb"] + 150, (out["peak_mb"], base["peak_mb"])


# ----------------------------------------------------------------------------- zip64 fields
_ZIP64_EDITS = {
    "d/train/c0/u62.jpg": {"usz": 2 ** 62},              # deflated, declares 4 EiB inflated
    "d/train/c1/c40.jpg": {"csz": 2 ** 40, "usz": 2 ** 40},  # stored, 1 TiB "in" a small file
    "d/train/c0/umax.jpg": {"usz": 2 ** 64 - 1},
    "d/train/c1/hmax.jpg": {"hoff": 2 ** 64 - 1},
}


@pytest.fixture(scope="module")
def zip64_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("z64") / "z64.zip"
    members = _good_zip_members()
    members.update({name: _jpeg(3) for name in _ZIP64_EDITS})
    write_zip(str(path), members, deflate=["d/train/c0/u62.jpg", "d/train/c0/umax.jpg"])
    path.write_bytes(_rewrite_directory(path.read_bytes(), _ZIP64_EDITS))
    return path


@pytest.mark.slow
def test_crafted_zip64_sizes_are_skipped_and_counted_in_training(zip64_zip):
    out = _probe(_TRAIN_ONE_EPOCH.format(path=str(zip64_zip)))
    assert out["bad"] == sorted(_ZIP64_EDITS)
    assert out["peak_mb"] < 1500


@pytest.mark.slow
def test_crafted_zip64_sizes_in_inspect_and_predict_are_bad_samples(zip64_zip):
    code = f"""
import contextlib, io
from ebv_ms.tools import inspect_data as inspect_data
from ebv_ms.deploy.predicting import collect_images
from ebv_ms.data.readers import BadMember
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    out["inspect"] = inspect_data.main([{str(zip64_zip)!r}, "--verify"])
out["stdout"] = buf.getvalue()
il = collect_images([{str(zip64_zip)!r}])[0]
out["predict"] = {{}}
for i, name in enumerate(il.names):
    try:
        il.source.load(i, decode=False)
    except BadMember as exc:
        out["predict"][name.split(":")[-1]] = str(exc)
"""
    out = _probe(code)
    assert out["inspect"] == 1 and "6 good, 4 bad" in out["stdout"]
    assert sorted(out["predict"]) == sorted(_ZIP64_EDITS)
    assert "past the end" in out["predict"]["d/train/c1/c40.jpg"]
    assert "more than data.max_image_bytes" in out["predict"]["d/train/c0/u62.jpg"]


# ----------------------------------------------------------------------------- forged names
@pytest.mark.slow
def test_names_cannot_forge_or_colour_predict_output(demo_run, tmp_path):
    """A file or member name with a newline or an ANSI escape is escaped in text output; the
    JSON output keeps it exact. One image line per image, nothing else on stdout."""
    _, run = demo_run
    folder = tmp_path / "imgs"
    folder.mkdir()
    forged = "x.jpg: 7 100.0%\nevil"
    names = [f"{forged}.jpg", "\x1b[31mred.jpg", "plain.jpg", os.fsdecode(b"caf\xe9.jpg")]
    for i, n in enumerate(names):
        (folder / n).write_bytes(flat_jpeg(i, 32))
    z = write_zip(str(tmp_path / "m.zip"), {f"in/{forged}.jpg": flat_jpeg(1, 32),
                                            "in/\x1b]0;title\x07.png": b"not an image"})
    args = ["--ckpt", run / "last.ckpt", folder, z, "--no-progress"]
    text = run_script("predict.py", args, tmp_path)
    assert text.returncode == 0, text.stderr[-2000:]
    lines = text.stdout.splitlines()
    assert len(lines) == 5 and not any("\x1b" in s or "\x07" in s for s in (text.stdout, text.stderr))
    assert sum(ln.startswith(str(folder)) for ln in lines) == 4
    assert "x.jpg: 7 100.0%\\nevil.jpg: " in text.stdout and "\\x1b[31mred.jpg: " in text.stdout
    assert "caf\\udce9.jpg: " in text.stdout  # undecodable bytes of a file name
    assert "skipped " + z + ":in/\\x1b]0;title\\x07.png" in text.stderr
    js = run_script("predict.py", args + ["--json"], tmp_path)
    assert js.returncode == 0, js.stderr[-2000:]
    recs = [json.loads(ln) for ln in js.stdout.splitlines()]
    assert sorted(r["image"] for r in recs) == sorted(
        [str(folder / n) for n in names] + [f"{z}:in/{forged}.jpg", f"{z}:in/\x1b]0;title\x07.png"])


# ----------------------------------------------------------------------------- labels
@pytest.mark.parametrize("label", ["\u0663", "0_3", "\uff13", "1_000"])
def test_list_labels_are_ascii_decimal_only(label):
    text = f"a.jpg 1\nb.jpg {label}\nc.jpg 2\n"
    with pytest.raises(LayoutError, match="line 2: expected a path and an ASCII decimal integer"):
        parse_list(text, "train.txt")
    assert parse_list("a.jpg 1\nb.jpg 03\nc.jpg 2\n", "t")[1].tolist() == [1, 3, 2]

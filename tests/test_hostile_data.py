"""Hostile and broken datasets: bounded cost, no silent wrong label, clear refusals."""
import logging
import os
import struct
import time
import zipfile

import numpy as np
import pytest

from ebv_ms.data import LayoutError, create_dataset
from ebv_ms.tools import inspect_data as inspect_cli
from ebv_ms.data import dataset as dataset_mod
from ebv_ms.data.dataset import archive_layout, open_split
from ebv_ms.data.readers import ZipMemberReader
from ebv_ms.data.source import precheck, validate
from ebv_ms.tools.make_synthetic import encode, write_zip
from tagged_images import flat_jpeg
from ebv_ms.data.zip_index import ArchiveError, load_zip_index


def _bad_names(info, epoch):
    """The names of the samples the pipeline skipped in ``epoch``."""
    return [info.source.name(i) for i in info.bad.indices(epoch)]


def _jpeg(k, size=16):
    return flat_jpeg(k, size)


# ----------------------------------------------------------------------------- list labels
@pytest.mark.parametrize("label", [30_000_000, 2 ** 32, 2 ** 32 + 1, 2 ** 70])
@pytest.mark.parametrize("where", ["archive", "disk"])
def test_list_label_out_of_range_is_refused_with_its_line(tmp_path, label, where):
    lines = ["# path label", "a/0.jpg 0", "a/1.jpg 1", f"a/2.jpg {label}", "a/3.jpg 1"]
    members = {f"a/{i}.jpg": _jpeg(i) for i in range(4)}
    if where == "archive":
        members["train.txt"] = "\n".join(lines).encode()
        cfg = {"path": write_zip(str(tmp_path / "l.zip"), members)}
    else:
        for name, data in members.items():
            os.makedirs(tmp_path / "a", exist_ok=True)
            (tmp_path / name).write_bytes(data)
        (tmp_path / "train.txt").write_text("\n".join(lines))
        cfg = {"path": str(tmp_path), "split_lists": {"train": "train.txt"}}
    t = time.perf_counter()
    with pytest.raises(LayoutError, match=rf"train\.txt, line 4: label {label} outside"):
        open_split(cfg, "train")
    assert time.perf_counter() - t < 5
    assert inspect_cli.main([cfg["path"]] + (["--set", "split_lists={train: train.txt}"]
                                             if where == "disk" else [])) == 2


@pytest.mark.parametrize("where", ["archive", "disk"])
def test_list_labels_beyond_num_classes_are_refused_when_training(tmp_path, where):
    members = {f"a/{i}.jpg": _jpeg(i) for i in range(6)}
    text = "\n".join(f"a/{i}.jpg {i}" for i in range(6))
    if where == "archive":
        members["train.txt"] = text.encode()
        cfg = {"path": write_zip(str(tmp_path / "l.zip"), members)}
        open_split(cfg, "train")  # cached layout first: the check must not be skipped by it
    else:
        os.makedirs(tmp_path / "a")
        for name, data in members.items():
            (tmp_path / name).write_bytes(data)
        (tmp_path / "train.txt").write_text(text)
        cfg = {"path": str(tmp_path), "split_lists": {"train": "train.txt"}}
    with pytest.raises(LayoutError, match=r"line 5: label 4 outside \[0, 4\) = model.num_classes"):
        create_dataset(cfg, "train", 2, True, num_classes=4, num_workers=1)
    assert open_split(cfg, "train", num_classes=6).source.labels.tolist() == list(range(6))


# ----------------------------------------------------------------------------- zip end records
def _small_zip(tmp_path, n=6):
    return write_zip(str(tmp_path / "s.zip"), {f"d/train/c{i % 2}/{i}.jpg": _jpeg(i) for i in range(n)})


def _with_zip64_end(data: bytes, n_total: int) -> bytes:
    eocd = data[-22:]
    (_, _d, _cd, _nd, _nt, cd_size, cd_off, _c) = struct.unpack("<4s4H2LH", eocd)
    body = data[:-22]
    rec = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n_total, n_total, cd_size, cd_off)
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_off, 0)
    return body + rec + loc + end


@pytest.mark.parametrize("claim", [2 ** 40, 2 ** 63, 7])
def test_end_record_claiming_more_members_than_its_directory_holds(tmp_path, claim):
    p = _small_zip(tmp_path)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_with_zip64_end(open(p, "rb").read(), claim))
    with pytest.raises(ArchiveError, match="claims" if claim > 100 else "corrupt central directory"):
        load_zip_index(str(bad))
    bad.write_bytes(open(p, "rb").read()[:-22] + struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, 65535, 65535, *struct.unpack("<2L", open(p, "rb").read()[-10:-2]), 0))
    with pytest.raises(ArchiveError, match="claims"):
        load_zip_index(str(bad))


def test_directory_entry_running_past_the_directory(tmp_path):
    data = bytearray(open(_small_zip(tmp_path), "rb").read())
    cd = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, cd + 28, 0xFFFF)  # name length of the first entry
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="corrupt central directory"):
        load_zip_index(str(bad))


# ----------------------------------------------------------------------------- index cache
def test_archive_replaced_by_one_of_same_size_and_mtime_gets_a_new_index(tmp_path):
    p = str(tmp_path / "a.zip")
    a = {"d/train/c0/x.png": encode(np.zeros((4, 4, 3), np.uint8), ".png"),
         "d/train/c1/y.png": encode(np.full((9, 9, 3), 200, np.uint8), ".png")}
    write_zip(p, a)
    st = os.stat(p)
    ix = load_zip_index(p)
    assert ix.built and [ix.name(i) for i in range(2)] == list(a)
    write_zip(p, dict(reversed(list(a.items()))))          # same members, other order: same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(p).st_size == st.st_size and os.stat(p).st_mtime_ns == st.st_mtime_ns
    ix2 = load_zip_index(p)
    assert ix2.built
    r = ZipMemberReader(ix2)
    for i in range(2):
        assert bytes(r.read(i)) == a[ix2.name(i)]
    assert not load_zip_index(p).built                       # and the new index is reused


# ----------------------------------------------------------------------------- member names
def _patch_names(path, old_new):
    """Replace member names byte for byte (same length) and set the UTF-8 flag on them."""
    data = bytearray(open(path, "rb").read())
    for old, new in old_new.items():
        for sig, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
            pos = data.find(sig)
            while pos >= 0:
                nlen = struct.unpack_from("<H", data, pos + name_at - (4 if sig == b"PK\x03\x04" else 18))[0]
                if bytes(data[pos + name_at:pos + name_at + nlen]) == old:
                    data[pos + name_at:pos + name_at + nlen] = new
                    struct.pack_into("<H", data, pos + flag_at,
                                     struct.unpack_from("<H", data, pos + flag_at)[0] | 0x800)
                pos = data.find(sig, pos + 4)
    open(path, "wb").write(bytes(data))


def test_names_flagged_utf8_but_invalid_keep_their_classes_apart(tmp_path, caplog):
    members = {f"d/train/c{k}X/{i}.jpg": _jpeg(i) for k in "AB" for i in range(3)}
    p = write_zip(str(tmp_path / "u.zip"), members)
    _patch_names(p, {f"d/train/c{k}X/{i}.jpg".encode(): f"d/train/c{k}".encode() + bytes([0xFF])
                     + f"/{i}.jpg".encode() for k in "AB" for i in range(3)})
    with pytest.raises(UnicodeDecodeError):  # really flagged UTF-8, really not UTF-8
        zipfile.ZipFile(p)
    with caplog.at_level(logging.WARNING):
        _, layout = archive_layout(p, {})
    assert len(layout.class_names) == 2 and len(set(layout.class_names)) == 2
    assert "not valid UTF-8" in caplog.text
    assert np.bincount(layout.split("train").labels).tolist() == [3, 3]


@pytest.mark.parametrize("name", ["d/train/../0.jpg", "d/train/c1/../c0/0.jpg", "d/train/./0.jpg",
                                  "d/train//0.jpg", "/d/train/c0/0.jpg", "d/train/c0\\0.jpg"])
def test_dot_dot_and_empty_components_are_refused(tmp_path, name):
    members = {f"d/train/c{k}/{i}.jpg": _jpeg(k) for k in range(2) for i in range(2)}
    members[name] = _jpeg(0)
    p = write_zip(str(tmp_path / "dd.zip"), members)
    with pytest.raises(LayoutError, match="remove or rename that member"):
        archive_layout(p, {})


@pytest.mark.parametrize("folder", ["/", "//", "/etc", "..", "../x", "d/../../x", "./d/train", "d//train"])
def test_split_dirs_outside_the_data_are_refused_before_any_walk(tmp_path, folder, monkeypatch):
    """data.split_dirs '/' walked the filesystem from its root; archive and folder refuse alike."""
    members = {f"d/train/c{k}/{i}.jpg": _jpeg(k) for k in range(2) for i in range(2)}
    for name, data in members.items():
        os.makedirs(tmp_path / "disk" / os.path.dirname(name), exist_ok=True)
        (tmp_path / "disk" / name).write_bytes(data)
    zipped = write_zip(str(tmp_path / "s.zip"), members)
    monkeypatch.setattr(os, "scandir", lambda *a: pytest.fail("walked"))
    for path in (str(tmp_path / "disk"), zipped):
        with pytest.raises(LayoutError, match=r"data\.split_dirs\.val = .* inside data\.path"):
            open_split({"path": path, "split_dirs": {"train": "d/train", "val": folder}}, "train")
    monkeypatch.undo()
    for path in (str(tmp_path / "disk"), zipped):  # a relative folder, with a trailing '/': fine
        assert len(open_split({"path": path, "split_dirs": {"train": "d/train/"}}, "train").source) == 4


def test_inspect_warns_the_same_with_the_index_cached(tmp_path, caplog, monkeypatch):
    """The warnings of indexing and layout detection went out only on the run that built the
    index: the next run read the cached layout silently."""
    members = {f"d/{s}/c{k}X/{i}.jpg": _jpeg(i) for s in ("train", "val") for k in "AB" for i in range(2)}
    members["d/train/cE/"] = b""  # an empty class folder
    members["d/train.txt"] = b"no list\n"  # ignored as a list file
    p = write_zip(str(tmp_path / "w.zip"), members)
    _patch_names(p, {b"d/train/cAX/0.jpg": b"d/train/cA\xff/0.jpg"})  # flagged UTF-8, is not
    runs = []
    for _ in range(3):
        caplog.clear()
        monkeypatch.setattr(dataset_mod, "_WARNED", set(), raising=False)  # as in a new process
        with caplog.at_level(logging.WARNING):
            assert inspect_cli.main([p]) == 0
        runs.append([(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING])
    assert [len(r) for r in runs] == [5, 5, 5] and runs[0] == runs[1] == runs[2]
    for k, text in enumerate(["not valid UTF-8", "ignoring d/train.txt", "have no images",
                              "no images in any split", "different class folders"]):
        assert text in runs[0][k][1]


# ----------------------------------------------------------------------------- empty classes
def test_empty_class_folder_keeps_its_index_with_a_warning(tmp_path, caplog):
    members = {f"d/{s}/c{k}/{i}.jpg": _jpeg(k) for s in ("train", "val") for k in (0, 2, 3)
               for i in range(2)}
    members["d/train/c1/"] = b""           # an empty folder, as zip tools store it
    members["d/val/c1/README.txt"] = b"no images here"
    p = write_zip(str(tmp_path / "e.zip"), members)
    with caplog.at_level(logging.WARNING):
        sp = open_split({"path": p}, "train")
    assert sp.class_names == ["c0", "c1", "c2", "c3"]
    assert sorted(set(sp.source.labels.tolist())) == [0, 2, 3]
    assert "c1" in caplog.text and "no images" in caplog.text
    # on disk
    root = tmp_path / "disk"
    for name, data in members.items():
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        if not name.endswith("/"):
            (root / name).write_bytes(data)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        sp = open_split({"path": str(root / "d")}, "train")
    assert sp.class_names == ["c0", "c1", "c2", "c3"] and "c1" in caplog.text


def test_expected_class_list_fixes_indices(tmp_path, caplog):
    members = {f"d/train/c{k}/{i}.jpg": _jpeg(k) for k in (0, 2) for i in range(2)}
    p = write_zip(str(tmp_path / "x.zip"), members)
    with caplog.at_level(logging.WARNING):
        ds, info = create_dataset({"path": p}, "train", 2, False, num_workers=1,
                                  class_names=["c0", "c1", "c2"])
    assert info.class_names == ["c0", "c1", "c2"] and "c1" in caplog.text
    labels = sorted(int(y) for b in ds.create_dict_iterator(num_epochs=1, output_numpy=True)
                    for y in b["label"])
    assert labels == [0, 0, 2, 2]
    with pytest.raises(LayoutError, match="not in the expected class list"):
        open_split({"path": p}, "train", class_names=["c0", "c1"])


# ----------------------------------------------------------------------------- pixel cap
def _png_declaring(w, h):
    import zlib
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    idat = zlib.compress(b"\0" * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _jpeg_declaring(w, h):
    b = bytearray(_jpeg(1))
    sof = b.find(b"\xff\xc0")
    struct.pack_into(">HH", b, sof + 5, h, w)
    return bytes(b)


def test_declared_pixel_count_is_capped_before_decoding():
    for data in (_png_declaring(20000, 20000), _jpeg_declaring(20000, 20000)):
        assert "more than data.max_image_pixels" in precheck(data)
        assert "more than data.max_image_pixels" in validate(data)
    assert "more than data.max_image_pixels = 1000" in precheck(_jpeg(1, 40), 1000)
    assert precheck(_jpeg(1, 40), 0) == "" and precheck(_jpeg(1, 30), 1000) == ""


def test_images_over_the_cap_are_bad_samples_in_training_and_verify(tmp_path, capsys):
    members = {f"d/train/c{i % 2}/{i:02d}.jpg": _jpeg(i % 2, 40 if i in (3, 8) else 16)
               for i in range(12)}
    members["d/train/c0/99.png"] = _png_declaring(20000, 20000)
    p = write_zip(str(tmp_path / "cap.zip"), members)
    cfg = {"path": p, "image_size": 8, "max_image_pixels": 1000}
    ds, info = create_dataset(cfg, "train", 13, False, num_workers=1)
    for _ in ds.create_dict_iterator(num_epochs=1, output_numpy=True):
        pass
    assert sorted(_bad_names(info, 0)) == ["d/train/c0/08.jpg", "d/train/c0/99.png", "d/train/c1/03.jpg"]
    assert "max_image_pixels" in info.bad_report(0)
    assert inspect_cli.main([p, "--verify", "--set", "max_image_pixels=1000"]) == 1
    out = capsys.readouterr().out
    assert "10 good, 3 bad" in out and "99.png" in out


def test_with_no_pixel_cap_opencvs_own_limit_is_a_bad_sample_not_a_crash(tmp_path, capsys):
    """data.max_image_pixels: 0 leaves OpenCV's own cap (2^30 pixels), which it enforces by raising
    cv2.error, not by returning None: that image is skipped and counted like any other."""
    huge = _png_declaring(40000, 40000)                    # 1.6e9 pixels > 2^30
    assert "OpenCV refuses to decode it" in validate(huge, 0)
    members = {f"d/train/c{i % 2}/{i:02d}.jpg": _jpeg(i % 2) for i in range(8)}
    members["d/train/c0/99.png"] = huge
    p = write_zip(str(tmp_path / "nocap.zip"), members)
    ds, info = create_dataset({"path": p, "image_size": 8, "max_image_pixels": 0}, "train", 9,
                              False, num_workers=1)
    rows = sum(1 for _ in ds.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert rows > 0 and _bad_names(info, 0) == ["d/train/c0/99.png"]
    assert inspect_cli.main([p, "--verify", "--set", "max_image_pixels=0"]) == 1
    assert "8 good, 1 bad" in capsys.readouterr().out


# ----------------------------------------------------------------------------- not a dataset
def test_inspect_on_a_folder_that_is_no_dataset_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(_jpeg(0))
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    for d in ("empty", "flat", "noclass"):
        assert inspect_cli.main([str(tmp_path / d)]) == 2, d
        assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------- trial decode memo
def _undefined_table(jpeg: bytes) -> bytes:
    b = bytearray(jpeg)
    b[b.find(b"\xff\xda") + 6] = 0x23  # the scan of component 1 selects tables 2/3: never defined
    return bytes(b)


def test_undefined_huffman_table_is_refused_before_mindspore_sees_it():
    good = encode(np.random.default_rng(0).integers(0, 255, (24, 24, 3), np.uint8), ".jpg")
    bad = _undefined_table(good)
    assert validate(good) == ""
    assert "Huffman table" in precheck(bad) and "not defined" in validate(bad)


@pytest.mark.parametrize("kind", ["zip", "disk"])
def test_trial_decode_runs_once_per_sample_and_again_for_changed_bytes(tmp_path, kind, monkeypatch):
    from ebv_ms.data import source as source_mod
    calls = []
    real = source_mod._imdecode
    monkeypatch.setattr(source_mod, "_imdecode", lambda *args: calls.append(1) or real(*args))
    imgs = {f"d/train/c{i % 2}/{i}.jpg": encode(
        np.random.default_rng(i).integers(0, 255, (16, 16, 3), np.uint8), ".jpg") for i in range(6)}
    if kind == "zip":
        cfg = {"path": write_zip(str(tmp_path / "m.zip"), imgs)}
    else:
        for name, data in imgs.items():
            os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
            (tmp_path / name).write_bytes(data)
        cfg = {"path": str(tmp_path / "d")}
    src = open_split(cfg, "train").source
    for epoch in range(3):
        for i in range(len(src)):
            src[epoch * len(src) + i]
    assert len(calls) == len(src)
    if kind == "disk":  # a file replaced between epochs is validated again
        path = tmp_path / "d" / "train" / src.name(2)
        path.write_bytes(imgs["d/train/" + src.name(3)])
        _, _, meta = src[3 * len(src) + 2]
        assert meta.tolist() == [3, -1] and len(calls) == len(src) + 1
        path.write_bytes(_undefined_table(imgs["d/train/" + src.name(3)]))
        _, _, meta = src[4 * len(src) + 2]
        assert meta.tolist() == [4, 2]

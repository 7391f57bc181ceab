"""Layout detection of archives: folders (with/without top folder, split aliases), lists, overrides."""
import numpy as np
import pytest

from ebv_ms.data.dataset import archive_layout
from ebv_ms.data.layouts import LayoutError, parse_list
from ebv_ms.tools.make_synthetic import write_zip
from tagged_images import flat_jpeg
from ebv_ms.data.zip_index import load_zip_index

CLASSES = ["n02", "n10", "n01"]  # sorted: n01 -> 0, n02 -> 1, n10 -> 2


def _folder_members(prefix, splits=("train", "val"), per_class=2):
    out = {}
    for split in splits:
        for c in CLASSES:
            for k in range(per_class):
                out[f"{prefix}{split}/{c}/{c}_{k}.JPEG"] = flat_jpeg(int(c[1:]) % 12)
    return out


def _layout(tmp_path, members, **cfg):
    path = write_zip(str(tmp_path / "a.zip"), members)
    return archive_layout(path, cfg)


def _labels_by_class(index, samples):
    out = {}
    for m, y in zip(samples.members.tolist(), samples.labels.tolist()):
        out.setdefault(index.name(m).split("/")[-2], set()).add(y)
    return out


@pytest.mark.parametrize("prefix", ["10w_classes/", ""])
@pytest.mark.parametrize("val_name", ["val", "validation", "test"])
def test_folder_layout_with_or_without_top_folder(tmp_path, prefix, val_name):
    members = _folder_members(prefix, ("train", val_name))
    members[f"{prefix}README.txt"] = b"not an image"
    index, layout = _layout(tmp_path, members)
    assert layout.kind == "folders" and layout.root == prefix.strip("/")
    assert layout.class_names == ["n01", "n02", "n10"]
    for split in ("train", "val"):
        s = layout.split(split)
        assert len(s.members) == 6
        assert _labels_by_class(index, s) == {"n01": {0}, "n02": {1}, "n10": {2}}
    with pytest.raises(LayoutError, match="split 'bogus' not found"):
        layout.split("bogus")


def test_val_and_test_folders_both_kept(tmp_path):
    index, layout = _layout(tmp_path, _folder_members("", ("train", "val", "test")))
    assert set(layout.splits) == {"train", "val", "test"}
    assert layout.split("val").origin == "folder val/"


def test_class_index_is_union_when_val_lacks_a_class(tmp_path):
    members = _folder_members("t/", ("train",))
    members["t/val/n10/x.jpg"] = flat_jpeg(1)
    index, layout = _layout(tmp_path, members)
    assert len(layout.class_names) == 3
    assert layout.split("val").labels.tolist() == [2]


def test_list_layout_inside_archive_txt_and_csv(tmp_path):
    members = {f"data/images/{i}.jpg": flat_jpeg(i % 5) for i in range(10)}
    members["data/train.txt"] = "".join(f"images/{i}.jpg {i % 5}\n" for i in range(8)).encode()
    members["data/val_list.csv"] = ("image_id,label\n" + "".join(
        f"data/images/{i}.jpg,{(i % 5) + 2}\n" for i in range(8, 10))).encode()
    index, layout = _layout(tmp_path, members)
    assert layout.kind == "lists" and len(layout.class_names) == 7
    tr, va = layout.split("train"), layout.split("val")
    assert [index.name(m) for m in tr.members] == [f"data/images/{i}.jpg" for i in range(8)]
    assert tr.labels.tolist() == [i % 5 for i in range(8)]
    assert va.labels.tolist() == [5, 6] and va.origin == "list data/val_list.csv"


def test_list_naming_missing_members_is_a_clear_error(tmp_path):
    members = {f"images/{i}.jpg": flat_jpeg(0) for i in range(3)}
    members["train.txt"] = b"images/0.jpg 0\nimages/1.jpg 0\nimages/9.jpg 1\n"
    with pytest.raises(LayoutError, match=r"names 1 of 3 files that are not in the archive.*9\.jpg"):
        _layout(tmp_path, members)


def test_yaml_overrides_split_dirs_and_lists(tmp_path):
    members = _folder_members("x/", ("fold_a", "fold_b"))
    index, layout = _layout(tmp_path, members, split_dirs={"train": "x/fold_a", "val": "x/fold_b"})
    assert len(layout.split("train").members) == 6 and len(layout.class_names) == 3
    members = {f"im/{i}.jpg": flat_jpeg(0) for i in range(4)}
    members["meta/labels_all.tsv"] = b"idx\tfile\tcls\n" + b"".join(
        f"{i}\tim/{i}.jpg\t{3 - i}\n".encode() for i in range(4))
    index, layout = _layout(tmp_path, members, split_lists={"train": "meta/labels_all.tsv"},
                            list_columns=["file", "cls"])
    assert layout.split("train").labels.tolist() == [3, 2, 1, 0]


def test_list_strip_prefix_applies_to_lists_inside_an_archive(tmp_path):
    """data.list_strip_prefix was ignored for lists in a zip, though the error suggested it."""
    members = {f"ds/images/{i}.jpg": flat_jpeg(i) for i in range(4)}
    members["ds/lists/train.txt"] = b"".join(f"../images/{i}.jpg {i % 2}\n".encode() for i in range(4))
    with pytest.raises(LayoutError, match="names 4 of 4 files.*data.list_strip_prefix"):
        _layout(tmp_path, members, layout="lists")
    index, layout = _layout(tmp_path, members, layout="lists", list_strip_prefix="../")
    assert [index.name(m) for m in layout.split("train").members] == [f"ds/images/{i}.jpg" for i in range(4)]
    assert layout.split("train").labels.tolist() == [0, 1, 0, 1]


def test_folder_layout_forced_over_lists(tmp_path):
    members = _folder_members("", ("train", "val"))
    members["train.txt"] = b"train/n01/n01_0.JPEG 7\n"
    _, auto = _layout(tmp_path, members)
    assert auto.kind == "lists"
    _, forced = _layout(tmp_path, members, layout="folders")
    assert forced.kind == "folders" and len(forced.class_names) == 3


def test_unrecognised_layout_says_what_was_found(tmp_path):
    members = {f"pics/a/b/c/{i}.jpg": flat_jpeg(0) for i in range(3)}
    members["notes.md"] = b"x"
    with pytest.raises(LayoutError) as exc:
        _layout(tmp_path, members)
    msg = str(exc.value)
    assert "4 entries, 3 images" in msg and "pics/ (3 entries)" in msg and "data.split_dirs" in msg


def test_layout_cache_is_reused(tmp_path):
    path = write_zip(str(tmp_path / "a.zip"), _folder_members("t/"))
    archive_layout(path, {})
    index = load_zip_index(path)
    assert not index.built
    _, layout = archive_layout(path, {}, index=index)
    assert layout.class_names == ["n01", "n02", "n10"]


def test_parse_list_errors_name_the_line():
    with pytest.raises(LayoutError, match="line 2"):
        parse_list("a.jpg 1\nb.jpg x\n", "l.txt")
    with pytest.raises(LayoutError, match="negative label"):
        parse_list("a.jpg -1\n", "l.txt")
    paths, labels = parse_list("path,label\n./a.jpg,3\n", "l.csv")
    assert paths == ["./a.jpg"] and labels.dtype == np.int32 and labels.tolist() == [3]


def test_a_list_with_only_its_header_is_empty(tmp_path):
    with pytest.raises(LayoutError, match="list l.csv is empty"):  # was numpy's ValueError later
        parse_list("path,label\n", "l.csv")
    members = _folder_members("")  # detection ignores such a list and finds the folders
    members["train.csv"] = b"image_id,label\n"
    assert _layout(tmp_path, members)[1].kind == "folders"


@pytest.mark.slow
def test_a_layout_error_names_each_folder_once_and_leaves_no_run_folder(tmp_path):
    """train.py on a folder with no training split: one error line listing each name it looked
    for once, exit 2, and no run folder (it used to stay, empty but for .run.lock)."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "data" / "val" / "c0").mkdir(parents=True)
    (tmp_path / "data" / "val" / "c0" / "0.jpg").write_bytes(flat_jpeg(0))
    out = tmp_path / "runs" / "new"
    r = subprocess.run([sys.executable, str(root / "train.py"), "--config",
                        str(root / "configs" / "demo_cpu.yaml"), f"data.path={tmp_path / 'data'}",
                        f"output_dir={out}", f"ebv.cache_dir={tmp_path / 'ebv'}"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(err) == 1 and "split 'train' not found (looked for train, training);" in err[0]
    assert not out.exists()

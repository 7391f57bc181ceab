"""A small copy of the demo digits archive for tests that run train.py or eval.py for real."""
import zipfile
from collections import defaultdict


def small_demo_zip(src, tmp_path, per_class_train=16, per_class_val=4, drop_val=1, rename=None,
                   name="demo_small"):
    """The demo digits archive ``src`` (conftest's ``demo_zip``: real JPEGs, the 100k-zip
    layout), cut to a few images per class so a run takes a handful of steps; ``drop_val`` validation images fewer make the split's
    size odd (39), so 2 ranks cannot split it evenly; ``rename`` {old: new} renames class
    folders (same images, another class list)."""
    keep = {"train": per_class_train, "val": per_class_val}
    seen = defaultdict(int)
    out = tmp_path / name / src.name
    out.parent.mkdir()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            parts = info.filename.split("/")
            split = next((p for p in parts if p in keep), None)
            if split is None or info.is_dir():
                continue
            key = (split, parts[parts.index(split) + 1])
            limit = keep[split] - (drop_val if split == "val" and key[1] == "0" else 0)
            if seen[key] < limit:
                seen[key] += 1
                cls = parts.index(split) + 1
                parts[cls] = (rename or {}).get(parts[cls], parts[cls])
                zout.writestr("/".join(parts), zin.read(info))
    assert len(seen) == 20, seen  # 10 classes in both splits
    return out

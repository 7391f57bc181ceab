"""``python -m ebv_ms.data.inspect PATH [--verify]``: what the data pipeline sees in PATH.

Prints the detected layout, the class count and the samples per split; ``--verify`` reads and
decodes every sample (as training would) and lists the bad ones. Layout overrides are given
as ``--set key=value`` with the keys of the YAML ``data`` section (e.g.
``--set split_dirs='{train: a/train, val: a/val}'``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional


def _splits(cfg: dict):
    from .dataset import _cfg, _format, archive_layout
    from .imagenet import count_folder_samples, find_split_dir, folder_classes, list_samples
    from .layouts import LayoutError
    from .readers import ZipMemberReader
    from .source import ImageSource
    c = _cfg(cfg)
    fmt = _format(c)
    path = c["path"]
    out = []
    if fmt == "zip":
        index, layout = archive_layout(path, c)
        print(f"{path}: zip archive, {len(index)} members (index {index.cache_dir or 'in memory'})")
        print(layout.describe())
        for s, v in layout.splits.items():
            out.append((s, ImageSource(ZipMemberReader(index), v.members, v.labels)))
        return out
    if fmt == "list":
        for s, lf in c["split_lists"].items():
            reader, m, lab = list_samples(path, lf, c["list_columns"], c["list_delimiter"],
                                          c["list_strip_prefix"] or "")
            print(f"  {s}: {len(m)} samples from list {lf}, {int(lab.max()) + 1} classes")
            out.append((s, ImageSource(reader, m, lab)))
        return out
    from .layouts import is_image
    from .readers import FileReader
    import numpy as np
    classes = folder_classes(path, c["split_dirs"])
    print(f"{path}: image folders, {len(classes)} classes")
    for s in ("train", "val", "test"):
        try:
            d = find_split_dir(path, s, c["split_dirs"])
        except LayoutError:
            continue
        print(f"  {s}: {count_folder_samples(d, classes)} images in {d}")
        files, labels = [], []
        for k, cls in enumerate(classes):
            cdir = os.path.join(d, cls)
            if os.path.isdir(cdir):
                names = sorted(f for f in os.listdir(cdir) if is_image(f))
                files += [os.path.join(cls, f) for f in names]
                labels += [k] * len(names)
        if files:
            out.append((s, ImageSource(FileReader(d, files), np.arange(len(files)), np.asarray(labels))))
    return out


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help=".zip archive or dataset folder")
    ap.add_argument("--verify", action="store_true", help="decode every sample, list the bad ones")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="data config override (YAML value), repeatable")
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    a = ap.parse_args(argv)
    from ..errors import run_cli
    return run_cli("data.inspect", lambda: _run(a), debug=a.debug)


def _run(a) -> int:
    from ..config import load_config
    # the same schema as training: data.KEY=VALUE overrides, every key checked first
    cfg = dict(load_config(overrides=[f"data.{kv.strip()}" for kv in a.set]).data)
    cfg["path"] = a.path
    splits = _splits(cfg)
    if not a.verify:
        return 0
    from tqdm import tqdm
    total_bad = 0
    for s, src in splits:
        bad = []
        for i in tqdm(range(len(src)), desc=f"verify {s}", unit="img", mininterval=1.0):
            why = src.check(i)
            if why:
                bad.append((src.name(i), why))
        total_bad += len(bad)
        print(f"  {s}: {len(src) - len(bad)} good, {len(bad)} bad")
        for name, why in bad:
            print(f"    {name}: {why}")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())

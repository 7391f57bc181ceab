"""``python -m ebv_ms.tools.inspect_data PATH [--verify]``: what the data pipeline sees in PATH.

Prints the detected layout, the class count and the samples per split; ``--verify`` decodes
every sample as training would and lists the bad ones. ``--set key=value`` takes the keys of the
YAML ``data`` section (e.g. ``--set split_dirs='{train: a/train, val: a/val}'``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

import numpy as np


def _splits(cfg: dict):
    """[(split, ImageSource)] through ``dataset.open_split``, the opener training uses."""
    from ..data.dataset import _cfg, _format, archive_layout, open_split, split_names
    c = _cfg(cfg)
    is_zip = _format(c) == "zip"
    if is_zip:
        index, layout = archive_layout(c["path"], c)
        print(f"{c['path']}: zip archive, {len(index)} members (index {index.cache_dir or 'in memory'})")
        print(layout.describe())
    out = []
    for s in split_names(c):
        sp = open_split(c, s)
        if not is_zip:  # (the layout above already says this for an archive)
            print(f"  {s}: {len(sp.source)} samples, {len(sp.class_names)} classes "
                  f"({len(np.unique(sp.source.labels))} with samples) from {sp.description}")
        out.append((s, sp.source))
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
    from ebv_ms.progress import progress_bar
    from ..data.readers import printable
    total_bad = 0
    for s, src in splits:
        whys = ((i, src.check(i)) for i in progress_bar(range(len(src)), desc=f"verify {s}",
                                                         unit="img", mininterval=1.0))
        bad = [(src.name(i), why) for i, why in whys if why]
        total_bad += len(bad)
        print(f"  {s}: {len(src) - len(bad)} good, {len(bad)} bad")
        for name, why in bad:
            print(f"    {printable(name)}: {why}")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())

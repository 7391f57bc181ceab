"""``python -m ebv_ms.tools.inspect_data PATH [--verify]``: what the data pipeline sees in PATH.

Prints the detected layout, the class count and the samples per split; ``--verify`` decodes
every sample as training would and lists the bad ones. ``--set key=value`` takes the keys of the
YAML ``data`` section (e.g. ``--set split_dirs='{train: a/train, val: a/val}'``)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional

import numpy as np


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
    from ..data.dataset import archive_layout, open_split, split_names
    from ..data.readers import ZipMemberReader, printable
    # the same schema and opener as training: data.KEY=VALUE overrides, every key checked first
    cfg = dict(load_config(overrides=[f"data.{kv.strip()}" for kv in a.set]).data, path=a.path)
    splits = [open_split(cfg, s) for s in split_names(cfg)]
    if splits and isinstance(splits[0].source.reader, ZipMemberReader):
        index, layout = archive_layout(a.path, cfg, splits[0].source.reader.index)
        print(f"{a.path}: zip archive, {len(index)} members (index {index.cache_dir or 'in memory'})")
        print(layout.describe())
    else:  # (the layout above says this for an archive)
        for sp in splits:
            print(f"  {sp.split}: {len(sp.source)} samples, {len(sp.class_names)} classes "
                  f"({len(np.unique(sp.source.labels))} with samples) from {sp.description}")
    if not a.verify:
        return 0
    from ebv_ms.progress import progress_bar
    total_bad = 0
    for sp in splits:
        src = sp.source
        whys = ((i, src.check(i)) for i in progress_bar(range(len(src)), desc=f"verify {sp.split}",
                                                         unit="img", mininterval=1.0))
        bad = [(src.name(i), why) for i, why in whys if why]
        total_bad += len(bad)
        print(f"  {sp.split}: {len(src) - len(bad)} good, {len(bad)} bad")
        for name, why in bad:
            print(f"    {printable(name)}: {why}")
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main())

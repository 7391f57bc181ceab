"""Write a small real-image archive in the 100k-class zip layout, from scikit-learn's digits.

``python -m ebv_ms.tools.make_demo --out DIR`` writes ``DIR/digits.zip`` holding
``digits/train|val/<digit>/<n>.jpg``: the 1,797 handwritten 8x8 digits upscaled (bicubic) to
``--size`` pixels as RGB JPEGs, split per class (``--val-fraction``) with a fixed seed."""
from __future__ import annotations

import argparse
import os
import sys
import zipfile
from typing import Optional

import cv2
import numpy as np

from ..errors import run_cli
from .make_synthetic import encode, write_zip


def digit_images(size: int = 32, copies: int = 1, seed: int = 0):
    """(uint8 RGB images (n, size, size, 3), labels (n,)) from scikit-learn's digits."""
    from sklearn.datasets import load_digits
    d = load_digits()
    rng = np.random.default_rng(seed)
    imgs = []
    for c in range(copies):
        for x in d.images:
            g = (x / 16.0 * 255.0).astype(np.float32)
            if c > 0:  # shifted copies so repeated images are not byte-identical
                g = np.roll(g, tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
            big = np.clip(cv2.resize(g, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255)
            imgs.append(np.repeat(big.astype(np.uint8)[:, :, None], 3, axis=2))
    return np.stack(imgs), np.tile(d.target, copies).astype(np.int32)


def write_demo_archive(out: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0,
                       copies: int = 1, deflate: bool = False, name: str = "digits.zip") -> str:
    """Write the demo archive and return its path."""
    os.makedirs(out, exist_ok=True)
    imgs, labels = digit_images(size, copies, seed)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        is_val[idx[: max(1, int(round(len(idx) * val_fraction)))]] = True
    members = {f"digits/{'val' if is_val[i] else 'train'}/{y}/{i:06d}.jpg": encode(img, ".jpg", 95)
               for i, (img, y) in enumerate(zip(imgs, labels))}
    return write_zip(os.path.join(out, name), members, members if deflate else ())


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--copies", type=int, default=1, help="repeat the 1,797 digits K times")
    ap.add_argument("--deflate", action="store_true", help="deflate members instead of storing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="digits.zip")
    a = ap.parse_args(argv)

    def run() -> int:
        path = write_demo_archive(a.out, a.size, a.val_fraction, a.seed, a.copies, a.deflate, a.name)
        with zipfile.ZipFile(path) as z:
            n = len(z.namelist())
        print(f"wrote {path}: {n} JPEGs ({a.size}x{a.size} RGB), 10 classes, layout "
              f"digits/train|val/<class>/\nuse it with: data.path={path} model.num_classes=10 "
              f"data.image_size={a.size}")
        return 0
    return run_cli("make_demo", run)


if __name__ == "__main__":
    sys.exit(main())

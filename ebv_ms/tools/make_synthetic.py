"""Small real images and archives made on the fly, and the one zip writer (``write_zip``, also
for make_demo and make_glyphs)."""
from __future__ import annotations

import zipfile
from typing import Dict, Iterable, Tuple, Union

import cv2
import numpy as np

from ..atomic import atomic_path

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same input, same bytes


def encode(img_rgb: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"cv2.imencode({ext}) failed")
    return buf.tobytes()


def flat_jpeg(label: int, size: int = 32) -> bytes:
    """A real JPEG of one flat grey level, 20 + 20 * label (survives JPEG and resizing)."""
    return encode(np.full((size, size, 3), 20 + 20 * (label % 12), np.uint8), ".jpg")


def write_zip(path: str, members: Union[Dict[str, bytes], Iterable[Tuple[str, bytes]]],
              deflate: Iterable[str] = ()) -> str:
    """Write ``members`` (name -> bytes, or pairs) into the zip ``path`` atomically and return
    ``path``; names in ``deflate`` are deflated, the others stored (JPEG does not deflate)."""
    deflate = set(deflate)
    with atomic_path(path, fsync=False) as tmp, zipfile.ZipFile(tmp, "w") as z:
        for name, data in members.items() if isinstance(members, dict) else members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            z.writestr(info, data, zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)
    return path


def write_tiny_archive(path: str, num_members: int, progress: bool = True) -> str:
    """An archive of ``num_members`` tiny images in ``10w_classes/train|val/<class>/<n>.jpg``,
    12 train + 6 val per class of 100,000 like the 100k-class archive. For index benchmarks."""
    from ebv_ms.progress import progress_bar
    payload = encode(np.zeros((8, 8, 3), np.uint8))
    it = progress_bar(range(num_members), desc="writing tiny archive", unit="member",
                      mininterval=2.0, disable=not progress)
    return write_zip(path, ((f"10w_classes/{'train' if i % 18 < 12 else 'val'}/"
                             f"{i // 18 % 100_000:06d}/{i:07d}.jpg", payload) for i in it))

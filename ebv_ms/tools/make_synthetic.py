"""The image encoder and the one zip writer (``write_zip``) of make_demo and make_glyphs (and the
tests' archives)."""
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

"""Images that carry a sample id and label in their pixels, so a test can check after the whole
pipeline that every image came with its own label."""
from typing import Tuple

import numpy as np

from ebv_ms.tools.make_synthetic import encode


def tagged_image(sample_id: int, label: int, size: int = 8) -> np.ndarray:
    """RGB uint8 image whose top-left pixel holds (id % 256, id // 256 % 256, label)."""
    img = np.random.default_rng(sample_id).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    img[0, 0] = (sample_id % 256, (sample_id // 256) % 256, label % 256)
    return img


def read_tag(chw_normalised: np.ndarray) -> Tuple[int, int]:
    """(id, label) back from a normalised CHW image made from ``tagged_image`` (eval, no resize)."""
    from ebv_ms.data.presets import IMAGENET_MEAN, IMAGENET_STD
    px = [int(round((chw_normalised[c, 0, 0] * IMAGENET_STD[c] + IMAGENET_MEAN[c]) * 255.0))
          for c in range(3)]
    return px[0] + 256 * px[1], px[2]


def flat_jpeg(label: int, size: int = 32) -> bytes:
    """A real JPEG of one flat grey level, 20 + 20 * label (survives JPEG and resizing)."""
    return encode(np.full((size, size, 3), 20 + 20 * (label % 12), np.uint8), ".jpg")

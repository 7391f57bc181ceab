"""The paper's augmentation recipes (after torchvision's reference presets), on MindSpore ops.

- ``eval``: resize (shorter side) to ``eval_resize`` and centre-crop ``eval_crop``;
- ``A0``: random resized crop, horizontal flip, colour jitter;
- ``A1``: random resized crop, flip, TrivialAugmentWide, random erasing (p=0.1);
- ``A2``: A1 plus, per batch, mixup (alpha 0.2) or cutmix (alpha 1.0) with soft targets.

Every per-image step is a MindSpore C++ vision op except RandomErasing, which MindSpore only
has as a Python op (``vision.RandomErasing``, used as is). The per-batch mix is hand-written
(``MixupCutmix``): MindSpore's ``MixUpBatch``/``CutMixBatch`` need dense one-hot labels made
beforehand and cannot be chosen between at random per batch, and mindcv's ``Mixup`` builds
``np.eye(num_classes)``, which is 40 GB at 100,000 classes. Label smoothing is not applied
here: it lives in the loss.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import mindspore.dataset.vision as vision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RECIPES = ("eval", "A0", "A1", "A2")


def _normalize_chw() -> list:
    return [vision.Normalize(mean=[m * 255.0 for m in IMAGENET_MEAN],
                             std=[s * 255.0 for s in IMAGENET_STD], is_hwc=True),
            vision.HWC2CHW()]


def check_recipe(recipe: str) -> str:
    r = str(recipe).upper() if str(recipe).lower() != "eval" else "eval"
    if r not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    return r


def create_transforms(recipe: str, image_size: int = 224, eval_resize: Optional[int] = None,
                      eval_crop: Optional[int] = None, scale: Sequence[float] = (0.08, 1.0),
                      color_jitter: float = 0.4, random_erasing: float = 0.1,
                      hflip: float = 0.5) -> List:
    """Per-image ops for ``dataset.map(operations=..., input_columns="image")``.

    Input: RGB uint8 (H, W, 3). Output: float32 (3, S, S), normalised with ImageNet mean/std,
    where S is ``image_size`` for training recipes and ``eval_crop`` for ``eval``.
    ``eval_resize``/``eval_crop`` default to ``image_size / 0.875`` and ``image_size``.
    """
    recipe = check_recipe(recipe)
    if recipe == "eval":
        crop = int(eval_crop or image_size)
        resize = int(eval_resize or round(image_size / 0.875))
        return [vision.Resize(resize, interpolation=vision.Inter.BILINEAR),
                vision.CenterCrop(crop)] + _normalize_chw()
    ops = [vision.RandomResizedCrop(int(image_size), scale=tuple(scale), ratio=(3 / 4, 4 / 3),
                                    interpolation=vision.Inter.BILINEAR)]
    if hflip > 0:
        ops.append(vision.RandomHorizontalFlip(prob=hflip))
    if recipe == "A0":
        if color_jitter > 0:
            ops.append(vision.RandomColorAdjust(brightness=color_jitter, contrast=color_jitter,
                                                saturation=color_jitter))
        return ops + _normalize_chw()
    ops.append(vision.TrivialAugmentWide(num_magnitude_bins=31, interpolation=vision.Inter.BILINEAR))
    ops += _normalize_chw()
    if random_erasing > 0:
        ops.append(vision.RandomErasing(prob=float(random_erasing), value=0))
    return ops


class MixupCutmix:
    """Per batch: mixup (Beta(alpha, alpha) blend) or cutmix (a box pasted), chosen at random.

    Mixes each image with the batch reversed (as timm/mindcv do; no extra copy of the labels).
    Returns soft targets float32 (B, num_classes) built sparsely (two entries per row), so a
    100,000-class batch costs B x 400 KB, not a dense identity matrix. Randomness comes from
    ``seed``, the epoch and the batch number, so a run is reproducible whatever the threads do.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0, seed: int = 0):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MixupCutmix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_classes = int(num_classes)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.switch_prob = float(switch_prob)
        self.prob = float(prob)
        self.seed = int(seed)

    def _params(self, rng: np.random.Generator):
        if rng.random() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, images: np.ndarray, labels: np.ndarray, epoch: int = 0, batch: int = 0):
        """images float32 (B, C, H, W), labels int (B,) -> (mixed images, soft targets (B, N))."""
        rng = np.random.default_rng([self.seed, int(epoch), int(batch)])
        images = np.asarray(images, dtype=np.float32)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        lam, use_cutmix = self._params(rng)
        if lam < 1.0:
            if use_cutmix:
                h, w = images.shape[-2:]
                cut = np.sqrt(1.0 - lam)
                ch, cw = int(h * cut), int(w * cut)
                cy, cx = int(rng.integers(h)), int(rng.integers(w))
                y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
                x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
                images = images.copy()
                images[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1]
                lam = 1.0 - float((y1 - y0) * (x1 - x0)) / float(h * w)  # the area actually pasted
            else:
                images = images * np.float32(lam) + images[::-1] * np.float32(1.0 - lam)
        targets = np.zeros((labels.shape[0], self.num_classes), np.float32)
        rows = np.arange(labels.shape[0])
        targets[rows, labels] += np.float32(lam)
        targets[rows, labels[::-1]] += np.float32(1.0 - lam)
        return images.astype(np.float32, copy=False), targets

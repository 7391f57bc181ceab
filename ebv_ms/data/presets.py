"""The paper's augmentation recipes (after torchvision's reference presets), on MindSpore ops.

Per-image steps are C++ ops; random erasing and mixup/cutmix run per batch in numpy, because
MindSpore's ``RandomErasing`` is a per-image Python op (10-25 % of the pipeline's CPU) and
mindcv's ``Mixup`` builds ``np.eye(num_classes)`` (40 GB at 100,000 classes). See docs/data.md.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
import mindspore.dataset.vision as vision

from ..config import RECIPES  # the one list, with the config keys

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_recipe(recipe: str) -> str:
    r = str(recipe).upper() if str(recipe).lower() != "eval" else "eval"
    if r not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    return r


def create_transforms(recipe: str, image_size: int = 224, eval_resize: Optional[int] = None,
                      eval_crop: Optional[int] = None, scale: Sequence[float] = (0.08, 1.0),
                      color_jitter: float = 0.4) -> List:
    """Per-image C++ ops: encoded image bytes uint8 (n,) -> float32 (3, S, S), ImageNet-normalised;
    decoding is one of them: for training ``RandomCropDecodeResize`` (decodes only the crop's
    region; same distribution as ``RandomResizedCrop``), for ``eval`` ``Decode``."""
    recipe, bilinear = check_recipe(recipe), vision.Inter.BILINEAR
    tail = [vision.Normalize(mean=[m * 255.0 for m in IMAGENET_MEAN],
                             std=[s * 255.0 for s in IMAGENET_STD], is_hwc=True), vision.HWC2CHW()]
    if recipe == "eval":
        resize = int(eval_resize or round(image_size / 0.875))
        return [vision.Decode(), vision.Resize(resize, interpolation=bilinear),
                vision.CenterCrop(int(eval_crop or image_size))] + tail
    ops = [vision.RandomCropDecodeResize(int(image_size), scale=tuple(scale), ratio=(3 / 4, 4 / 3),
                                         interpolation=bilinear), vision.RandomHorizontalFlip(prob=0.5)]
    if recipe != "A0":
        ops.append(vision.TrivialAugmentWide(num_magnitude_bins=31, interpolation=bilinear))
    elif color_jitter > 0:
        ops.append(vision.RandomColorAdjust(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return ops + tail


def erase_batch(images: np.ndarray, prob: float, rng: np.random.Generator) -> int:
    """torchvision's random erasing (area 2-33 %, aspect 0.3-3.3, 10 tries, value 0) of each
    (C, H, W) image in place; returns how many were erased."""
    n_erased, (h_img, w_img) = 0, images.shape[-2:]
    for k in np.flatnonzero(rng.random(images.shape[0]) < prob):
        for _ in range(10):
            target = h_img * w_img * rng.uniform(0.02, 0.33)
            aspect = np.exp(rng.uniform(*np.log((0.3, 3.3))))
            h, w = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
            if h < h_img and w < w_img:
                top, left = int(rng.integers(0, h_img - h + 1)), int(rng.integers(0, w_img - w + 1))
                images[k, :, top:top + h, left:left + w] = 0.0
                n_erased += 1
                break
    return n_erased


def create_batch_transform(recipe: str, num_classes: int, random_erasing: float = 0.1,
                           mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0,
                           switch_prob: float = 0.5, seed: int = 0) -> Optional[Callable]:
    """The recipe's per-batch step, or None (eval, A0): ``(images float32 (B,C,H,W), labels (B,),
    epoch, batch) -> (images, labels)``; random erasing, then (A2) mixup or cutmix."""
    recipe = check_recipe(recipe)
    if recipe in ("eval", "A0") or (random_erasing <= 0 and recipe != "A2"):
        return None

    def batch_transform(images: np.ndarray, labels: np.ndarray, epoch: int = 0, batch: int = 0):
        if random_erasing > 0:
            rng = np.random.default_rng([int(seed), 7, int(epoch), int(batch)])
            erase_batch(images, float(random_erasing), rng)
        if recipe != "A2":
            return images, labels
        return mixup_cutmix(images, labels, num_classes, mixup_alpha, cutmix_alpha, switch_prob,
                            seed, epoch, batch)
    return batch_transform


def mixup_cutmix(images: np.ndarray, labels: np.ndarray, num_classes: int, mixup_alpha: float = 0.2,
                 cutmix_alpha: float = 1.0, switch_prob: float = 0.5, seed: int = 0, epoch: int = 0,
                 batch: int = 0):  # (the config checked an alpha > 0)
    """Mixup (Beta(alpha, alpha) blend) or cutmix (a box pasted) of each image of a batch, images
    float32 (B, C, H, W) and labels int (B,), with the batch reversed (as timm/mindcv do), drawn
    from (seed, epoch, batch); -> (mixed images, soft targets (B, num_classes), two entries a row)."""
    rng = np.random.default_rng([int(seed), int(epoch), int(batch)])
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    rng.random()  # a draw that always mixed (p=1): kept so every seed gives the same batches
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
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
    targets = np.zeros((labels.shape[0], int(num_classes)), np.float32)
    rows = np.arange(labels.shape[0])
    targets[rows, labels] += np.float32(lam)
    targets[rows, labels[::-1]] += np.float32(1.0 - lam)
    return images.astype(np.float32, copy=False), targets

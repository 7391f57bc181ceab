"""The paper's augmentation recipes (after torchvision's reference presets), on MindSpore ops.

- ``eval``: resize (shorter side) to ``eval_resize`` and centre-crop ``eval_crop``;
- ``A0``: random resized crop, horizontal flip, colour jitter;
- ``A1``: random resized crop, flip, TrivialAugmentWide, random erasing (p=0.1);
- ``A2``: A1 plus, per batch, mixup (alpha 0.2) or cutmix (alpha 1.0) with soft targets.

Every per-image step is a MindSpore C++ vision op, so the per-image ``map`` runs in C++ threads
with no Python and no process hops. Two steps are done per batch, in numpy, by
``BatchAugment``:

- random erasing: MindSpore has it only as a per-image Python op (``vision.RandomErasing``);
  in the map it forces the GIL (or a process hop) onto every image, which cost 10-25 % of the
  pipeline's CPU time in benchmarks/data.py. Per batch it is a few slice assignments. Same
  semantics as torchvision's (area 2-33 %, aspect 0.3-3.3, value 0 after normalisation, 10
  tries), applied before mixing as there.
- mixup/cutmix: MindSpore's ``MixUpBatch``/``CutMixBatch`` need dense one-hot labels made
  beforehand and cannot be chosen between at random per batch; mindcv's ``Mixup`` builds
  ``np.eye(num_classes)`` (40 GB at 100,000 classes). ``MixupCutmix`` builds the soft targets
  sparsely.

Randomness in both comes from the seed and the batch number: ``create_dataset`` numbers batches
run-wide (and passes epoch 0), ``DatasetInfo.set_start_epoch`` moves the count on a resume, so
runs are reproducible whatever the threads do. Label smoothing is not applied here: it lives in the loss.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import mindspore.dataset.vision as vision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
from ..config import RECIPES  # noqa: E402 - the one list, with the config keys


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
                      color_jitter: float = 0.4, hflip: float = 0.5, encoded: bool = False) -> List:
    """Per-image C++ ops for ``dataset.map(operations=..., input_columns="image")``.

    Input: RGB uint8 (H, W, 3). Output: float32 (3, S, S), normalised with ImageNet mean/std,
    where S is ``image_size`` for training recipes and ``eval_crop`` for ``eval``.
    ``eval_resize``/``eval_crop`` default to ``image_size / 0.875`` and ``image_size``.
    With ``encoded=True`` the input is the encoded file (uint8 (n,)) and decoding is part of the
    ops: ``RandomCropDecodeResize`` for training (decodes only the crop's region of a JPEG;
    same distribution as ``RandomResizedCrop``), ``Decode`` first for ``eval``.
    Random erasing (A1/A2) is per batch: see ``create_batch_transform``.
    """
    recipe = check_recipe(recipe)
    if recipe == "eval":
        crop = int(eval_crop or image_size)
        resize = int(eval_resize or round(image_size / 0.875))
        return ([vision.Decode()] if encoded else []) + [
            vision.Resize(resize, interpolation=vision.Inter.BILINEAR),
            vision.CenterCrop(crop)] + _normalize_chw()
    rrc = vision.RandomCropDecodeResize if encoded else vision.RandomResizedCrop
    ops = [rrc(int(image_size), scale=tuple(scale), ratio=(3 / 4, 4 / 3),
               interpolation=vision.Inter.BILINEAR)]
    if hflip > 0:
        ops.append(vision.RandomHorizontalFlip(prob=hflip))
    if recipe == "A0":
        if color_jitter > 0:
            ops.append(vision.RandomColorAdjust(brightness=color_jitter, contrast=color_jitter,
                                                saturation=color_jitter))
        return ops + _normalize_chw()
    ops.append(vision.TrivialAugmentWide(num_magnitude_bins=31, interpolation=vision.Inter.BILINEAR))
    return ops + _normalize_chw()


def erase_batch(images: np.ndarray, prob: float, rng: np.random.Generator,
                scale=(0.02, 0.33), ratio=(0.3, 3.3), value: float = 0.0, attempts: int = 10) -> int:
    """torchvision-style random erasing of each (C, H, W) image in place; returns how many."""
    n_erased = 0
    h_img, w_img = images.shape[-2:]
    area = h_img * w_img
    log_ratio = np.log(ratio)
    for k in np.flatnonzero(rng.random(images.shape[0]) < prob):
        for _ in range(attempts):
            target = area * rng.uniform(*scale)
            aspect = np.exp(rng.uniform(*log_ratio))
            h = int(round(np.sqrt(target * aspect)))
            w = int(round(np.sqrt(target / aspect)))
            if h < h_img and w < w_img:
                top = int(rng.integers(0, h_img - h + 1))
                left = int(rng.integers(0, w_img - w + 1))
                images[k, :, top:top + h, left:left + w] = value
                n_erased += 1
                break
    return n_erased


class BatchAugment:
    """The per-batch part of a recipe: random erasing, then (A2) mixup or cutmix.

    Called as ``(images float32 (B,C,H,W), labels int (B,), epoch, batch) -> (images, labels)``;
    labels come back as float32 (B, num_classes) soft targets when mixing.
    """

    def __init__(self, random_erasing: float = 0.0, mixer: Optional["MixupCutmix"] = None,
                 seed: int = 0):
        self.random_erasing = float(random_erasing)
        self.mixer = mixer
        self.seed = int(seed)

    def __call__(self, images: np.ndarray, labels: np.ndarray, epoch: int = 0, batch: int = 0):
        if self.random_erasing > 0:
            rng = np.random.default_rng([self.seed, 7, int(epoch), int(batch)])
            if not images.flags.writeable:
                images = images.copy()
            erase_batch(images, self.random_erasing, rng)
        if self.mixer is not None:
            return self.mixer(images, labels, epoch, batch)
        return images, labels


def create_batch_transform(recipe: str, num_classes: int, random_erasing: float = 0.1,
                           mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0,
                           switch_prob: float = 0.5, seed: int = 0) -> Optional[BatchAugment]:
    """The recipe's per-batch step, or None (eval, A0)."""
    recipe = check_recipe(recipe)
    if recipe in ("eval", "A0"):
        return None
    mixer = (MixupCutmix(num_classes, mixup_alpha, cutmix_alpha, switch_prob, seed=seed)
             if recipe == "A2" else None)
    if random_erasing <= 0 and mixer is None:
        return None
    return BatchAugment(random_erasing, mixer, seed)


class MixupCutmix:
    """Per batch: mixup (Beta(alpha, alpha) blend) or cutmix (a box pasted), chosen at random.

    Mixes each image with the batch reversed (as timm/mindcv do; no extra copy of the labels).
    Returns soft targets float32 (B, num_classes) built sparsely (two entries per row), so a
    100,000-class batch costs B x 400 KB, not a dense identity matrix. Randomness comes from
    ``seed`` and the batch number (see the module docstring), so a run is reproducible.
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

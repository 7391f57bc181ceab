"""``create_dataset``: one factory for the zip archive, dataset folders and lists.

Pipeline: `open_split` (``ImageSource``) -> ``ShardSampler`` -> per-image recipe ops (C++) ->
batch (per-batch recipe step, bad-sample bookkeeping). ``inspect_data`` uses `open_split` too."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections import defaultdict, namedtuple
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import mindspore.dataset as ds

from ..atomic import atomic_path
from ..config import DEFAULTS
from .layouts import Layout, SplitSamples, detect_layout, disk_layout
from .presets import check_recipe, create_batch_transform, create_transforms
from .readers import MAX_LIST_BYTES, FileReader, ZipMemberReader, printable
from .sampler import ShardSampler
from .source import DataError, ImageSource
from .zip_index import ArchiveError, ZipIndex, load_zip_index

logger = logging.getLogger(__name__)

_WARNED = set()  # layout caches whose warnings this process has shown
_LAYOUT_KEYS = ("layout", "root", "split_dirs", "split_lists", "list_columns", "list_delimiter",
                "list_strip_prefix")  # detect_layout's


class BadSampleLog:
    """Bad samples seen by the pipeline, per epoch (thread-safe; lives in the main process)."""

    def __init__(self):
        self._lock, self._by_epoch = threading.Lock(), defaultdict(set)

    def record(self, epoch: int, index: int) -> None:
        with self._lock:
            self._by_epoch[int(epoch)].add(int(index))

    def indices(self, epoch: Optional[int] = None) -> List[int]:
        with self._lock:
            return sorted(set().union(*self._by_epoch.values()) if epoch is None
                          else self._by_epoch.get(int(epoch), ()))


@dataclass
class DatasetInfo:
    split: str
    num_classes: int
    class_names: List[str]
    num_samples: int          # samples in the whole split
    shard_samples: int        # samples this shard sees per epoch (padded to equal length)
    shard_padding: int        # of which repeats at the end of the epoch (eval: ignore the last ones)
    steps_per_epoch: int
    soft_targets: bool        # labels are float32 (B, num_classes) (A2) instead of int32 (B,)
    description: str          # where the samples came from (layout, folders, lists)
    source: ImageSource = field(repr=False)
    bad: BadSampleLog = field(repr=False)
    sampler: ShardSampler = field(repr=False)
    batch_counter: List[int] = field(repr=False)  # seeds per-batch randomness

    def set_start_epoch(self, epoch: int) -> None:
        """Make the next pass the one an uninterrupted run would make as epoch ``epoch`` (0-based):
        the same shuffle and per-batch randomness, so a resumed run sees the same data."""
        self.sampler.set_epoch(epoch)
        self.batch_counter[0] = int(epoch) * self.steps_per_epoch

    def bad_count(self, epoch: Optional[int] = None) -> int:
        """Bad (skipped) samples seen in ``epoch`` (0-based), or in all epochs so far."""
        return len(self.bad.indices(epoch))

    def bad_report(self, epoch: Optional[int] = None, limit: int = 20) -> str:
        """'' if none, else a line per bad sample with the reason (re-read here, cheaply)."""
        idx = self.bad.indices(epoch)
        if not idx:
            return ""
        lines = [f"{len(idx)} bad sample(s) skipped in {self.split}"
                 + (f" epoch {epoch}" if epoch is not None else "")
                 + " (each replaced by the next good sample, with its own label):"]
        lines += [f"  {printable(self.source.name(i))}: {self.source.check(i) or 'unreadable'}"
                  for i in idx[:limit]]
        if len(idx) > limit:
            lines.append(f"  ... and {len(idx) - limit} more")
        return "\n".join(lines)

    def save_class_mapping(self, output_dir: str) -> str:
        """Write ``classes.json`` (index -> class name, where the data came from); returns its path."""
        path = os.path.join(output_dir, "classes.json")
        with atomic_path(path, fsync=False) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump({"num_classes": self.num_classes, "description": self.description,
                       "class_names": list(self.class_names)}, f, indent=0, ensure_ascii=False)
        return path


def _cfg(data_cfg: Optional[Mapping]) -> Dict[str, object]:
    cfg = {**DEFAULTS["data"], **(data_cfg or {})}  # (the two mappings are copied below)
    if unknown := [k for k in cfg if k not in DEFAULTS["data"]]:
        raise ValueError(f"unknown data config key '{unknown[0]}' (known: {', '.join(sorted(DEFAULTS['data']))})")
    cfg["split_dirs"] = dict(cfg["split_dirs"] or {})
    cfg["split_lists"] = dict(cfg["split_lists"] or {})
    return cfg


def archive_layout(path: str, cfg: Mapping, index: Optional[ZipIndex] = None,
                   num_classes: Optional[int] = None,
                   class_names: Optional[List[str]] = None) -> Tuple[ZipIndex, Layout]:
    """The archive's index and layout; the layout is cached next to the index (keyed by options)
    with the warnings of indexing and detection, shown again (once a process) when it is used."""
    caught = []  # (logger, message) of each warning
    loggers = [logging.getLogger(f"{__package__}.{m}") for m in ("zip_index", "layouts")]

    def catch(record: logging.LogRecord) -> bool:  # a filter that only notes the warnings
        if record.levelno >= logging.WARNING:
            caught.append((record.name, record.getMessage()))
        return True
    for log in loggers:
        log.addFilter(catch)
    try:
        cfg = _cfg(cfg)
        index = index or load_zip_index(path, cache_dir=cfg["index_cache_dir"])
        opts = json.dumps(dict({k: cfg[k] for k in _LAYOUT_KEYS}, class_names=class_names), sort_keys=True, default=str)
        tag = hashlib.sha1(opts.encode()).hexdigest()[:12]
        cache = os.path.join(index.cache_dir, f"layout-{tag}.npz") if index.cache_dir else None
        if cache and os.path.exists(cache) and not index.built:
            try:
                with np.load(cache, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    splits = {s: SplitSamples(z[f"{s}.members"], z[f"{s}.labels"], o)
                              for s, o in meta["splits"].items()}
                top = max(int(v.labels.max()) for v in splits.values() if len(v.labels))
                if num_classes is None or top < int(num_classes):  # else: detect to name the line
                    for name, message in [] if cache in _WARNED else meta["warnings"]:
                        logging.getLogger(name).warning("%s", message)
                    _WARNED.add(cache)
                    return index, Layout(meta["kind"], meta["class_names"], splits, meta["root"])
            except (OSError, ValueError, KeyError):
                logger.warning("ignoring unreadable layout cache %s", cache)
        reader = ZipMemberReader(index)
        layout = detect_layout(index.all_names(), lambda m: reader.read(m, MAX_LIST_BYTES), where=path,
                               num_classes=num_classes, class_names=class_names, **{k: cfg[k] for k in _LAYOUT_KEYS})
        reader.close()
        if cache:
            _WARNED.add(cache)
            arrays = {f"{s}.{k}": getattr(v, k) for s, v in layout.splits.items() for k in ("members", "labels")}
            meta = {"kind": layout.kind, "class_names": layout.class_names, "root": layout.root,
                    "splits": {s: v.origin for s, v in layout.splits.items()}, "warnings": caught}
            try:
                with atomic_path(cache, suffix=".npz", fsync=False) as tmp:
                    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
            except OSError as exc:
                logger.warning("could not cache the layout at %s (%s)", cache, exc)
        return index, layout
    finally:
        for log in loggers:
            log.removeFilter(catch)


# One split of a dataset, ready to read: what ``create_dataset`` and ``inspect`` both use.
SplitSource = namedtuple("SplitSource", "split source class_names description")


def open_split(data_cfg: Optional[Mapping], split: str, num_classes: Optional[int] = None,
               class_names: Optional[List[str]] = None) -> SplitSource:
    """The samples of ``split``; ``num_classes`` bounds list labels (refused with the line number),
    ``class_names`` (a resumed run's classes.json) fixes the class list and its order."""
    cfg = _cfg(data_cfg)
    reader, layout = _open(cfg, num_classes, class_names)
    samples = layout.split(split)
    members = samples.members
    if isinstance(reader, FileReader) and samples.folder:  # files named below their split folder
        reader, members = reader.below(samples.folder, members), np.arange(len(members))
    source = ImageSource(reader, members, samples.labels, cfg["max_image_pixels"], cfg["max_image_bytes"])
    return SplitSource(split, source, list(layout.class_names), f"{cfg['path']}: {layout.kind}, {samples.origin}")


def _open(cfg: Mapping, num_classes: Optional[int] = None, class_names: Optional[List[str]] = None):
    path, fmt = str(cfg["path"]), cfg["format"]  # (the config checked the format)
    if not cfg["path"]:
        raise DataError("data.path is not set: point it at the .zip archive or the dataset folder "
                        "(demo data: python -m ebv_ms.tools.make_demo --out DIR)")
    if fmt == "auto":
        if not os.path.exists(path):
            raise ArchiveError(f"{path}: not found. Set data.path to the .zip archive or dataset folder")
        fmt = ("list" if cfg["split_lists"] else "folder") if os.path.isdir(path) else "zip"
    if fmt == "zip":
        index, layout = archive_layout(path, cfg, num_classes=num_classes, class_names=class_names)
        return ZipMemberReader(index), layout
    return disk_layout(path, cfg, fmt == "list", num_classes, class_names)


def split_names(data_cfg: Optional[Mapping]) -> List[str]:
    """The splits the data has (canonical names: train, val, test, or data.split_dirs keys)."""
    return list(_open(_cfg(data_cfg))[1].splits)


def create_dataset(data_cfg: Optional[Mapping], split: str, batch_size: int, is_training: bool,
                   num_shards: int = 1, shard_id: int = 0, seed: int = 0,
                   recipe: Optional[str] = None, drop_remainder: Optional[bool] = None,
                   num_workers: Optional[int] = None, num_classes: Optional[int] = None,
                   class_names: Optional[List[str]] = None):
    """A batched MindSpore dataset of ``split`` and its ``DatasetInfo``: ``image`` float32 (B, 3, S, S),
    ``label`` int32 (B,) or, under A2, float32 (B, num_classes). Training drops the last partial
    batch; every shard gets the same number of steps; ``seed`` must be the same on every rank.
    ``num_classes`` must match the data's; ``class_names`` fixes the class list (`open_split`)."""
    cfg = _cfg(data_cfg)
    recipe = check_recipe(recipe or (cfg["recipe"] if is_training else "eval"))
    drop_remainder = bool(is_training) if drop_remainder is None else drop_remainder
    workers = max(1, int(num_workers if num_workers is not None else cfg["num_workers"]))
    multiproc = bool(cfg["python_multiprocessing"]) and workers > 1
    _, source, class_names, description = open_split(cfg, split, num_classes, class_names)
    n = len(source)
    sampler = ShardSampler(n, num_shards, shard_id, shuffle=is_training, seed=seed, encode_epoch=True)
    # The source's per-row work is small (read, CRC, precheck; the trial decode only in the
    # first epoch); one thread feeds several decode threads (docs/data.md).
    dataset = ds.GeneratorDataset(source, ["image", "label", "meta"], sampler=sampler,
                                  num_parallel_workers=workers if multiproc else 1,
                                  python_multiprocessing=multiproc)
    if num_classes is not None and int(num_classes) != len(class_names):
        raise DataError(f"the data has {len(class_names)} classes but num_classes={num_classes} was "
                        f"asked for (model.num_classes?); make them agree")
    # Decoding is part of the recipe, in C++ (for training only the crop's region is decoded).
    ops = create_transforms(recipe, int(cfg["image_size"]), cfg["eval_resize"], cfg["eval_crop"],
                            tuple(cfg["scale"]), float(cfg["color_jitter"]))
    # Safety net for images that pass `validate` but fail in the C++ decoder (see source.py)
    if ds.config.get_error_samples_mode() == ds.config.ErrorSamplesMode.RETURN:
        ds.config.set_error_samples_mode(ds.config.ErrorSamplesMode.REPLACE)
        logger.info("MindSpore error samples mode set to REPLACE (a sample the decoder rejects is "
                    "replaced by an earlier good one, image and label together)")
    dataset = dataset.map(operations=ops, input_columns="image", num_parallel_workers=workers)

    bad_log, batches_done = BadSampleLog(), [0]
    batch_aug = create_batch_transform(recipe, len(class_names), float(cfg["random_erasing"]),
                                       float(cfg["mixup_alpha"]), float(cfg["cutmix_alpha"]),
                                       float(cfg["mix_switch_prob"]), seed=seed * 1000003 + shard_id)

    def per_batch(image, label, meta, batch_info):  # MindSpore checks the signature
        images, labels = np.stack(image), np.stack(label).astype(np.int32)
        meta = np.stack(meta).reshape(-1, 2)
        for epoch, bad in meta[meta[:, 1] >= 0].tolist():
            bad_log.record(epoch, bad)
        if batch_aug is not None:  # a run-wide batch counter (one batch worker) seeds its randomness
            batches_done[0] += 1
            images, labels = batch_aug(images, labels, 0, batches_done[0] - 1)
        return images, labels

    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, per_batch_map=per_batch,
                            input_columns=["image", "label", "meta"], output_columns=["image", "label"],
                            num_parallel_workers=1)
    shard_samples = len(sampler)
    steps = shard_samples // batch_size if drop_remainder else math.ceil(shard_samples / batch_size)
    if steps == 0:
        raise DataError(f"split '{split}' has {shard_samples} samples per shard, fewer than one batch "
                        f"of {batch_size}; lower the batch size")
    info = DatasetInfo(split=split, num_classes=len(class_names), class_names=list(class_names),
                       num_samples=n, shard_samples=shard_samples,
                       shard_padding=shard_samples - len(range(shard_id, n, num_shards)),
                       steps_per_epoch=steps, soft_targets=recipe == "A2", description=description, source=source,
                       bad=bad_log, sampler=sampler, batch_counter=batches_done)
    logger.info("data %s: %d samples (%d on shard %d/%d), %d steps of %d, recipe %s; %s", split, n,
                shard_samples, shard_id, num_shards, steps, batch_size, recipe, description)
    return dataset, info

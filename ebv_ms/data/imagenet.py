"""ImageNet on disk: the standard folder layout and CSV lists, read by our tolerant source.

- Folders: ``<path>/train/<wnid>/*.JPEG`` and ``<path>/val/<wnid>/*.JPEG`` (split folder names as
  in ``layouts.SPLIT_ALIASES``, or ``data.split_dirs``). Class indices are the sorted union of the
  class folders of all splits (``ImageFolder``'s convention; an empty class folder keeps its
  index, with a warning). The files are listed here and read by ``FileReader`` through
  ``source.ImageSource``, like the archive: MindSpore's ``ImageFolderDataset`` would hand every
  file to the C++ decoder unchecked, and that decoder kills the process on some corrupt JPEGs.
- Lists: the authors' CSV files (``image_id,label``; any ``path label`` list works, see
  ``layouts.parse_list``) plus a root folder. The authors' lists hold paths like
  ``../train/n01440764/x.JPEG``; ``data.list_strip_prefix`` removes such a prefix before the path
  is joined to ``data.path``. Every listed file must exist (checked once, with a progress bar).
  These go through the same tolerant OpenCV source as the archive (``source.ImageSource``).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .layouts import IMAGE_EXTENSIONS, SPLIT_ALIASES, LayoutError, is_image, parse_list
from .readers import MAX_LIST_BYTES, BadMember, FileReader, read_regular

logger = logging.getLogger(__name__)

FOLDER_EXTENSIONS = sorted({e for x in IMAGE_EXTENSIONS for e in (x, x.upper())})


def find_split_dir(root: str, split: str, split_dirs: Mapping[str, str]) -> str:
    """The folder of ``split`` under ``root`` (override first, then the usual names)."""
    if split in split_dirs:
        d = os.path.join(root, str(split_dirs[split]))
        if not os.path.isdir(d):
            raise LayoutError(f"data.split_dirs.{split} = {split_dirs[split]!r}: no folder {d}")
        return d
    aliases = list(dict.fromkeys((split,) + SPLIT_ALIASES.get(split, ())))
    for alias in aliases:
        d = os.path.join(root, alias)
        if os.path.isdir(d):
            return d
    found = sorted(e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
    raise LayoutError(f"{root}: no folder for split '{split}' (looked for "
                      f"{', '.join(aliases)}; found folders: "
                      f"{found[:10] or 'none'}). Set data.split_dirs.{split} to its folder name, or "
                      f"data.split_lists.{split} to a CSV list")


def _class_folders(d: str) -> List[str]:
    return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))


def folder_classes(root: str, split_dirs: Mapping[str, str]) -> List[str]:
    """Sorted union of class folder names over every split folder that exists."""
    names = set()
    for split in ("train", "val", "test"):
        try:
            names.update(_class_folders(find_split_dir(root, split, split_dirs)))
        except LayoutError:
            pass
    for split in split_dirs:
        names.update(_class_folders(find_split_dir(root, split, split_dirs)))
    return sorted(names)


def folder_samples(root: str, split: str, split_dirs: Mapping[str, str],
                   class_names: Optional[Sequence[str]] = None):
    """``(FileReader, members, labels, class_names, split_dir)`` of a folder-per-class split.

    ``class_names`` (e.g. a resumed run's classes.json) fixes the classes and their order; a
    class folder that is not in it is an error, one of it without images a warning.
    """
    split_dir = find_split_dir(root, split, split_dirs)
    found = folder_classes(root, split_dirs)
    if class_names is not None:
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise LayoutError(f"{root}: class folders not in the expected class list ({len(unknown)}, "
                              f"e.g. {unknown[:5]}): the dataset changed since the class list "
                              f"(classes.json) was saved")
        found = list(class_names)
    if not found:
        raise LayoutError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>); "
                          f"is data.path the dataset's top folder?")
    paths: List[str] = []
    labels: List[np.ndarray] = []
    empty = []
    for k, cls in enumerate(found):
        d = os.path.join(split_dir, cls)
        files = sorted(e.name for e in os.scandir(d) if is_image(e.name) and e.is_file()) \
            if os.path.isdir(d) else []
        if not files:
            empty.append(cls)
        paths += [f"{cls}/{f}" for f in files]
        labels.append(np.full(len(files), k, np.int32))
    if not paths:
        raise LayoutError(f"{split_dir}: no images with extensions {IMAGE_EXTENSIONS} in its "
                          f"{len(found)} class folders")
    if empty:
        logger.warning("%d class folder(s) of %s have no images, e.g. %s: they keep their class "
                       "index and get no samples in this split", len(empty), split_dir, empty[:5])
    return (FileReader(split_dir, paths), np.arange(len(paths), dtype=np.int64),
            np.concatenate(labels), list(found), split_dir)


def folder_dataset(root: str, split: str, split_dirs: Mapping[str, str], sampler,
                   num_workers: int, decode: bool = True):
    """``(ImageFolderDataset, class_names, split_dir)``: MindSpore's own folder reader, no checks
    (the reference in benchmarks/data.py; training uses `folder_samples`)."""
    import mindspore.dataset as ds
    split_dir = find_split_dir(root, split, split_dirs)
    class_names = folder_classes(root, split_dirs)
    if not class_names:
        raise LayoutError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    indexing = {c: i for i, c in enumerate(class_names)}
    dataset = ds.ImageFolderDataset(split_dir, extensions=FOLDER_EXTENSIONS, class_indexing=indexing,
                                    decode=decode, sampler=sampler, num_parallel_workers=num_workers)
    return dataset, class_names, split_dir


def list_samples(root: str, list_file: str, columns=None, delimiter: Optional[str] = None,
                 strip_prefix: str = "", progress: bool = True,
                 num_classes: Optional[int] = None) -> Tuple[FileReader, np.ndarray, np.ndarray]:
    """``(FileReader, members, labels)`` for a CSV/txt list of (path, label) under ``root``."""
    path = list_file if os.path.isabs(list_file) or os.path.exists(list_file) else os.path.join(root, list_file)
    paths, labels = parse_list(_read_list(path), path, columns, delimiter, num_classes)
    if strip_prefix:
        paths = [p[len(strip_prefix):] if p.startswith(strip_prefix) else p for p in paths]
    paths = [p.lstrip("/") if not os.path.isabs(p) or not os.path.exists(p) else p for p in paths]
    it = paths
    if progress and len(paths) > 50_000:
        from tqdm import tqdm
        it = tqdm(paths, desc=f"checking {os.path.basename(path)}", unit="file", mininterval=1.0)
    missing = [p for p in it if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise LayoutError(f"list {path} names {len(missing)} of {len(paths)} files missing under "
                          f"{root} (e.g. {missing[:3]}); check data.path and data.list_strip_prefix")
    return FileReader(root, paths), np.arange(len(paths), dtype=np.int64), labels


def _read_list(path: str) -> str:
    try:
        return read_regular(path, MAX_LIST_BYTES).decode("utf-8-sig")
    except (OSError, BadMember, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise LayoutError(f"list file {path!r} cannot be read ({why}); data.split_lists entries "
                          f"are paths on disk (or relative to data.path)") from None


def lists_num_classes(root: str, split_lists: Mapping[str, str], columns, delimiter,
                      num_classes: Optional[int] = None) -> Dict[str, int]:
    """Largest label + 1 per list (cheap: parses only), so train and val agree on num_classes."""
    out = {}
    for split, lf in split_lists.items():
        path = lf if os.path.isabs(lf) or os.path.exists(lf) else os.path.join(root, lf)
        _, labels = parse_list(_read_list(path), path, columns, delimiter, num_classes)
        out[split] = int(labels.max()) + 1 if len(labels) else 0
    return out

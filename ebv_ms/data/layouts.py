"""Each split's samples and labels in an archive or a dataset folder: `folder_layout`
(``[top/]<split>/<class>/<image>``) and `list_layout` (files of path and label), fed an archive's
names by `detect_layout`, a folder's by `disk_layout`. Rules: docs/data.md, "Layouts recognised"."""
from __future__ import annotations

import csv
import logging
import os
import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from ..errors import EBVMSError
from .readers import MAX_LIST_BYTES, BadMember, FileReader, printable, read_regular

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LIST_EXTENSIONS = (".txt", ".csv", ".tsv", ".lst")
SPLIT_ALIASES: Dict[str, Tuple[str, ...]] = {
    "train": ("train", "training"), "val": ("val", "validation", "valid", "test"), "test": ("test",)}
# words in a list file's name that make it a split's list ("test" is val's only without a val)
_LIST_WORDS = {"train": {"train", "training"}, "val": {"val", "validation", "valid"}, "test": {"test"}}
_PATH_COLUMNS = ("image_id", "image", "path", "file", "filename", "file_name", "img", "name")
_LABEL_COLUMNS = ("label", "class", "target", "class_id", "label_id", "category")
MAX_LABELS = 1 << 22  # 4,194,304 classes: labels at or above this are refused as corrupt
_ASCII_INT = re.compile(r"\s*[-+]?[0-9]+\s*")


class LayoutError(EBVMSError, ValueError):
    """The archive's layout is not recognised or a list is wrong; the message says what to set."""


@dataclass
class SplitSamples:
    members: np.ndarray  # int64 member numbers (zip index entries or FileReader paths)
    labels: np.ndarray   # int32 class indices
    origin: str          # e.g. "folder 10w/train" or "list 10w/train.txt"
    folder: str = ""     # a folder split's folder ("10w/train/"): names on disk are shown below it


@dataclass
class Layout:
    kind: str                         # "folders" | "lists"
    class_names: List[str]
    splits: Dict[str, SplitSamples]
    root: str = ""

    def split(self, name: str) -> SplitSamples:
        """The samples of split ``name`` (aliases allowed), or a LayoutError naming what exists."""
        aliases = list(dict.fromkeys((name,) + SPLIT_ALIASES.get(name, ())))
        if found := [self.splits[a] for a in aliases if a in self.splits]:
            return found[0]
        raise LayoutError(f"split '{name}' not found (looked for {', '.join(aliases)}); "
                          f"this data has: {', '.join(f'{k} ({v.origin})' for k, v in self.splits.items()) or 'none'}. "
                          f"Set data.split_dirs.{name} to its folder, or data.split_lists.{name} to a list file")

    def describe(self) -> str:
        top = f", top folder '{printable(self.root)}'" if self.root else ""
        return "\n".join([f"layout {self.kind}{top}, {len(self.class_names)} classes"] + [
            f"  {printable(k)}: {len(v.members)} samples from {printable(v.origin)}" for k, v in self.splits.items()])


def is_image(name: str) -> bool:
    base = name.rpartition("/")[2]
    return (base.lower().endswith(IMAGE_EXTENSIONS) and not base.startswith(".")
            and not name.startswith("__MACOSX/"))


# ----------------------------------------------------------------------------------------- folders
def folder_layout(names: Sequence[str], is_img: np.ndarray, root: Optional[str],
                  split_dirs: Mapping[str, str],
                  class_names: Optional[Sequence[str]] = None) -> Optional[Layout]:
    """Images grouped by (split folder, class folder). A class folder without images keeps its
    index (with a warning); ``class_names`` (a resumed run's classes.json) fixes the class list."""
    wanted = _split_folders(split_dirs)
    aliases = SPLIT_ALIASES["train"] + SPLIT_ALIASES["val"]
    groups: Dict[Tuple[str, str], List[int]] = defaultdict(list)  # (split dir, class) -> ids
    folders = set()  # (split dir, class) of every class folder, with images or not
    for m, name in enumerate(names):
        d, sep, c = name.rpartition("/")[0].rpartition("/")  # [top/]split folder, class folder
        if not sep or (root is not None and posixpath.dirname(d) != root.strip("/")) or (
                d not in wanted if wanted else posixpath.basename(d).lower() not in aliases):
            continue
        if is_img[m]:
            groups[(d, c)].append(m)
        elif not name.startswith("__MACOSX/") and c and not c.startswith("."):
            folders.add((d, c))
    if not groups:
        return None
    prefix = None
    if wanted:
        split_of = {d: wanted[d] for d, _ in groups}
    else:  # several candidate tops (e.g. a stray copy): keep the one holding most images
        per_prefix = Counter()
        for (d, _), ids in groups.items():
            per_prefix[posixpath.dirname(d)] += len(ids)
        prefix = per_prefix.most_common(1)[0][0]
        split_of = {d: posixpath.basename(d) for d, _ in groups if posixpath.dirname(d) == prefix}
    found = {c for (d, c) in set(groups) | folders if d in split_of}
    if unknown := sorted(found - set(found if class_names is None else class_names)):
        raise LayoutError(f"the data has class folders that are not in the expected class list "
                          f"({len(unknown)}, e.g. {unknown[:5]}): the dataset changed since the "
                          f"class list (classes.json) was saved")
    class_names = sorted(found) if class_names is None else list(class_names)
    class_index = {c: i for i, c in enumerate(class_names)}
    splits: Dict[str, SplitSamples] = {}
    per_split = {d: {c for (e, c) in groups if e == d} for d in split_of}
    for d, folder in sorted(split_of.items()):
        classes = sorted(per_split[d])
        ids = [sorted(groups[(d, c)], key=lambda m: names[m]) for c in classes]
        labels = np.repeat(np.array([class_index[c] for c in classes], np.int32), [len(i) for i in ids])
        key = folder if wanted else _split_key(folder, split_of.values())
        splits[key] = SplitSamples(np.fromiter(chain.from_iterable(ids), np.int64), labels, f"folder {d}/", d + "/")
        if empty := sorted(c for (e, c) in folders if e == d and (e, c) not in groups):
            logger.warning("%d class folder(s) in %s/ have no images, e.g. %s: they keep their "
                           "class index (%s) and get no samples in this split", len(empty),
                           d, empty[:5], ", ".join(str(class_index[c]) for c in empty[:5]))
    missing = [c for c in class_names if not any((d, c) in groups for d in split_of)]
    if missing and len(missing) < len(class_names):
        logger.warning("%d class(es) have no images in any split, e.g. %s (kept, with their "
                       "index, so the other classes keep theirs)", len(missing), missing[:5])
    if len({frozenset(s) for s in per_split.values()}) > 1:
        logger.warning("splits have different class folders (%s); class indices come from their sorted union",
                       ", ".join(f"{d}: {len(s)}" for d, s in per_split.items()))
    return Layout("folders", class_names, splits, root=prefix or "")


def _bad_component(name: str) -> str:
    """What makes a member name ambiguous as a path ('' if nothing): a '..', '.' or empty
    component, or a backslash (a Windows separator: 'a\\b' is one name here, two folders there)."""
    for part in name.split("/"):
        if part in ("..", "."):
            return f"a {part!r} path component"
        if part == "":
            return "an empty path component"
    return "a backslash" if "\\" in name else ""


def _split_folders(split_dirs: Mapping[str, str]) -> Dict[str, str]:
    """{folder: split} of data.split_dirs, folders inside the data, checked before any walk ('/'
    and '..' took a dataset folder's walk out of data.path; in an archive they matched nothing)."""
    for split, folder in split_dirs.items():
        if bad := _bad_component(str(folder).rstrip("/")):  # '/x': an empty first component
            raise LayoutError(f"data.split_dirs.{split} = {str(folder)[:200]!r} has {bad}: a split "
                              f"folder is a relative path inside data.path, e.g. top/train")
    return {str(folder).rstrip("/"): str(split) for split, folder in split_dirs.items()}


def _split_key(folder: str, all_folders) -> str:
    f = folder.lower()
    if f == "test" and any(x.lower() in _LIST_WORDS["val"] for x in all_folders):
        return "test"
    return next((s for s in ("train", "val") if f in SPLIT_ALIASES[s]), folder)


# ------------------------------------------------------------------------------------------- lists
def parse_list(text: str, source: str, columns: Optional[Sequence] = None,
               delimiter: Optional[str] = None,
               num_classes: Optional[int] = None) -> Tuple[List[str], np.ndarray]:
    """(paths, int labels) of a list file's text; LayoutError names the bad line. Labels below
    ``num_classes`` and `MAX_LABELS`: a corrupt one must not make millions of classes or wrap int32."""
    numbered = [(k + 1, ln) for k, ln in enumerate(text.splitlines())
                if ln.strip() and not ln.lstrip().startswith("#")]
    if not numbered:
        raise LayoutError(f"list {source} is empty")
    lines = [ln for _, ln in numbered]
    if delimiter is None:
        first = lines[min(1, len(lines) - 1)]
        delimiter = "," if "," in first else ("\t" if "\t" in first else None)
    rows = [ln.split() for ln in lines] if delimiter is None else list(csv.reader(lines, delimiter=delimiter))
    if len(rows) != len(numbered):  # a quoted field spanning lines: line numbers approximate
        numbered = [(k + 1, "") for k in range(len(rows))]
    path_col, label_col = (0, 1) if columns is None else columns  # (the config checked there are two)
    first, start = rows[0], 0
    if (isinstance(path_col, str) or isinstance(label_col, str)
            or (isinstance(label_col, int) and len(first) > label_col and not _is_int(first[label_col]))
            or any(c.strip().lower() in _LABEL_COLUMNS for c in first)):
        header, start = [c.strip() for c in first], 1
        lower = [h.lower() for h in header]
        if columns is None:
            path_col = next((lower.index(c) for c in _PATH_COLUMNS if c in lower), 0)
            label_col = next((lower.index(c) for c in _LABEL_COLUMNS if c in lower), 1)
        for c in (path_col, label_col):
            if not isinstance(c, int) and str(c).lower() not in lower:
                raise LayoutError(f"list {source} has no column {c!r}; its header is {header}")
        path_col, label_col = (c if isinstance(c, int) else lower.index(str(c).lower())
                               for c in (path_col, label_col))
    if start == len(rows):
        raise LayoutError(f"list {source} is empty (a header only)")
    limit = MAX_LABELS if num_classes is None else min(int(num_classes), MAX_LABELS)
    paths: List[str] = []
    labels = np.empty(len(rows) - start, np.int32)
    for i in range(start, len(rows)):
        row, line = rows[i], numbered[i][0]
        try:
            p = row[path_col].strip()
            if not _ASCII_INT.fullmatch(row[label_col]):  # int() also reads '٣' and '0_3' as 3
                raise ValueError(row[label_col])
            label = int(row[label_col])
        except (IndexError, ValueError):
            raise LayoutError(f"list {source}, line {line}: expected a path and an ASCII "
                              f"decimal integer label in columns {path_col} and {label_col}, got {str(row)[:200]}; "
                              f"set data.list_columns / data.list_delimiter") from None
        if label < 0:
            raise LayoutError(f"list {source}, line {line}: negative label {label}")
        if label >= limit:
            why = (f"outside [0, {limit}) = model.num_classes" if num_classes is not None
                   and limit == int(num_classes) else
                   f"outside [0, {MAX_LABELS}): more classes than supported; is column "
                   f"{label_col} the label?")
            raise LayoutError(f"list {source}, line {line}: label {label} {why}")
        labels[i - start] = label
        paths.append(p)
    return paths, labels


def _is_int(s: str) -> bool:  # header detection: anything int() reads is a label, not a header
    try:
        int(s)
        return True
    except ValueError:
        return False


def list_layout(lists: Sequence[Tuple[str, str, Callable[[], str]]], lookup: Callable[[str], int],
                prefixes: Callable[[str], Sequence[str]], missing_where: str, strict: bool, columns=None,
                delimiter: Optional[str] = None, strip_prefix: Optional[str] = "",
                num_classes: Optional[int] = None,
                class_names: Optional[Sequence[str]] = None, root: str = "") -> Optional[Layout]:
    """The ``lists`` layout of (split, list name, text reader) ``lists``; each path is looked up
    under the one of ``prefixes(list name)`` that finds most. Not ``strict`` (auto-detection): a
    list that cannot be parsed or names none of the files is ignored, with a warning."""
    splits: Dict[str, SplitSamples] = {}
    for split, lname, text in lists:
        try:
            paths, labels = parse_list(text(), lname, columns, delimiter, num_classes)
        except (LayoutError, UnicodeDecodeError, BadMember) as exc:
            if strict or "label" in str(exc) and "outside" in str(exc):
                raise LayoutError(str(exc)) from None
            logger.warning("ignoring %s as a list file: %s", lname, exc)
            continue
        paths = [p.removeprefix(str(strip_prefix or "")) for p in paths]
        clean = [re.sub(r"^(\./)*", "", p).lstrip("/") for p in paths]
        # under the prefix that finds most of the first 200
        best = max(dict.fromkeys(prefixes(lname)),
                   key=lambda pre: sum(lookup(pre + p) >= 0 for p in clean[:200]))
        members = np.fromiter((lookup(best + p) for p in clean), np.int64, len(paths))
        missing = np.flatnonzero(members < 0)
        if len(missing):
            if not strict and len(missing) == len(paths):
                logger.warning("ignoring %s as a list file: none of its paths exist", lname)
                continue
            raise LayoutError(f"list {lname} names {len(missing)} of {len(paths)} files {missing_where} "
                              f"(e.g. {', '.join(repr(paths[i]) for i in missing[:5])}); fix the list or set data.root / data.split_lists / "
                              f"data.list_strip_prefix")
        splits[split] = SplitSamples(members, labels, f"list {lname}")
    if not splits:
        return None
    n = int(max(int(s.labels.max()) for s in splits.values())) + 1
    names_out = list(class_names) if class_names is not None and len(class_names) >= n \
        else [str(i) for i in range(n)]
    return Layout("lists", names_out, splits, root)


# ------------------------------------------------------------------------------------------ drivers
def detect_layout(names: Sequence[str], read: Callable[[int], bytes], layout: str = "auto",
                  root: Optional[str] = None, split_dirs: Optional[Mapping[str, str]] = None,
                  split_lists: Optional[Mapping[str, str]] = None, list_columns=None,
                  list_delimiter: Optional[str] = None, where: str = "archive",
                  num_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
                  list_strip_prefix: Optional[str] = "") -> Layout:
    """The layout of an archive from its member names (``read(member)`` reads list files), or a
    LayoutError saying what was found; also for image names with ``..`` / ``.`` / empty parts."""
    table = {n: i for i, n in enumerate(names)}
    lookup = lambda name: table.get(name, -1)  # noqa: E731
    is_img = np.fromiter(map(is_image, names), bool, len(names))
    for i in np.flatnonzero(is_img).tolist():
        if bad := _bad_component(names[i]):
            raise LayoutError(f"{where}: member {names[i][:200]!r} has {bad}: its folders cannot "
                              f"be named classes safely (the archive is malformed or hostile); "
                              f"remove or rename that member")
    layout = "lists" if split_lists else "folders" if split_dirs else layout
    result = None
    if layout in ("auto", "lists"):
        tops = ([root] if root else []) + sorted({n.split("/")[0] for n in names[:1000] if "/" in n})
        tops = [""] + [t.strip("/") + "/" for t in tops if t]  # after the list's folder: root, tops
        prefixes = lambda n: [posixpath.dirname(n) + "/" if "/" in n else ""] + tops  # noqa: E731
        if split_lists:
            for split, lname in split_lists.items():
                if lookup(str(lname).strip("/")) < 0:
                    raise LayoutError(f"data.split_lists.{split} = {lname!r} is not a member of the archive")
            chosen = {str(split): lookup(str(lname).strip("/")) for split, lname in split_lists.items()}
        else:  # by name: the shortest path when several
            found = defaultdict(list)
            for m, name in enumerate(names):
                base = posixpath.basename(name).lower()
                if base.endswith(LIST_EXTENSIONS) and not name.startswith("__MACOSX/") and not base.startswith("."):
                    words = set(base.rsplit(".", 1)[0].replace("-", "_").replace(".", "_").split("_"))
                    if split := next((s for s, w in _LIST_WORDS.items() if words & w), None):
                        found[split].append(m)
            chosen = {s: min(c, key=lambda m: (names[m].count("/"), names[m])) for s, c in found.items()}
        lists = [(s, names[m], lambda m=m: bytes(read(m)).decode("utf-8-sig"))
                 for s, m in sorted(chosen.items())]
        result = list_layout(lists, lookup, prefixes, "that are not in the archive", layout == "lists",
                             list_columns, list_delimiter, list_strip_prefix, num_classes, class_names,
                             root or "")
    if layout == "auto" and result is not None and folder_layout(names, is_img, root, {}) is not None:
        logger.warning("%s holds both list files and class folders; using the lists (%s). Set "
                       "data.layout: folders to use the folders instead", where,
                       ", ".join(v.origin for v in result.splits.values()))
    if result is None and layout in ("auto", "folders"):
        result = folder_layout(names, is_img, root, split_dirs or {}, class_names)
    if result is None:
        raise LayoutError(_not_recognised(names, where, layout))
    logger.info("%s: %s", where, result.describe().replace("\n", ";"))
    return result


def disk_layout(root: str, cfg: Mapping, lists: bool, num_classes: Optional[int] = None,
                class_names: Optional[Sequence[str]] = None) -> Tuple[FileReader, Layout]:
    """The layout of a dataset folder and the reader of its files: class folders, or list files
    (absolute, or relative to the working folder or ``root``) naming images under ``root``."""
    if lists:
        if not cfg["split_lists"]:
            raise LayoutError("data.format: list needs data.split_lists ({split: list file})")
        ids, found = {}, []  # listed name -> (number, path under the root or absolute)

        def lookup(name: str) -> int:  # a file under the root (or absolute) gets the next number
            if name not in ids and (path := next((p for p in (name, "/" + name)
                                                  if os.path.isfile(os.path.join(root, p))), None)):
                ids[name] = (len(ids), path)
            return ids[name][0] if name in ids else -1
        for split, lf in cfg["split_lists"].items():
            path = lf if os.path.isabs(lf) or os.path.exists(lf) else os.path.join(root, lf)
            found.append((str(split), path, lambda path=path: _read_list(path)))
        layout = list_layout(found, lookup, lambda _: [""], f"missing under {root}", True, cfg["list_columns"],
                             cfg["list_delimiter"], cfg["list_strip_prefix"], num_classes, class_names)
        return FileReader(root, [path for _, path in ids.values()]), layout
    names = _walk(root, cfg["split_dirs"])
    is_img = np.fromiter(map(is_image, names), bool, len(names))
    layout = folder_layout(names, is_img, None, cfg["split_dirs"], class_names)
    if layout is None:
        raise LayoutError(_not_recognised(names, root, "folders"))
    return FileReader(root, names), layout


def _read_list(path: str) -> str:
    try:
        return read_regular(path, MAX_LIST_BYTES).decode("utf-8-sig")
    except (OSError, BadMember, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise LayoutError(f"list file {path!r} cannot be read ({why}); data.split_lists entries "
                          f"are paths on disk (or relative to data.path)") from None


def _walk(root: str, split_dirs: Mapping[str, str]) -> List[str]:
    """Names under ``root`` as in an archive (folders end with '/') down to the images: regular
    files and folders only (a FIFO or a link to a device is not listed)."""
    out: List[str] = []

    def walk(rel: str, depth: int) -> None:  # the folder rel ('' the root), then depth levels below
        out.extend([rel] if rel else [])
        try:  # (in any order: folder_layout sorts)
            entries = list(os.scandir(os.path.join(root, rel))) if depth else []
        except (NotADirectoryError, FileNotFoundError):
            return
        for e in entries:
            if e.is_dir():
                walk(rel + e.name + "/", depth - 1)
            elif e.is_file():
                out.append(rel + e.name)

    for top in [f + "/" for f in _split_folders(split_dirs)] if split_dirs else [""]:
        walk(top, 2 if split_dirs else 3)
    return out


def _not_recognised(names: Sequence[str], where: str, layout: str) -> str:
    tops = Counter(n.split("/")[0] + ("/" if "/" in n else "") for n in names)
    top_txt = ", ".join(f"{k} ({v} entries)" for k, v in tops.most_common(8)) or "nothing"
    lists = [n for n in names if n.lower().endswith(LIST_EXTENSIONS)][:5]
    images = [n for n in names if is_image(n)]
    depth = Counter(n.count("/") for n in images)
    return (f"{where}: no {'known layout' if layout == 'auto' else layout + ' layout'} recognised. "
            f"Found {len(names)} entries, {len(images)} images"
            + (f" (folder depths: {dict(sorted(depth.items()))}; e.g. {images[:3]})" if images else "")
            + f"; top level: {top_txt}"
            + (f"; list-like files: {lists}" if lists else "")
            + ". Expected [top/]train|val/<class>/<image> or list files (path,label) named after "
              "the split. Set data.split_dirs (e.g. {train: top/train, val: top/val}) or "
              "data.split_lists (e.g. {train: train.txt}) in the YAML to say where the data is.")

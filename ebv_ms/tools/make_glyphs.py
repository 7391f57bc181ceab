"""A many-class real-image set: printed Han characters rendered from Debian's CJK typefaces.

``python -m ebv_ms.tools.make_glyphs --out DIR [--classes 1000]`` writes ``DIR/glyphs.zip``
(``glyphs/train|val/<class>/<face>_<k>.jpg`` and ``glyphs/manifest.json``). Classes are the first
N GB2312 level-1 characters in code order (folders ``0000``...); validation is whole typefaces
held out from training (``--val-faces``), rendered plainly, training samples augmented. Every
sample's randomness is drawn from ``(seed, class, face, k)``: the archive is byte-identical for
the same arguments however many processes render it."""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import sys
from collections import namedtuple
from contextlib import nullcontext
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import EBVMSError, run_cli
from .make_synthetic import encode, write_zip

GB2312_LEVEL1 = 3755
GB2312_ALL = 6763


class GlyphError(EBVMSError, ValueError):
    """A request the archive cannot be made for (bad arguments, a font that does not fit)."""


# One typeface: the Debian package that ships it, its file and family name inside the file.
Face = namedtuple("Face", "name package path family")


_T = "/usr/share/fonts/truetype"
_O = "/usr/share/fonts/opentype"
FACES: Dict[str, Face] = {f.name: f for f in [
    Face("wqy-zenhei", "fonts-wqy-zenhei", f"{_T}/wqy/wqy-zenhei.ttc", "WenQuanYi Zen Hei"),
    Face("wqy-microhei", "fonts-wqy-microhei", f"{_T}/wqy/wqy-microhei.ttc", "WenQuanYi Micro Hei"),
    Face("arphic-ukai", "fonts-arphic-ukai", f"{_T}/arphic/ukai.ttc", "AR PL UKai CN"),
    Face("arphic-uming", "fonts-arphic-uming", f"{_T}/arphic/uming.ttc", "AR PL UMing CN"),
    Face("noto-sans-sc", "fonts-noto-cjk", f"{_O}/noto/NotoSansCJK-Regular.ttc", "Noto Sans CJK SC"),
    Face("noto-sans-sc-bold", "fonts-noto-cjk", f"{_O}/noto/NotoSansCJK-Bold.ttc", "Noto Sans CJK SC"),
    Face("noto-sans-jp", "fonts-noto-cjk", f"{_O}/noto/NotoSansCJK-Regular.ttc", "Noto Sans CJK JP"),
    Face("noto-serif-sc", "fonts-noto-cjk", f"{_O}/noto/NotoSerifCJK-Regular.ttc", "Noto Serif CJK SC"),
    Face("noto-serif-sc-bold", "fonts-noto-cjk", f"{_O}/noto/NotoSerifCJK-Bold.ttc", "Noto Serif CJK SC"),
    Face("noto-serif-jp", "fonts-noto-cjk", f"{_O}/noto/NotoSerifCJK-Regular.ttc", "Noto Serif CJK JP"),
    Face("ipa-gothic", "fonts-ipafont-gothic", f"{_O}/ipafont-gothic/ipag.ttf", "IPAGothic"),
    Face("ipa-mincho", "fonts-ipafont-mincho", f"{_O}/ipafont-mincho/ipam.ttf", "IPAMincho"),
]}
# A Ming/Song face held out: training has other Ming faces (Noto Serif, IPA Mincho), sans faces
# and a Kai (brush) face, none of them this design.
DEFAULT_VAL_FACES = ("arphic-uming",)


def gb2312_chars(n: int = GB2312_LEVEL1, level2: bool = False) -> List[str]:
    """The first ``n`` GB2312 Han characters in code order: Python's codec over rows 0xB0-0xD7
    (level 1; 0xD8-0xF7 level 2) x cols 0xA1-0xFE, skipping the unassigned slots."""
    rows = range(0xB0, (0xF7 if level2 else 0xD7) + 1)
    codes = (bytes((r, c)).decode("gb2312", "ignore") for r in rows for c in range(0xA1, 0xFF))
    chars = [ch for ch in codes if ch]
    total = GB2312_ALL if level2 else GB2312_LEVEL1
    if len(chars) != total:  # the codec is the source of truth; a different count is a bug
        raise RuntimeError(f"GB2312 codec gave {len(chars)} characters, expected {total}")
    if not 10 <= n <= total:
        raise GlyphError(f"--classes must be between 10 and {total}"
                         + ("" if level2 else " (all 6,763 of GB2312 with --level2)") + f", got {n}")
    return chars[:n]


def check_faces(names: Sequence[str]) -> List[Face]:
    """The Face records for ``names``; a clear error for unknown names or uninstalled fonts."""
    unknown = [n for n in names if n not in FACES]
    if unknown:
        raise GlyphError(f"unknown typeface(s) {', '.join(unknown)}; known: {', '.join(FACES)}")
    faces = [FACES[n] for n in names]
    missing = [f for f in faces if not os.path.isfile(f.path)]
    if missing:
        raise FileNotFoundError("typeface file(s) not installed: " + ", ".join(
            f"{f.name} ({f.path})" for f in missing) + ". Install them with: sudo apt-get install -y "
            + " ".join(sorted({f.package for f in missing})))
    return faces


def _face_index(face: Face) -> int:
    """Index of ``face.family`` inside its font file (.ttc collections hold several faces)."""
    for i in itertools.count():
        try:
            if ImageFont.truetype(face.path, 16, index=i).getname()[0] == face.family:
                return i
        except OSError:
            break
    raise GlyphError(f"{face.path} holds no face named {face.family!r} ({i} faces); is "
                     f"{face.package} a different version? (sudo apt-get install -y {face.package})")


def _coverage(face: Face, index: int, chars: Sequence[str]) -> np.ndarray:
    """bool per char: the face's cmap has a glyph for it (else FreeType draws .notdef)."""
    from fontTools.ttLib import TTFont
    with TTFont(face.path, fontNumber=index, lazy=True) as tt:
        cmap = tt.getBestCmap() or {}
    return np.array([ord(c) in cmap for c in chars], bool)


_RENDER_SCALE = 2  # draw at 2x the output side, then area-downsample: smooth, unaliased strokes


def _ink(font, char: str, canvas: int, stroke: int) -> np.ndarray:
    """The glyph as float32 coverage in [0, 1], its ink box centred on a canvas x canvas."""
    img = Image.new("L", (canvas * 2, canvas * 2), 0)
    ImageDraw.Draw(img).text((canvas, canvas), char, fill=255, font=font, anchor="mm",
                             stroke_width=stroke, stroke_fill=255)
    a = np.asarray(img, np.float32) / 255.0
    x, y, w, h = cv2.boundingRect((a > 0.5).astype(np.uint8))
    if w == 0:
        return np.zeros((canvas, canvas), np.float32)
    m = np.float32([[1, 0, (canvas - w + 1) / 2.0 - x], [0, 1, (canvas - h + 1) / 2.0 - y]])
    return cv2.warpAffine(a, m, (canvas, canvas), flags=cv2.INTER_LINEAR, borderValue=0)


def render_sample(font, char: str, size: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    """One uint8 RGB (size, size, 3) image: dark ink on a light ground. ``rng=None``: plain
    rendering (validation); else random stroke weight, affine, blur, noise and contrast."""
    canvas = size * _RENDER_SCALE
    # stroke weight: thin (erode), as drawn, or thickened by FreeType's stroker
    k = 0 if rng is None else int(rng.integers(-1, 2))
    a = _ink(font, char, canvas, max(k, 0))
    if k < 0:
        thin = cv2.erode(a, np.ones((2, 2), np.uint8))
        if thin.sum() > 0.6 * a.sum():  # only where the face's strokes survive thinning
            a = thin
    if rng is not None:
        ang, sc, sh = np.deg2rad(rng.uniform(-8, 8)), rng.uniform(0.8, 1.05), rng.uniform(-0.15, 0.15)
        tx, ty = rng.uniform(-0.07, 0.07, size=2) * canvas
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        lin = sc * rot @ np.array([[1.0, sh], [0.0, 1.0]])
        c = np.array([canvas / 2.0, canvas / 2.0])
        m = np.hstack([lin, (c - lin @ c + [tx, ty])[:, None]]).astype(np.float32)
        a = cv2.warpAffine(a, m, (canvas, canvas), flags=cv2.INTER_LINEAR, borderValue=0)
    a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
    if rng is None:
        g = 255.0 * (1.0 - a)
    else:
        if rng.random() < 0.5:
            a = cv2.GaussianBlur(a, (0, 0), rng.uniform(0.3, 1.0))
        bg = rng.uniform(170, 255)
        fg = rng.uniform(0, bg - 90)
        g = bg + (fg - bg) * a + rng.normal(0, rng.uniform(0, 12), a.shape)
    g = np.clip(np.rint(g), 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


_W: dict = {}


def _init_worker(faces: List[Tuple[str, str, int]], size: int) -> None:
    # the em square fills ~80% of the canvas: room for the affine's scale-up and translation
    px = int(round(0.8 * size * _RENDER_SCALE))
    _W.update(size=size, fonts={n: ImageFont.truetype(path, px, index=i) for n, path, i in faces})


def _render_class(job) -> List[Tuple[str, bytes]]:
    """All members of one class: (member name, JPEG bytes), in a fixed order."""
    ci, char, train_plan, val_plan, seed, quality = job
    out = []
    for split, plan, augment_from in (("train", train_plan, 0), ("val", val_plan, 1)):
        for fi, (face, k) in plan:
            rng = (np.random.default_rng([seed, ci, fi, k]) if k >= augment_from else None)
            img = render_sample(_W["fonts"][face], char, _W["size"], rng)
            out.append((f"glyphs/{split}/{ci:04d}/{face}_{k:03d}.jpg", encode(img, ".jpg", quality)))
    return out


def _plans(ci: int, cover: Dict[str, np.ndarray], train_faces: Sequence[str], val_faces: Sequence[str],
           per_class: int, val_per_class: int, face_ids: Dict[str, int]):
    """(face id, (face, sample number)) pairs of class ``ci``: ``per_class`` training samples go
    round-robin over the training faces with the glyph, from a class-dependent one."""
    have = [f for f in train_faces if cover[f][ci]]
    picks = [have[(ci + j) % len(have)] for j in range(per_class)]
    train = [(face_ids[f], (f, picks[:j].count(f))) for j, f in enumerate(picks)]
    val = [(face_ids[f], (f, k)) for f in val_faces if cover[f][ci] for k in range(val_per_class)]
    return train, val


def write_glyph_archive(out: str, num_classes: int = 1000, train_faces: Optional[Sequence[str]] = None,
                        val_faces: Sequence[str] = DEFAULT_VAL_FACES, per_class: int = 24,
                        val_per_class: int = 1, size: int = 32, seed: int = 0, quality: int = 90,
                        level2: bool = False, workers: int = 2, name: str = "glyphs.zip",
                        progress: bool = True) -> Tuple[str, dict]:
    """Render the archive; returns (its path, the manifest dict also stored inside it)."""
    val_faces = list(val_faces)
    train_faces = [f for f in FACES if f not in val_faces] if train_faces is None else list(train_faces)
    both = ", ".join(sorted(set(train_faces) & set(val_faces)))
    for bad, why in ((not val_faces, "hold out at least one typeface for validation (--val-faces)"),
                     (not train_faces, "no training typefaces left (--train-faces)"),
                     (both, f"typeface(s) {both} are in both --train-faces and --val-faces; the "
                            "validation typefaces must be unseen in training"),
                     (per_class < 1 or val_per_class < 1, "--per-class and --val-per-class must be >= 1"),
                     (size < 8, f"--size must be >= 8 pixels, got {size}")):
        if bad:
            raise GlyphError(why)
    chars = gb2312_chars(num_classes, level2=level2)
    faces = check_faces(train_faces + val_faces)
    index = {f.name: _face_index(f) for f in faces}
    cover = {f.name: _coverage(f, index[f.name], chars) for f in faces}
    untrained = [i for i in range(len(chars)) if not any(cover[f][i] for f in train_faces)]
    if untrained:
        show = ", ".join(f"{i:04d} {chars[i]}" for i in untrained[:10])
        raise GlyphError(f"{len(untrained)} class(es) have no glyph in any training typeface "
                         f"(e.g. {show}); add a typeface that covers them to --train-faces "
                         f"(wqy-zenhei covers all of GB2312)")
    face_ids = {f.name: i for i, f in enumerate(faces)}
    jobs = [(ci, ch, *_plans(ci, cover, train_faces, val_faces, per_class, val_per_class, face_ids),
             seed, quality) for ci, ch in enumerate(chars)]
    manifest = {
        "format": "ebv_ms.tools.make_glyphs/1",
        "classes": chars,
        "class_folders": [f"{i:04d}" for i in range(len(chars))],
        "train_faces": train_faces, "val_faces": val_faces,
        "faces": {f.name: {"package": f.package, "file": f.path, "family": f.family,
                           "index": index[f.name], "split": "val" if f.name in val_faces else "train",
                           "missing_glyphs": int((~cover[f.name]).sum()),
                           "missing_examples": [chars[i] for i in np.flatnonzero(~cover[f.name])[:20]]}
                  for f in faces},
        "settings": {"num_classes": len(chars), "per_class": per_class, "val_per_class": val_per_class,
                     "size": size, "seed": seed, "quality": quality, "level2": level2},
        "samples": {"train": sum(len(j[2]) for j in jobs), "val": sum(len(j[3]) for j in jobs)},
        "val_classes_missing": [i for i, j in enumerate(jobs) if not j[3]],
    }
    worker_faces = [(f.name, f.path, index[f.name]) for f in faces]

    def members() -> Iterator[Tuple[str, bytes]]:
        from ebv_ms.progress import progress_bar
        if workers <= 1:
            _init_worker(worker_faces, size)
        ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
        with ctx.Pool(workers, _init_worker, (worker_faces, size)) if workers > 1 else nullcontext() as pool:
            chunks = pool.imap(_render_class, jobs, chunksize=8) if pool else map(_render_class, jobs)
            for chunk in progress_bar(chunks, total=len(jobs), unit="class", desc="glyphs",
                                      disable=not progress, file=sys.stderr):  # imap keeps the order
                yield from chunk
        yield "glyphs/manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")

    return write_zip(os.path.join(out, name), members()), manifest


def summary(path: str, manifest: dict) -> str:
    s = manifest["settings"]
    lines = [f"wrote {path}: {s['num_classes']} classes, {manifest['samples']['train']} train / "
             f"{manifest['samples']['val']} val JPEGs ({s['size']}x{s['size']})"]
    for name, f in manifest["faces"].items():
        lines.append(f"  {f['split']:5s} {name:20s} {f['family']:22s} missing glyphs: {f['missing_glyphs']}"
                     + (f" (skipped, e.g. {''.join(f['missing_examples'][:8])})" if f["missing_glyphs"] else ""))
    if manifest["val_classes_missing"]:
        lines.append(f"  {len(manifest['val_classes_missing'])} class(es) have no validation image "
                     f"(no held-out typeface has the glyph)")
    lines.append(f"use it with: data.path={path} model.num_classes={s['num_classes']} "
                 f"data.image_size={s['size']} data.recipe=eval")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="typefaces: " + ", ".join(f"{n} ({f.package})" for n, f in FACES.items()))
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--classes", type=int, default=1000, help="first N GB2312 level-1 characters "
                    "(10..3755; default 1000)")
    ap.add_argument("--level2", action="store_true", help="allow N up to 6763 (GB2312 levels 1+2)")
    ap.add_argument("--train-faces", help="comma-separated typefaces for train/ (default: all but "
                    "--val-faces)")
    ap.add_argument("--val-faces", default=",".join(DEFAULT_VAL_FACES),
                    help=f"comma-separated typefaces held out for val/ (default {','.join(DEFAULT_VAL_FACES)})")
    ap.add_argument("--per-class", type=int, default=24, help="training images per class (default 24)")
    ap.add_argument("--val-per-class", type=int, default=1,
                    help="validation images per class and held-out face; the first is plain (default 1)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    ap.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    ap.add_argument("--name", default="glyphs.zip")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731

    def run() -> int:
        print(summary(*write_glyph_archive(
            a.out, a.classes, split(a.train_faces) if a.train_faces else None, split(a.val_faces),
            a.per_class, a.val_per_class, a.size, a.seed, a.quality, a.level2, a.workers, a.name,
            progress=not a.no_progress)))
        return 0
    return run_cli("ebv_ms.tools.make_glyphs", run)


if __name__ == "__main__":
    sys.exit(main())

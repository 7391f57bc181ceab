"""Random-access ``GeneratorDataset`` source: read and check encoded images, never crash.

The source returns the *encoded* bytes; MindSpore's C++ ``vision.Decode`` decodes them in the
map's threads. Decoding in Python (OpenCV) was measured 2-4x slower end to end: a
``GeneratorDataset`` moves ~150 KB decoded rows through Python one at a time, and its worker
threads fight over the GIL (benchmarks/data.py, docs/data.md). What the source does per
sample is cheap: one ``pread``, inflate if deflated, CRC-32, and ``precheck`` (signature,
JPEG header walk and end marker, PNG end chunk): ~25 us.

A ``GeneratorDataset`` has a fixed length and a sampler decides which index each row is, so a
bad sample cannot simply be dropped (ranks would get different step counts). The choice made
here: **substitute and report**. When sample i fails the read or the precheck, the source
returns the next good sample of its own list (i+1, i+2, ... wrapping), *with that sample's own
label*, and puts i (and the epoch) in a third column, ``meta`` (bad = -1 for a normal row). The
batch step (main process) records the bad indices and drops the column, so the count and names
are visible from ``DatasetInfo`` whatever the number of workers. A label is never attached to
the wrong image; a run with bad members sees a few duplicates instead.

Safety net: an image that passes the precheck but still makes the C++ decoder fail (a corrupt
header the walk did not catch) is replaced by MindSpore itself with an earlier good row, image
and label together (``ErrorSamplesMode.REPLACE``, set by ``create_dataset``); MindSpore logs
it, but it is not in the count. Corrupt entropy-coded data decodes with a libjpeg warning to a
partly grey image, as in every other loader.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from .readers import BadMember
from ..errors import EBVMSError

_MAX_SUBSTITUTES = 64  # this many bad samples in a row means the data is broken, not noisy
_cv2_threads_set = False


class DataError(EBVMSError, RuntimeError):
    """The data cannot be used at all (not a single bad sample); the message says what to do."""


def _looks_truncated_jpeg(raw) -> bool:
    # libjpeg decodes a cut-off JPEG with a grey bottom and only a warning: look for the
    # end-of-image marker (FF D9 cannot occur inside entropy-coded data) near the end.
    if bytes(raw[:2]) != b"\xff\xd8":
        return False
    return bytes(raw[max(0, len(raw) - 4096):]).rfind(b"\xff\xd9") < 0


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def _huffman_problem(seg: bytes) -> str:
    """Check the tables of one DHT segment as libjpeg will (code space, DC symbols)."""
    q, out = 0, ""
    while q < len(seg):
        if q + 17 > len(seg):
            return "corrupt JPEG Huffman table (short)"
        tc, th = seg[q] >> 4, seg[q] & 15
        if tc > 1 or th > 3:
            return "corrupt JPEG Huffman table (bad class/id)"
        counts = seg[q + 1:q + 17]
        total = sum(counts)
        if total > 256 or q + 17 + total > len(seg):
            return "corrupt JPEG Huffman table (bad counts)"
        code = 0
        for length, c in enumerate(counts, start=1):
            code += c
            if code > (1 << length):
                return "corrupt JPEG Huffman table (code space overflow)"
            code <<= 1
        if tc == 0 and any(v > 15 for v in seg[q + 17:q + 17 + total]):
            return "corrupt JPEG Huffman table (bad DC symbol)"
        q += 17 + total
    return out


def _jpeg_header_problem(b: bytes) -> str:
    """Walk the JPEG segments up to the first scan as libjpeg will: '' if sane, else what is wrong.

    Stricter than a format sniff on purpose: MindSpore's C++ decoder crashes the process on
    some malformed headers (e.g. a bogus Huffman table) instead of raising.
    """
    p, n = 2, len(b)
    progressive = False
    comps: dict = {}
    huff = set()
    quant = set()
    while p + 4 <= n:
        if b[p] != 0xFF:
            return "corrupt JPEG header (marker expected)"
        while p < n and b[p] == 0xFF:
            p += 1
        if p >= n:
            break
        m = b[p]
        p += 1
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            continue
        if m in (0xD8, 0xD9) or m < 0xC0:
            return "corrupt JPEG header (unexpected marker)"
        if p + 2 > n:
            break
        seg_len = (b[p] << 8) | b[p + 1]
        if seg_len < 2 or p + seg_len > n:
            return "corrupt or truncated JPEG header (bad segment length)"
        seg = b[p + 2:p + seg_len]
        if m in _SOF:
            if comps:
                return "corrupt JPEG header (two frame headers)"
            if m not in (0xC0, 0xC1, 0xC2):
                return f"unsupported JPEG coding (marker {m:#x})"
            progressive = m == 0xC2
            if len(seg) < 6:
                return "corrupt JPEG header (short frame header)"
            prec, h, w, nc = seg[0], (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4], seg[5]
            if prec != 8 or w == 0 or h == 0 or nc not in (1, 3, 4) or len(seg) != 6 + 3 * nc:
                return f"corrupt JPEG header (frame {w}x{h}, {nc} components, {prec} bits)"
            for k in range(nc):
                cid, hv, tq = seg[6 + 3 * k], seg[7 + 3 * k], seg[8 + 3 * k]
                if not (1 <= hv >> 4 <= 4 and 1 <= hv & 15 <= 4) or tq > 3 or cid in comps:
                    return "corrupt JPEG header (bad component)"
                comps[cid] = tq
        elif m == 0xC4:
            why = _huffman_problem(seg)
            if why:
                return why
            q = 0
            while q < len(seg):
                huff.add((seg[q] >> 4, seg[q] & 15))
                q += 17 + sum(seg[q + 1:q + 17])
        elif m == 0xDB:
            q = 0
            while q < len(seg):
                pq, tq = seg[q] >> 4, seg[q] & 15
                if pq > 1 or tq > 3 or q + 1 + 64 * (pq + 1) > len(seg):
                    return "corrupt JPEG quantisation table"
                quant.add(tq)
                q += 1 + 64 * (pq + 1)
        elif m == 0xDA:
            if not comps:
                return "corrupt JPEG header (scan before frame header)"
            if not len(seg) or len(seg) != 4 + 2 * seg[0] or not 1 <= seg[0] <= 4:
                return "corrupt JPEG scan header"
            for k in range(seg[0]):
                cid, tables = seg[1 + 2 * k], seg[2 + 2 * k]
                if cid not in comps:
                    return "corrupt JPEG scan header (unknown component)"
                if (tables >> 4) > 3 or (tables & 15) > 3:
                    return "corrupt JPEG scan header (bad table id)"
            if any(tq not in quant for tq in comps.values()):
                return "corrupt JPEG header (missing quantisation table)"
            ss, se, ah, al = seg[-3], seg[-2], seg[-1] >> 4, seg[-1] & 15
            if not progressive and (ss != 0 or se != 63 or ah or al):
                return "corrupt JPEG scan header (bad spectral selection)"
            if progressive and (ss > se or se > 63 or ah > 13 or al > 13 or (ss == 0 and se)):
                return "corrupt JPEG scan header (bad progression)"
            p = _skip_entropy_data(b, p + seg_len)  # later tables and scans are checked too
            continue
        p += seg_len
    return "" if comps and p >= n - 2 else "truncated JPEG header"


def _skip_entropy_data(b: bytes, p: int) -> int:
    """Position of the next marker after entropy-coded data (skips FF00 and restart markers)."""
    n = len(b)
    while True:
        p = b.find(b"\xff", p)
        if p < 0 or p + 1 >= n:
            return n
        nxt = b[p + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            p += 1 if nxt == 0xFF else 2
            continue
        return n if nxt == 0xD9 else p  # end of image, or the next segment


def image_format(raw) -> str:
    head = bytes(raw[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == _PNG_SIG:
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"GIF8":
        return "gif"
    return ""


def precheck(raw) -> str:
    """Cheap checks of encoded image bytes: '' if it looks decodable, else the reason."""
    if len(raw) == 0:
        return "empty file"
    fmt = image_format(raw)
    if not fmt:
        return "not an image (no JPEG/PNG/BMP/TIFF/WebP/GIF signature)"
    if fmt == "jpeg":
        if _looks_truncated_jpeg(raw):
            return "truncated JPEG (no end-of-image marker)"
        return _jpeg_header_problem(bytes(raw))
    if fmt == "png":
        if len(raw) < 33 or bytes(raw[len(raw) - 8:]) != _PNG_END:
            return "truncated PNG (no IEND chunk)"
        w, h = int.from_bytes(bytes(raw[16:20]), "big"), int.from_bytes(bytes(raw[20:24]), "big")
        if w == 0 or h == 0:
            return "corrupt PNG header (zero size)"
    return ""


def decode_image(raw) -> np.ndarray:
    """RGB uint8 (H, W, 3) from encoded bytes, or ``BadMember`` saying why not."""
    global _cv2_threads_set
    if not _cv2_threads_set:  # one decode per worker; OpenCV's own pool would oversubscribe
        cv2.setNumThreads(1)
        _cv2_threads_set = True
    why = precheck(raw)
    if why:
        raise BadMember(why)
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BadMember("not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageSource:
    """Rows ``(image, label int32, meta int64 [epoch, bad])`` for ``GeneratorDataset``.

    ``image`` is the encoded file as uint8 (n,) for ``vision.Decode`` (JPEG, PNG, BMP, TIFF;
    WebP/GIF are decoded here and passed on as BMP), or, with ``decode=True``, RGB uint8 (H, W, 3)
    decoded here with OpenCV.

    The key asked for is ``epoch * len(self) + index`` (see ``ShardSampler(encode_epoch=True)``);
    ``bad`` is the index of a sample that could not be decoded and was replaced, or -1.

    Args:
        reader: ``ZipMemberReader`` or ``FileReader`` (``read(member) -> bytes``, ``name(member)``).
        members: member number of each sample, shape (n,).
        labels: class index of each sample, shape (n,).
    """

    def __init__(self, reader, members: np.ndarray, labels: np.ndarray, decode: bool = False):
        if len(members) != len(labels):
            raise ValueError("members and labels differ in length")
        if len(members) == 0:
            raise DataError("the split has no samples")
        self.reader = reader
        self.members = np.ascontiguousarray(members, dtype=np.int64)
        self.labels = np.ascontiguousarray(labels, dtype=np.int32)
        self.decode = bool(decode)
        self._known_bad: dict = {}

    def __len__(self) -> int:
        return int(self.members.shape[0])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_known_bad"] = {}
        return state

    def name(self, i: int) -> str:
        """Member name (path inside the archive, or relative file path) of sample ``i``."""
        return self.reader.name(int(self.members[i]))

    def load(self, i: int, decode: bool = True) -> np.ndarray:
        """Sample ``i`` decoded (RGB HWC) or encoded (uint8 (n,), checked); ``BadMember`` if bad."""
        if i in self._known_bad:
            raise BadMember(self._known_bad[i])
        try:
            raw = self.reader.read(int(self.members[i]))
            if decode:
                return decode_image(raw)
            why = precheck(raw)
            if why:
                raise BadMember(why)
            if image_format(raw) in ("webp", "gif"):  # vision.Decode needs PIL for these
                return np.frombuffer(cv2.imencode(".bmp", cv2.cvtColor(decode_image(raw), cv2.COLOR_RGB2BGR))[1], np.uint8)
            return np.frombuffer(raw, np.uint8).copy()  # owned and writable: the fast path into MindSpore
        except BadMember as exc:
            self._known_bad[i] = str(exc)
            raise
        except OSError as exc:  # the archive itself went away: not a sample problem
            raise DataError(f"reading {self.name(i)!r} failed: {exc}") from exc

    def __getitem__(self, key) -> Tuple[np.ndarray, np.int32, np.ndarray]:
        n = len(self)
        epoch, i = divmod(int(key), n)
        bad = -1
        for k in range(min(n, _MAX_SUBSTITUTES)):
            j = (i + k) % n
            try:
                img = self.load(j, self.decode)
            except BadMember:
                if k == 0:
                    bad = i
                continue
            return img, self.labels[j], np.array([epoch, bad], np.int64)
        raise DataError(f"{min(n, _MAX_SUBSTITUTES)} samples in a row from {self.name(i)!r} "
                        f"cannot be decoded (first: {self._known_bad.get(i)}); the data looks "
                        f"broken: run `python -m ebv_ms.data.inspect PATH --verify`")

    def check(self, i: int) -> str:
        """'' if sample ``i`` reads and decodes, else the reason (for ``inspect --verify``)."""
        try:
            self.load(i)
            return ""
        except BadMember as exc:
            return str(exc)

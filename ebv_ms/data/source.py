"""Random-access ``GeneratorDataset`` source: read and check encoded images, never crash.

Encoded bytes go to MindSpore's C++ ``vision.Decode`` (decoding in Python: 2-4x slower end to end).
A bad sample is substituted by the next good one *with its own label* and reported in ``meta``
(the sampler fixed the length). Every row is `validate`d first, since MindSpore 2.10's decoder
crashes the process (SIGSEGV) on JPEGs libjpeg refuses; the trial decode is remembered by CRC.
"""
from __future__ import annotations

import functools
import io
import re
import zlib
from typing import Tuple

import cv2
import numpy as np

from .readers import MAX_IMAGE_BYTES, BadMember
from ..errors import EBVMSError

_MAX_SUBSTITUTES = 64  # this many bad samples in a row means the data is broken, not noisy


class DataError(EBVMSError, RuntimeError):
    """The data cannot be used at all (not a single bad sample); the message says what to do."""


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # ends entropy-coded data (not FF00, RSTn, fill)
_FILL = re.compile(rb"\xff+([^\xff])")  # between segments: fill bytes, then the marker
_SIGNATURES = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"),
               (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"GIF8", "gif"))
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's MAX_IMAGE_PIXELS: ~89.5 MP, 268 MB as RGB


def _jpeg_header_problem(b: bytes, max_pixels: int = 0) -> str:
    """Walk the JPEG segments (every scan header) as libjpeg will: '' if sane, else what is wrong.
    Cheap and precise; `_decodes` is the complete check."""
    p, n = 2, len(b)
    progressive, comps, huff, quant = False, {}, set(), set()
    while p + 4 <= n:
        if b[p] != 0xFF:
            return "corrupt JPEG header (marker expected)"
        if not (marker := _FILL.match(b, p)):  # only fill bytes to the end
            break
        m, p = marker.group(1)[0], marker.end()
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
            if max_pixels and w * h > max_pixels:
                return _too_big(w, h, max_pixels)
            for k in range(nc):
                cid, hv, tq = seg[6 + 3 * k:9 + 3 * k]
                if not (1 <= hv >> 4 <= 4 and 1 <= hv & 15 <= 4) or tq > 3 or cid in comps:
                    return "corrupt JPEG header (bad component)"
                comps[cid] = tq
        elif m == 0xC4:  # Huffman tables, as libjpeg checks them (code space, DC symbols)
            q = 0
            while q < len(seg):
                if q + 17 > len(seg):
                    return "corrupt JPEG Huffman table (short)"
                tc, th, counts = seg[q] >> 4, seg[q] & 15, seg[q + 1:q + 17]
                if tc > 1 or th > 3:
                    return "corrupt JPEG Huffman table (bad class/id)"
                if sum(counts) > 256 or q + 17 + sum(counts) > len(seg):
                    return "corrupt JPEG Huffman table (bad counts)"
                # the code space (Kraft's sum): its partial sums only grow, so 16 bits is the test
                if sum(c << (16 - length) for length, c in enumerate(counts, start=1)) > 1 << 16:
                    return "corrupt JPEG Huffman table (code space overflow)"
                if tc == 0 and any(v > 15 for v in seg[q + 17:q + 17 + sum(counts)]):
                    return "corrupt JPEG Huffman table (bad DC symbol)"
                huff.add((tc, th))
                q += 17 + sum(counts)
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
            ss, se, ah, al = seg[-3], seg[-2], seg[-1] >> 4, seg[-1] & 15
            for k in range(seg[0]):
                cid, tables = seg[1 + 2 * k], seg[2 + 2 * k]
                if cid not in comps:
                    return "corrupt JPEG scan header (unknown component)"
                if (tables >> 4) > 3 or (tables & 15) > 3:
                    return "corrupt JPEG scan header (bad table id)"
                # libjpeg fills slots 0 and 1 with the standard tables; 2 and 3 must be defined
                for tc, th, used in ((0, tables >> 4, not progressive or ss == ah == 0),
                                     (1, tables & 15, not progressive or ss > 0)):
                    if used and th > 1 and (tc, th) not in huff:
                        return (f"corrupt JPEG scan header (uses {'DC' if tc == 0 else 'AC'} "
                                f"Huffman table {th}, which is not defined)")
            if any(tq not in quant for tq in comps.values()):
                return "corrupt JPEG header (missing quantisation table)"
            if not progressive and (ss != 0 or se != 63 or ah or al):
                return "corrupt JPEG scan header (bad spectral selection)"
            if progressive and (ss > se or se > 63 or ah > 13 or al > 13 or (ss == 0 and se)):
                return "corrupt JPEG scan header (bad progression)"
            nxt = _MARKER.search(b, p + seg_len)  # later tables and scans are checked too
            p = len(b) if nxt is None or b[nxt.start() + 1] == 0xD9 else nxt.start()  # EOI: the end
            continue
        p += seg_len
    return "" if comps and p >= n - 2 else "truncated JPEG header"


def _too_big(w: int, h: int, max_pixels: int) -> str:
    return (f"image is {w} x {h} = {w * h} pixels, more than data.max_image_pixels = {max_pixels} "
            f"(decoding it would take {3 * w * h / 2 ** 20:.0f} MB)")


def _image_size(raw, fmt: str):
    """(width, height) from the header of a non-JPEG image, or None if it has none."""
    b = bytes(raw[:32])
    if fmt == "png":
        return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    if fmt == "bmp" and len(b) >= 26:
        return abs(int.from_bytes(b[18:22], "little", signed=True)), \
            abs(int.from_bytes(b[22:26], "little", signed=True))
    try:  # TIFF / WebP / GIF: Pillow parses the header only (no pixel data)
        from PIL import Image
        with Image.open(io.BytesIO(bytes(raw))) as im:
            return im.size
    except Exception:  # noqa: BLE001 - Pillow's DecompressionBombError, corrupt headers...
        return None


def _png_problem(b: bytes) -> str:
    """Walk the PNG chunks (lengths, critical CRCs, IHDR first, IEND last): OpenCV takes seconds
    and allocates the declared length of a chunk whose length field is garbage."""
    p, n = 8, len(b)
    while p + 12 <= n:
        length = int.from_bytes(b[p:p + 4], "big")
        kind = b[p + 4:p + 8]
        if length > n - p - 12:
            return "truncated PNG (a chunk runs past the end of the file)"
        if p == 8 and (kind != b"IHDR" or length != 13):  # the first chunk
            return "corrupt PNG header (IHDR chunk expected first)"
        if kind[:1].isupper() and zlib.crc32(b[p + 4:p + 8 + length]) != \
                int.from_bytes(b[p + 8 + length:p + 12 + length], "big"):
            return f"corrupt PNG ({kind.decode('latin1')!r} chunk fails its CRC)"
        p += 12 + length
        if kind == b"IEND":
            return ""
    return "truncated PNG (no IEND chunk)"


def image_format(raw) -> str:
    head = bytes(raw[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((fmt for sig, fmt in _SIGNATURES if head.startswith(sig)), "")


def precheck(raw, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Cheap checks of encoded image bytes (no decode): '' if it looks decodable, else the reason.
    ``max_pixels`` (0: no limit) bounds the declared size: a 400 KB PNG can declare 1.2 GB."""
    if len(raw) == 0:
        return "empty file"
    fmt = image_format(raw)
    if not fmt:
        return "not an image (no JPEG/PNG/BMP/TIFF/WebP/GIF signature)"
    if fmt == "jpeg":  # libjpeg decodes a cut-off JPEG with a grey bottom and only a warning
        if bytes(raw[max(0, len(raw) - 4096):]).rfind(b"\xff\xd9") < 0:  # no end marker near the end
            return "truncated JPEG (no end-of-image marker)"
        return _jpeg_header_problem(bytes(raw), max_pixels)
    if fmt == "png" and (why := _png_problem(bytes(raw))):
        return why
    size = _image_size(raw, fmt)
    if size is None or size[0] == 0 or size[1] == 0:
        return f"corrupt {fmt.upper()} header (no image size)"
    if max_pixels and size[0] * size[1] > max_pixels:
        return _too_big(size[0], size[1], max_pixels)
    return ""


@functools.cache
def _one_cv2_thread() -> None:  # one decode per worker; OpenCV's own pool would oversubscribe
    cv2.setNumThreads(1)


def _imdecode(raw, flag: int, failed: str) -> np.ndarray:
    """OpenCV's decode, or ``BadMember``: ``failed`` if libjpeg/libpng refuse it (OpenCV returns
    an empty result), else OpenCV's reason: it raises past its own limits, e.g. more than 2^30
    pixels (CV_IO_MAX_IMAGE_PIXELS) when data.max_image_pixels is 0: a bad sample, not a crash."""
    _one_cv2_thread()
    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), flag)
    except cv2.error as exc:
        why = str(exc).strip().splitlines()[-1].split("error: ", 1)[-1] if str(exc).strip() else exc
        raise BadMember(f"OpenCV refuses to decode it ({why})") from None
    if img is None or img.size == 0:
        raise BadMember(failed)
    return img


def validate(raw, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """`precheck`, then a real decode by OpenCV: '' only if decoding will work. A JPEG at 1/8
    scale: libjpeg still parses every table and block, ~60 % of a full decode's CPU."""
    if why := precheck(raw, max_pixels):
        return why
    fmt = image_format(raw)
    try:
        _imdecode(raw, cv2.IMREAD_REDUCED_COLOR_8 if fmt == "jpeg" else cv2.IMREAD_COLOR,
                  f"{fmt.upper()} data cannot be decoded (corrupt tables or image data; "
                  "libjpeg/libpng refuse it)")
    except BadMember as exc:
        return str(exc)
    return ""


def decode_image(raw, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) from encoded bytes, or ``BadMember`` saying why not."""
    if why := precheck(raw, max_pixels):
        raise BadMember(why)
    img = _imdecode(raw, cv2.IMREAD_COLOR, "not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageSource:
    """Rows ``(encoded image uint8 (n,), label int32, meta int64 [epoch, bad])`` for
    ``GeneratorDataset`` (WebP/GIF are passed on as BMP). The key is ``epoch * len(self) + index``
    (``ShardSampler(encode_epoch=True)``); ``bad`` is the index of a replaced sample, or -1.
    Images over ``max_pixels``/``max_bytes`` (0: no limit) are bad samples."""

    def __init__(self, reader, members: np.ndarray, labels: np.ndarray,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES):
        if len(members) != len(labels):
            raise ValueError("members and labels differ in length")
        if len(members) == 0:
            raise DataError("the split has no samples")
        self.reader = reader
        self.members = np.ascontiguousarray(members, dtype=np.int64)
        self.labels = np.ascontiguousarray(labels, dtype=np.int32)
        self.max_pixels, self.max_bytes = int(max_pixels or 0), int(max_bytes or 0)
        self._known_bad: dict = {}
        # CRC-32 + 1 of the bytes that passed `validate` (0: not yet): 8 bytes per sample
        self._validated = np.zeros(len(self.members), np.uint64)

    def __len__(self) -> int:
        return int(self.members.shape[0])

    def __getstate__(self):
        return dict(self.__dict__, _known_bad={}, _validated=np.zeros(len(self.members), np.uint64))

    def name(self, i: int) -> str:
        return self.reader.name(int(self.members[i]))

    def load(self, i: int, decode: bool = True) -> np.ndarray:
        """Sample ``i`` decoded (RGB HWC) or encoded (uint8 (n,), checked); ``BadMember`` if bad."""
        if i in self._known_bad:
            raise BadMember(self._known_bad[i])
        try:
            member = int(self.members[i])
            raw = self.reader.read(member, self.max_bytes)
            if decode or image_format(raw) in ("webp", "gif"):  # vision.Decode needs PIL for these
                img = decode_image(raw, self.max_pixels)
                return img if decode else cv2.imencode(".bmp", img[..., ::-1])[1].reshape(-1)
            crc = self.reader.crc(member, raw) + 1
            if self._validated[i] != crc:
                if why := validate(raw, self.max_pixels):
                    raise BadMember(why)
                self._validated[i] = crc
            return np.frombuffer(raw, np.uint8).copy()  # owned and writable: the fast path into MindSpore
        except BadMember as exc:
            self._known_bad[i] = str(exc)
            raise
        except OSError as exc:  # the archive itself went away: not a sample problem
            raise DataError(f"reading {self.name(i)!r} failed: {exc}") from exc

    def __getitem__(self, key) -> Tuple[np.ndarray, np.int32, np.ndarray]:
        n = len(self)
        epoch, i = divmod(int(key), n)
        for k in range(min(n, _MAX_SUBSTITUTES)):
            j = (i + k) % n
            try:
                img = self.load(j, decode=False)
            except BadMember:
                continue
            return img, self.labels[j], np.array([epoch, i if k else -1], np.int64)  # i: replaced
        raise DataError(f"{min(n, _MAX_SUBSTITUTES)} samples in a row from {self.name(i)!r} "
                        f"cannot be decoded (first: {self._known_bad.get(i)}); the data looks "
                        f"broken: run `python -m ebv_ms.tools.inspect_data PATH --verify`")

    def check(self, i: int) -> str:
        """'' if sample ``i`` reads and decodes, else the reason (for ``inspect --verify``)."""
        try:
            self.load(i)
            return ""
        except BadMember as exc:
            return str(exc)

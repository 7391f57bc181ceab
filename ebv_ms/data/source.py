"""Random-access ``GeneratorDataset`` source: read bytes, decode with OpenCV to RGB, never crash.

A ``GeneratorDataset`` has a fixed length and a sampler decides which index each row is, so a
bad sample cannot simply be dropped (ranks would get different step counts, and the sampler
has already promised a row). The choice made here: **substitute and report**. When sample i
cannot be read or decoded, the source returns the next good sample of its own list
(i+1, i+2, ... wrapping), *with that sample's own label*, and puts i (and the epoch) in a
third column, ``meta`` (bad = -1 for a normal row). The batch step (in the main process) records the bad indices
and drops the column, so the count and names are visible from ``DatasetInfo`` whatever the
number of worker processes. A label is never attached to the wrong image; a run with bad
members sees a few duplicates instead (at most one per bad member per epoch).

Worker processes remember their bad indices so a member is decoded in vain once per epoch at
most; the report is per epoch.
"""
from __future__ import annotations

import os
from typing import Tuple

import cv2
import numpy as np

from .readers import BadMember

_MAX_SUBSTITUTES = 64  # this many bad samples in a row means the data is broken, not noisy
_cv2_threads_set = False


class DataError(RuntimeError):
    """The data cannot be used at all (not a single bad sample); the message says what to do."""


def _looks_truncated_jpeg(raw) -> bool:
    # libjpeg decodes a cut-off JPEG with a grey bottom and only a warning: look for the
    # end-of-image marker (FF D9 cannot occur inside entropy-coded data) near the end.
    if bytes(raw[:2]) != b"\xff\xd8":
        return False
    return bytes(raw[max(0, len(raw) - 4096):]).rfind(b"\xff\xd9") < 0


def decode_image(raw) -> np.ndarray:
    """RGB uint8 (H, W, 3) from encoded bytes, or ``BadMember`` saying why not."""
    global _cv2_threads_set
    if not _cv2_threads_set:  # one decode per worker; OpenCV's own pool would oversubscribe
        cv2.setNumThreads(1)
        _cv2_threads_set = True
    if len(raw) == 0:
        raise BadMember("empty file")
    if _looks_truncated_jpeg(raw):
        raise BadMember("truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BadMember("not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageSource:
    """Rows ``(image uint8 HWC RGB, label int32, meta int64 [epoch, bad])`` for ``GeneratorDataset``.

    The key asked for is ``epoch * len(self) + index`` (see ``ShardSampler(encode_epoch=True)``);
    ``bad`` is the index of a sample that could not be decoded and was replaced, or -1.

    Args:
        reader: ``ZipMemberReader`` or ``FileReader`` (``read(member) -> bytes``, ``name(member)``).
        members: member number of each sample, shape (n,).
        labels: class index of each sample, shape (n,).
    """

    def __init__(self, reader, members: np.ndarray, labels: np.ndarray):
        if len(members) != len(labels):
            raise ValueError("members and labels differ in length")
        if len(members) == 0:
            raise DataError("the split has no samples")
        self.reader = reader
        self.members = np.ascontiguousarray(members, dtype=np.int64)
        self.labels = np.ascontiguousarray(labels, dtype=np.int32)
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

    def load(self, i: int) -> np.ndarray:
        """Decoded RGB image of sample ``i``; ``BadMember`` if it cannot be had."""
        if i in self._known_bad:
            raise BadMember(self._known_bad[i])
        try:
            return decode_image(self.reader.read(int(self.members[i])))
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
                img = self.load(j)
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

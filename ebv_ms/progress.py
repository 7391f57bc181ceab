"""Progress output fit for a terminal and for a log.

On a terminal: tqdm's bar. Otherwise (output redirected to a file, a rank under mpirun or msrun,
nohup, a job scheduler) tqdm's ``\\r`` redraws pile up into one very long line, so the same calls
write one plain line every ``interval`` seconds and one when the task ends, the way MindSpore's
and mindcv's loggers print a line per logging interval.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Optional

__all__ = ["progress_bar", "LineProgress"]

INTERVAL_S = 30.0


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
                 desc: str = "", unit: str = "it", disable: bool = False, file=None,
                 interval: float = INTERVAL_S, **tqdm_kwargs):
    """tqdm(...) on a terminal, else a ``LineProgress`` with the same methods (update, n,
    set_postfix, set_postfix_str, close, iteration, ``with``)."""
    stream = file if file is not None else sys.stderr
    if not disable and _is_tty(stream):
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **tqdm_kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream,
                        interval=interval)


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """Plain progress lines: ``desc: n/total unit (p%), elapsed s, rate unit/s, postfix``."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", disable=False,
                 file=None, interval=INTERVAL_S):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.file, self.interval = disable, file or sys.stderr, interval
        self.n, self.postfix = 0, ""
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if not self._closed and self.n:
            self._print(time.monotonic())
        self._closed = True

    def _print(self, now: float) -> None:
        if self.disable:
            return
        secs = now - self._t0
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        line = (f"{self.desc + ': ' if self.desc else ''}{done} {self.unit}{pct}, {secs:.0f} s, "
                f"{self.n / max(secs, 1e-9):.3g} {self.unit}/s")
        print(line + (f", {self.postfix}" if self.postfix else ""), file=self.file, flush=True)

"""Progress: tqdm's bar on a terminal; elsewhere (a file, a rank under mpirun or msrun, nohup: the
``\\r`` redraws pile up into one long line there) a plain line every ``interval`` seconds and one
at the end, like MindSpore's and mindcv's loggers."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Optional


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
                 desc: str = "", unit: str = "it", disable: bool = False, file=None,
                 interval: float = 30.0, **tqdm_kwargs):
    """tqdm(...) on a terminal, else a ``LineProgress`` with the methods the project uses."""
    stream = file if file is not None else sys.stderr
    try:
        tty = not disable and stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **tqdm_kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream,
                        interval=interval)


class LineProgress:
    """Plain progress lines: ``desc: n/total unit (p%), elapsed s, rate unit/s, postfix``."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", disable=False,
                 file=None, interval=30.0):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.file, self.interval = disable, file or sys.stderr, interval
        self.n, self.postfix, self._closed = 0, "", False
        self._t0 = self._last = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            self._print()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in dict(ordered_dict or {}, **kwargs).items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if not self._closed and self.n:
            self._print()
        self._closed = True

    def _print(self) -> None:
        if self.disable:
            return
        secs = time.monotonic() - self._t0
        done = f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)" \
            if self.total else f"{self.n} {self.unit}"
        print(f"{self.desc + ': ' if self.desc else ''}{done}, {secs:.0f} s, "
              f"{self.n / max(secs, 1e-9):.3g} {self.unit}/s"
              + (f", {self.postfix}" if self.postfix else ""), file=self.file, flush=True)

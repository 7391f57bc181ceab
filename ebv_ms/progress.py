"""Progress: tqdm's bar on a terminal; elsewhere (a file, a rank under mpirun or msrun, nohup: the
``\\r`` redraws pile up into one long line there) a plain line every ``interval`` seconds and one
at the end, like MindSpore's and mindcv's loggers."""
from __future__ import annotations

import sys
from typing import Iterable, Optional

from tqdm import tqdm


def progress_bar(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
                 desc: str = "", unit: str = "it", disable: bool = False, file=None,
                 interval: float = 30.0, **tqdm_kwargs):
    """tqdm(...) on a terminal, else a ``LineProgress`` (``tqdm_kwargs`` are the bar's)."""
    stream = file if file is not None else sys.stderr
    try:
        tty = not disable and stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **tqdm_kwargs)
    # a line at any update once ``interval`` s have passed (miniters 0), not a redrawn bar
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream,
                        mininterval=interval, miniters=0, leave=False)


class LineProgress(tqdm):
    """tqdm printing ``desc: n/total unit (p%), elapsed s, rate unit/s, postfix`` as a line of its
    own at most every ``mininterval`` seconds and once at ``close``; none before the first step.
    As tqdm redraws, ``set_postfix`` (``_str``) prints one now unless given ``refresh=False``."""

    monitor_interval = 0  # no tqdm monitor thread: it only speeds up a bar's redraws

    def display(self, msg=None, pos=None):
        if msg is None and self.n:  # msg '': tqdm erasing its bar at close (leave=False)
            secs = self.format_dict["elapsed"]
            done = f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)" \
                if self.total else f"{self.n} {self.unit}"
            print(f"{self.desc + ': ' if self.desc else ''}{done}, {secs:.0f} s, "
                  f"{self.n / max(secs, 1e-9):.3g} {self.unit}/s"
                  + (f", {self.postfix}" if self.postfix else ""), file=self.fp, flush=True)
        return False

    def close(self) -> None:
        if not self.disable and self.n:
            self.display()
        super().close()

    __del__ = tqdm.close  # collected unclosed (an error ended the loop): no last line

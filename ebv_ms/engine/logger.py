"""Logs: the text log (console, and rank 0's ``OUTPUT_DIR/train.log``) and ``metrics.jsonl``, one
record per epoch. Other ranks log to their stdout, which the launcher captures in
``OUTPUT_DIR/logs/rank_<r>.log``.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from typing import List, Mapping, Optional

from ebv_ms.atomic import atomic_path
from .run_folder import RunFolderError


def setup_logger(output_dir: Optional[str], rank: int = 0) -> logging.Logger:
    """The "ebv_ms" logger, to the console; rank 0's file lines are kept in memory until
    ``open_log_file`` (a run refused at set-up leaves the run folder's log untouched)."""
    logger = logging.getLogger("ebv_ms")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
                            datefmt="%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if output_dir and rank == 0:  # handed to the file handler by open_log_file
        handlers.append(logging.handlers.MemoryHandler(
            capacity=1 << 20, flushLevel=logging.CRITICAL + 1, flushOnClose=False))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


def open_log_file(logger: logging.Logger, output_dir: str) -> None:
    """Start writing rank 0's ``train.log`` (appending across resumes); kept lines go first."""
    os.makedirs(output_dir, exist_ok=True)
    fh = logging.FileHandler(os.path.join(output_dir, "train.log"), encoding="utf-8")
    fh.setFormatter(next((h.formatter for h in logger.handlers if h.formatter is not None), None))
    for h in list(logger.handlers):
        if isinstance(h, logging.handlers.MemoryHandler):
            h.setTarget(fh)
            h.flush()
            logger.removeHandler(h)
            h.close()
    logger.addHandler(fh)


class JsonlLog:
    """Append-only JSON-lines file; ``truncate_after(epoch)`` drops records a resume will redo."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, record: Mapping) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> List[dict]:
        if not os.path.isfile(self.path):
            return []
        out = []
        with open(self.path, "r", encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill mid-write
                if not isinstance(rec, dict) or type(rec.get("epoch", 0)) is not int:
                    raise RunFolderError(f"{self.path} line {number} is not an epoch record "
                                         f"({line[:60]!r}); restore the file or remove that line")
                out.append(rec)
        return out

    def truncate_after(self, epoch: int) -> None:
        """Keep only records of epochs <= ``epoch`` (those the checkpoint being resumed covers)."""
        keep = [r for r in self.read() if r.get("epoch", 0) <= epoch]
        with atomic_path(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")

"""Logs: a text log (console + file) and a JSON-lines metrics file, one record per epoch.

Rank 0 writes the main log ``<output_dir>/train.log`` and ``metrics.jsonl``. Other ranks log to
their stdout, which the launch scripts capture in ``<output_dir>/logs/rank_<r>.log`` (one file per
rank, with any traceback), so a failing rank's messages are never lost.
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

__all__ = ["setup_logger", "open_log_file", "JsonlLog", "main_log_path"]


def main_log_path(output_dir: str, main_name: str = "train.log") -> str:
    """Rank 0's log file (OUTPUT_DIR/train.log); every rank's captured stdout is
    ``distributed.rank_log_path``."""
    return os.path.join(output_dir, main_name)


def setup_logger(output_dir: Optional[str], rank: int = 0, name: str = "ebv_ms",
                 main_name: str = "train.log", console: bool = True,
                 defer_file: bool = False) -> logging.Logger:
    """A logger that writes to this rank's file (appending across resumes) and the console.

    ``defer_file``: keep the file's lines in memory until ``open_log_file`` (a run refused at
    set-up then leaves the run folder's log untouched; the console has every line at once)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
                            datefmt="%Y-%m-%d %H:%M:%S")
    if console:
        sh = logging.StreamHandler(sys.stdout)
        sh.setFormatter(fmt)
        logger.addHandler(sh)
    if output_dir and rank == 0:
        if defer_file:
            mh = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1,
                                                flushOnClose=False)
            mh.setFormatter(fmt)  # handed to the file handler by open_log_file
            logger.addHandler(mh)
        else:
            open_log_file(logger, output_dir, main_name)
    return logger


def open_log_file(logger: logging.Logger, output_dir: str, main_name: str = "train.log") -> None:
    """Start writing rank 0's log file; lines kept back by ``defer_file`` go first."""
    path = main_log_path(output_dir, main_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fh = logging.FileHandler(path, encoding="utf-8")
    fmt = next((h.formatter for h in logger.handlers if h.formatter is not None), None)
    fh.setFormatter(fmt)
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
        rec = {"time": round(time.time(), 3), **record}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, sort_keys=False) + "\n")
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
                    from .run_folder import RunFolderError
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

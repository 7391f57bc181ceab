"""The project's one error base class, and how every command line reports it.

Every user-input error (config, data, EBV files, checkpoints, launches, failed writes) derives from
``EBVMSError`` and names what is wrong and what to do. ``run_cli`` turns one (or an ``OSError``:
a full disk, a missing or read-only folder) into one stderr line and exit status 2; the traceback
goes to the run's log file (``train.log``) when one is open and to the console only with
``--debug``. Any other exception is a bug and keeps its traceback. The factories raise plain
``ValueError``: a config reaches them only after ``ebv_ms.config.validate``.
"""
from __future__ import annotations

import logging
import sys
import traceback
from typing import Callable

__all__ = ["EBVMSError", "ConfigError", "ModelError", "WriteError", "DivergenceError", "run_cli"]


class EBVMSError(Exception):
    """Base of every error caused by the user's input or machine, not by a bug."""


class ConfigError(EBVMSError, ValueError):
    """A config that cannot be used; the message names the key and what to do."""


class ModelError(EBVMSError, ValueError):
    """A network that cannot be built as asked (backbone arguments, pretrained weights, a
    backbone checkpoint, a precision setting); the message names the setting."""


class WriteError(EBVMSError, OSError):
    """A file could not be written (full disk, read-only folder); the old file is intact."""


class DivergenceError(EBVMSError, FloatingPointError):
    """Training cannot go on (a non-finite loss, or every step overflowing at the lowest loss
    scale); the message says which setting to change, and last.ckpt holds the last good epoch."""


def run_cli(prog: str, body: Callable[[], int], debug: bool = False) -> int:
    """``body()``'s exit status, or 2 with one line ``PROG: error: MESSAGE`` on stderr."""
    try:
        return body()
    except (EBVMSError, OSError) as exc:
        log = logging.getLogger("ebv_ms")
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s: error: %s",
                                (prog, exc), (type(exc), exc, exc.__traceback__))
        raise_before, logging.raiseExceptions = logging.raiseExceptions, False  # a full disk too
        try:
            for h in log.handlers:
                if isinstance(h, logging.FileHandler):
                    h.handle(record)
        finally:
            logging.raiseExceptions = raise_before
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2

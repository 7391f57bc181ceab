"""The project's one error base class, and how every command line reports it.

Every "bad input" error (config, data, EBV files, checkpoints, launches, failed writes) derives
from ``EBVMSError``; its message names what is wrong and what to do. A command line runs its
body through ``run_cli``: an ``EBVMSError`` (or an ``OSError``, which is always about the
machine: a full disk, a missing or read-only folder) becomes one line on stderr and exit
status 2. The traceback is printed with ``--debug`` and written to the run's log file when
one is open (``train.log``), never to the console otherwise. Any other exception is a bug and
keeps its traceback.

The factories (``create_classifier``, ``create_loss``, ...) raise plain ``ValueError`` for
arguments they cannot use: a config never reaches them with such values, because
``ebv_ms.config.validate`` checks every key first.
"""
from __future__ import annotations

import logging
import sys
import traceback
from typing import Callable

__all__ = ["EBVMSError", "ConfigError", "ModelError", "WriteError", "DivergenceError", "run_cli",
           "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


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


def _log_traceback(prog: str, exc: BaseException) -> None:
    """Write the traceback to the file handlers of the project's logger (the run's log)."""
    log = logging.getLogger("ebv_ms")
    files = [h for h in log.handlers if isinstance(h, logging.FileHandler)]
    if not files:
        return
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s: error: %s",
                            (prog, exc), (type(exc), exc, exc.__traceback__))
    raise_before, logging.raiseExceptions = logging.raiseExceptions, False  # a full disk too
    try:
        for h in files:
            h.handle(record)
    finally:
        logging.raiseExceptions = raise_before


def run_cli(prog: str, body: Callable[[], int], debug: bool = False) -> int:
    """``body()``'s exit status, or 2 with one line ``PROG: error: MESSAGE`` on stderr."""
    try:
        return body()
    except (EBVMSError, OSError) as exc:
        _log_traceback(prog, exc)
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR

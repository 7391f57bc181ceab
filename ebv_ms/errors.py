"""The one error base class, and how every command line reports it: ``run_cli`` turns an
``EBVMSError`` or an ``OSError`` (full disk, read-only folder) into one stderr line and exit 2, the
traceback going to the run's log file only (and the console with ``--debug``); any other exception
is a bug and keeps its traceback. Factories raise plain ``ValueError`` (configs are validated)."""
from __future__ import annotations

import logging
import sys
import traceback
from typing import Callable


class EBVMSError(Exception):
    """Base of every error caused by the user's input or machine, not by a bug."""


class ConfigError(EBVMSError, ValueError):
    """A config that cannot be used; the message names the key and what to do."""


class ModelError(EBVMSError, ValueError):
    """A network that cannot be built as asked (backbone arguments or checkpoint, precision)."""


class WriteError(EBVMSError, OSError):
    """A file could not be written (full disk, read-only folder); the old file is intact."""


class DivergenceError(EBVMSError, FloatingPointError):
    """Training cannot go on (non-finite loss, or overflow at the lowest loss scale)."""


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

"""Kept for code written before ``ebv_ms.errors``: every project error now derives from
``EBVMSError`` and the command lines report them through ``ebv_ms.errors.run_cli``."""
from __future__ import annotations

from ebv_ms.errors import EBVMSError

__all__ = ["user_errors"]


def user_errors() -> tuple:
    """The exception types a command line reports as one line with exit status 2."""
    return (EBVMSError, OSError)

"""The project's "bad input" errors: the CLIs print their message (which says what to do)
and exit with status 2 instead of showing a traceback."""
from __future__ import annotations

__all__ = ["user_errors"]


def user_errors() -> tuple:
    """Exception classes that describe a problem with the user's config, data or files."""
    from ebv_ms.config import ConfigError
    from ebv_ms.ebv import EBVError
    from .checkpoint import CheckpointError
    from .run_folder import RunFolderError
    out = [ConfigError, EBVError, CheckpointError, RunFolderError, FileNotFoundError]
    try:
        from ebv_ms.data.layouts import LayoutError
        from ebv_ms.data.source import DataError
        from ebv_ms.data.zip_index import ArchiveError
        out += [LayoutError, DataError, ArchiveError]
    except ImportError:  # pragma: no cover - data package without these modules
        pass
    try:
        from ebv_ms.generation import GenerationError
        out.append(GenerationError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from .distributed import DistributedError
        out.append(DistributedError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(out)

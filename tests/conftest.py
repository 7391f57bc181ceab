"""Shared fixtures: CPU MindSpore context, the authors' official EBV files."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_DIR = Path(os.environ.get("EBV_OFFICIAL_DIR", ROOT.parent / "shared" / "official_ebv"))


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not OFFICIAL_DIR.is_dir():
        pytest.fail(f"official EBV files not found at {OFFICIAL_DIR}; set EBV_OFFICIAL_DIR")
    return OFFICIAL_DIR


@pytest.fixture(autouse=True, scope="session")
def _cpu_context():
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def pytest_unconfigure(config):
    """Free the tests' Cells while MindSpore is still importable: otherwise Cell.__del__ runs
    during interpreter shutdown, after MindSpore's globals are gone, and prints harmless
    'NoneType has no attribute total_instance_count' tracebacks after pytest's summary."""
    import gc
    gc.collect()
    from mindspore.nn import cell as _cell

    original = _cell.Cell.__del__

    def _del_quietly_at_exit(self, _original=original):
        try:
            _original(self)
        except AttributeError:  # MindSpore's module globals are already torn down
            pass

    _cell.Cell.__del__ = _del_quietly_at_exit

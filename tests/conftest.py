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

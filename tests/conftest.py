"""Shared fixtures: CPU MindSpore context, the authors' official EBV files, demo data and run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_DIR = Path(os.environ.get("EBV_OFFICIAL_DIR", ROOT.parent / "shared" / "official_ebv"))


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The authors' released EBV files; a clone without them skips the tests that read them."""
    if not OFFICIAL_DIR.is_dir():
        pytest.skip(f"the authors' released EBV files (pytorch_eq_*.pkl, mindspore_eq_1000_1000.pkl) "
                    f"are not at {OFFICIAL_DIR}: put them in a folder 'shared/official_ebv' beside "
                    "this repository's folder, or set EBV_OFFICIAL_DIR=/path/to/them")
    return OFFICIAL_DIR


@pytest.fixture(autouse=True, scope="session")
def _cpu_context():
    import mindspore as ms
    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def run_script(script, args, cwd, timeout=600):
    """``python ROOT/script args...`` in ``cwd`` with this checkout importable."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def demo_zip(tmp_path_factory) -> Path:
    """The demo archive (1,797 digits as 32x32 JPEGs, ``digits/{train,val}/<class>/``), written
    once per session. Tests that change it copy it first."""
    from ebv_ms.tools.make_demo import write_demo_archive
    return Path(write_demo_archive(str(tmp_path_factory.mktemp("demo"))))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_zip):
    """One short demo training run (2 epochs): (tmp folder, run folder with last/best.ckpt,
    classes.json, metrics.jsonl). Its EBV set is written next to the checkpoints (inline
    threshold 0, as a 100k-class set would be) and its EBV cache is deleted, so users of the
    checkpoint show they find the run's own set."""
    tmp = tmp_path_factory.mktemp("demorun")
    out = tmp / "run"
    r = run_script("train.py", ["--config", ROOT / "configs" / "demo_cpu.yaml", f"output_dir={out}",
                                f"data.path={demo_zip}", f"ebv.cache_dir={tmp / 'ebv'}",
                                "train.epochs=2", "train.progress_bar=false",
                                "train.ckpt_inline_ebv_mb=0"], tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for f in (tmp / "ebv").iterdir():
        f.unlink()
    return tmp, out


def pytest_collection_modifyitems(config, items):
    """A test that launches several processes (marker ``distributed``) or uses the session's
    demo training run (``demo_run``: a 2-epoch train.py, 20-70 s) is ``slow`` too, so
    ``-m "not slow"`` never starts a cluster or a training run. ``slow``: anything over ~5 s on a
    2-core CPU (subprocess training runs, launches, fuzzers; README 'Tests and CI')."""
    for item in items:
        if (item.get_closest_marker("distributed") is not None
                or "demo_run" in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config):
    """Free the tests' Cells while MindSpore is still importable: otherwise Cell.__del__ runs
    during interpreter shutdown, after MindSpore's globals are gone, and prints harmless
    'NoneType has no attribute total_instance_count' tracebacks after pytest's summary."""
    import gc
    gc.collect()
    from ebv_ms.models.mindcv_zoo import quiet_cell_teardown
    quiet_cell_teardown()

"""The run folder: one train.py at a time, stale temporaries removed, a refused --resume changes
nothing, and a resumed run does not keep the checkpoint it loaded. Real train.py runs on a
small copy of the demo digits archive (160 training images, 1 epoch)."""
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo_data import small_demo_zip

pytestmark = pytest.mark.slow  # see README 'Tests and CI'

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo_cpu.yaml"


def _common(data, tmp):
    return ["--config", str(DEMO), f"data.path={data}", f"ebv.cache_dir={tmp / 'ebv'}",
            "train.batch_size=16", "eval.batch_size=40", "data.num_workers=1",
            "train.progress_bar=false"]


def _train(args, cwd, wait=True):
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="2")
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _snapshot(folder):
    """Every file of the run folder (but the lock) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".run.lock"}


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_zip):
    """A finished 1-epoch run whose folder held temporaries of interrupted writes beforehand:
    two of dead processes, one of a live process."""
    tmp = tmp_path_factory.mktemp("runfolder")
    data = small_demo_zip(demo_zip, tmp)
    out = tmp / "run"
    out.mkdir()
    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "600"])
    stale = [out / f".last.ckpt.tmp{dead}.ckpt", out / f".metrics.jsonl.tmp{dead}"]
    kept = out / f".best.ckpt.tmp{live.pid}.ckpt"
    for p in stale + [kept]:
        p.write_bytes(b"\0" * 4096)
    r = _train(_common(data, tmp) + [f"output_dir={out}", "train.epochs=1"], tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    yield {"tmp": tmp, "src": demo_zip, "data": data, "out": out, "stale": stale, "kept": kept}
    live.kill()
    live.wait()


def test_stale_temporaries_are_removed_at_start_but_not_a_live_writers(run):
    assert [p for p in run["stale"] if p.exists()] == []
    assert run["kept"].exists()  # its writer (pid) is alive: another run's write in progress
    assert "left by an interrupted write" in (run["out"] / "train.log").read_text()


def test_a_second_run_into_the_folder_is_refused_and_kill9_frees_it(run):
    tmp, out = run["tmp"], run["out"]
    common = _common(run["data"], tmp) + [f"output_dir={out}"]
    first = _train(common + ["train.epochs=100", "--resume"], tmp, wait=False)  # goes on training
    try:
        lock = out / ".run.lock"
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text() and \
                    json.loads(lock.read_text()).get("pid") == first.pid:
                break
            time.sleep(0.2)
        assert first.poll() is None, first.stdout.read()[-3000:]
        second = _train(common + ["train.epochs=1", "--resume"], tmp)
        assert second.returncode == 2, second.stdout[-3000:] + second.stderr[-3000:]
        assert f"in use by another run (pid {first.pid} on {socket.gethostname()}" in second.stderr
    finally:
        first.kill()  # SIGKILL: no clean-up code runs
        first.wait()
    # the kernel dropped the lock with the process: the folder is free at once
    from ebv_ms.engine.run_folder import RunLock
    RunLock(str(out)).acquire().release()


def test_a_refused_resume_changes_nothing_in_the_run_folder(run):
    """Same images, one class folder renamed: the class indices would change meaning."""
    tmp, out = run["tmp"], run["out"]
    other = small_demo_zip(run["src"], tmp, rename={"3": "3x"}, name="demo_renamed")
    before = _snapshot(out)
    r = _train(_common(other, tmp) + [f"output_dir={out}", "train.epochs=1", "--resume"], tmp)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "classes.json" in r.stderr and "class 3 is '3' there and '3x' in the data" in r.stderr
    assert _snapshot(out) == before  # classes.json, train.log, metrics, checkpoints untouched


def test_a_resumed_run_does_not_keep_the_loaded_checkpoint(run, tmp_path):
    """After restoring, neither the checkpoint's tensors nor its EBV copy stay referenced
    (about 4 GB per rank at 100k classes)."""
    from ebv_ms.config import load_config
    from ebv_ms.ebv import EBVSet
    from ebv_ms.engine.checkpoint import CheckpointState
    from ebv_ms.engine.trainer import Trainer
    out = tmp_path / "copy"
    shutil.copytree(run["out"], out)
    args = _common(run["data"], run["tmp"])
    cfg = load_config(args[1], args[2:] + [f"output_dir={out}", "train.epochs=1"])
    trainer = Trainer(cfg, resume="auto")
    try:
        trainer.setup()
        assert trainer.start_epoch >= 1
        gc.collect()
        held = [o for o in gc.get_objects() if type(o) is CheckpointState  # (not isinstance: weak proxies)
                and str(o.path).startswith(str(out))]
        assert held == []
        ebvs = [o for o in gc.get_objects() if type(o) is EBVSet
                and o.checksum() == trainer.ebv.checksum()]
        assert ebvs == [trainer.ebv]  # the run's own set, no second copy from the checkpoint
    finally:
        trainer.lock.release()

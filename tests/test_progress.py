"""Progress output: tqdm's bar on a terminal, plain lines at an interval in a log (#20 §5)."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ebv_ms.progress import LineProgress, progress_bar
from demo_data import small_demo_zip

ROOT = Path(__file__).resolve().parents[1]


def test_a_terminal_gets_the_bar_a_log_gets_lines():
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = progress_bar(total=3, desc="x", file=tty)
        assert type(bar).__module__.startswith("tqdm")
        bar.close()
    os.close(master)
    assert isinstance(progress_bar(total=3, file=io.StringIO()), LineProgress)


def test_lines_at_the_interval_and_one_at_the_end():
    out = io.StringIO()
    bar = progress_bar(total=4, desc="epoch 1/2", unit="step", file=out, interval=0.0,
                       mininterval=1.0, dynamic_ncols=True, leave=False)  # tqdm's own are ignored
    for i in range(4):
        bar.update(1)
        bar.set_postfix(loss=f"{1.0 / (i + 1):.4f}", refresh=False)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 5  # one per update (interval 0), the end
    assert lines[0].startswith("epoch 1/2: 1/4 step (25%), 0 s, ")
    assert lines[-1].startswith("epoch 1/2: 4/4 step (100%)") and lines[-1].endswith("loss=0.2500")
    out = io.StringIO()
    assert list(progress_bar(range(1000), desc="verify", file=out)) == list(range(1000))
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]  # default 30 s: 1 line
    assert out.getvalue().startswith("verify: 1000/1000 it (100%)")
    out = io.StringIO()
    bar = progress_bar(total=9, file=out, disable=True, interval=0.0)
    bar.update(9)
    bar.close()
    assert out.getvalue() == ""


@pytest.mark.slow
def test_train_py_into_a_file_has_no_carriage_returns(tmp_path, demo_zip):
    """train.py with its progress on (the default), stdout and stderr to a file as under nohup
    or mpirun: tqdm's \\r redraws used to pile up there."""
    data = small_demo_zip(demo_zip, tmp_path)
    log = tmp_path / "train.out"
    with open(log, "wb") as f:
        r = subprocess.run([sys.executable, "train.py", "--config", "configs/demo_cpu.yaml",
                            f"data.path={data}", f"output_dir={tmp_path / 'run'}",
                            f"ebv.cache_dir={tmp_path / 'ebv'}", "train.epochs=2",
                            "train.batch_size=16", "data.num_workers=1"],
                           cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=600,
                           env=dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3"))
    text = log.read_bytes()
    assert r.returncode == 0, text[-3000:]
    assert b"\r" not in text
    lines = text.decode().splitlines()
    assert len(lines) < 60 and max(map(len, lines)) < 400, (len(lines), max(map(len, lines)))
    assert any(ln.startswith("epoch 2/2: 10/10 step (100%)") for ln in lines), lines

"""A run killed mid-epoch (SIGKILL) resumes with --resume and finishes with the same epochs; the
archive's broken members are skipped, counted and named in every epoch, resumed ones included."""
import json
import signal
import zipfile
from pathlib import Path

import pytest
from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, timeout=600, script="train.py"):
    return run_script(script, args, cwd, timeout)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


BAD = ("digits/train/3/zz_truncated.jpg", "digits/train/7/zz_empty.jpg")


def _with_bad_members(src, dst):
    """The demo archive plus a truncated JPEG and an empty file among the training images."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item))
        good = zin.read(next(n for n in sorted(zin.namelist()) if n.startswith("digits/train/3/")))
        zout.writestr(BAD[0], good[: len(good) // 2])
        zout.writestr(BAD[1], b"")
    return dst


@pytest.mark.slow
def test_killed_run_resumes_without_losing_an_epoch(tmp_path, demo_zip):
    out, ref = tmp_path / "run", tmp_path / "ref"
    data = _with_bad_members(demo_zip, tmp_path / "digits.zip")
    common = ["--config", str(ROOT / "configs" / "demo_cpu.yaml"), f"data.path={data}",
              f"ebv.cache_dir={tmp_path / 'ebv'}", "train.epochs=3", "train.progress_bar=false"]
    # 1438 + 2 training members / 32 = 45 steps per epoch: step 60 is in the middle of epoch 2
    # train.py with the KillAtStep callback of tests/probes.py installed
    killed = _run(common + [f"output_dir={out}", "--kill-at-step", "60"], tmp_path,
                  script=ROOT / "tests" / "probed_train.py")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert [r["epoch"] for r in _records(out)] == [1]
    assert not list(out.glob(".*tmp*"))                       # no half-written checkpoint

    again = _run(common + [f"output_dir={out}"], tmp_path)     # forgetting --resume is refused
    assert again.returncode == 2 and "--resume" in again.stderr

    other = _run(common + [f"output_dir={out}", "--resume", "ebv.seed=7"], tmp_path)
    assert other.returncode == 2 and "ebv.seed=0" in other.stderr and "ebv.seed=7" in other.stderr

    # the EBV cache is gone: the resume finds the set the checkpoint records (inline here)
    for f in (tmp_path / "ebv").iterdir():
        f.unlink()
    resumed = _run(common + [f"output_dir={out}", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    recs = _records(out)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    assert [r["global_step"] for r in recs] == [45, 90, 135]
    log = (out / "train.log").read_text()
    assert "resumed from" in log and "epoch 1/3 done" in log
    # the broken members: skipped, counted in every epoch (the resumed ones too) and named
    assert [r["bad_samples"] for r in recs] == [2, 2, 2]
    assert all(name in log for name in BAD)
    classes = json.loads((out / "classes.json").read_text())
    assert classes["class_names"] == [str(i) for i in range(10)]

    # the same run without the kill: same lr curve, same data order, same numbers
    full = _run(common + [f"output_dir={ref}"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    for a, b in zip(recs, _records(ref)):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-6)
        assert a["top1"] == pytest.approx(b["top1"], abs=0.3)  # <= 1 of 359 images

    done = _run(common + [f"output_dir={out}", "--resume"], tmp_path)  # nothing is repeated
    assert done.returncode == 0 and "already covers all 3 epochs" in done.stdout
    assert [r["epoch"] for r in _records(out)] == [1, 2, 3]

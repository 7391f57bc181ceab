"""train.py on an archive with broken members in both splits: what the run records, which the
pipeline tests (test_data_pipeline.py) do not see: metrics.jsonl counts the training split's
bad samples and the evaluation's separately, train.log names them, classes.json is saved."""
import json
import zipfile
from pathlib import Path

import pytest
from conftest import run_script
from demo_data import small_demo_zip

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bad_members_are_skipped_counted_and_named(tmp_path, demo_zip):
    src, bad = small_demo_zip(demo_zip, tmp_path), tmp_path / "bad.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item))
        good = zin.read(sorted(n for n in zin.namelist() if n.startswith("digits/train/3/"))[0])
        zout.writestr("digits/train/3/zz_truncated.jpg", good[: len(good) // 2])
        zout.writestr("digits/train/7/zz_empty.jpg", b"")
        zout.writestr("digits/val/5/zz_text.jpg", b"not an image")
    out = tmp_path / "run"
    r = run_script("train.py", ["--config", ROOT / "configs" / "demo_cpu.yaml", f"data.path={bad}",
                                f"output_dir={out}", f"ebv.cache_dir={tmp_path / 'ebv'}",
                                "train.epochs=1", "train.batch_size=16", "eval.batch_size=40",
                                "train.progress_bar=false"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(rec["bad_samples"], rec["eval_bad_samples"]) for rec in records] == [(2, 1)]
    log = (out / "train.log").read_text()
    for name in ("digits/train/3/zz_truncated.jpg", "digits/train/7/zz_empty.jpg",
                 "digits/val/5/zz_text.jpg"):
        assert name in log
    classes = json.loads((out / "classes.json").read_text())
    assert classes["class_names"] == [str(i) for i in range(10)]

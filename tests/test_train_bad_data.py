"""train.py on an archive with broken members: it finishes, counts and names them per epoch,
and saves the class mapping with the run."""
import json
import zipfile
from pathlib import Path

import pytest
from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bad_members_are_skipped_counted_and_named(tmp_path, demo_zip):
    src, bad = demo_zip, tmp_path / "bad.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item))
        good = zin.read("digits/train/3/" + sorted(
            n.rsplit("/", 1)[1] for n in zin.namelist() if n.startswith("digits/train/3/"))[0])
        zout.writestr("digits/train/3/zz_truncated.jpg", good[: len(good) // 2])
        zout.writestr("digits/train/7/zz_empty.jpg", b"")
    out = tmp_path / "run"
    r = run_script("train.py", ["--config", ROOT / "configs" / "demo_cpu.yaml", f"data.path={bad}",
                                f"output_dir={out}", f"ebv.cache_dir={tmp_path / 'ebv'}",
                                "train.epochs=2", "train.progress_bar=false"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["bad_samples"] for rec in records] == [2, 2]  # every epoch meets both again
    log = (out / "train.log").read_text()
    assert "digits/train/3/zz_truncated.jpg" in log and "digits/train/7/zz_empty.jpg" in log
    classes = json.loads((out / "classes.json").read_text())
    assert classes["class_names"] == [str(i) for i in range(10)]

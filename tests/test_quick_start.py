"""The README's main job, run for real on CPU: demo data -> EBVs -> train -> eval (~1-2 min)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_start_cpu_reaches_90_percent_and_eval_reproduces(tmp_path):
    env = dict(os.environ, EBV_PYTHON=sys.executable, EBV_FORCE_CPU="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out_dir, cache = tmp_path / "run", tmp_path / "ebv"
    cmd = ["bash", "run_with_gpu/run_quick_start.sh", "configs/demo_cpu.yaml",
           f"output_dir={out_dir}", f"ebv.cache_dir={cache}",
           f"data.path={tmp_path / 'demo' / 'digits.zip'}", "train.progress_bar=false"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "running the same flow on CPU with the demo config" in log
    assert (tmp_path / "demo" / "digits.zip").is_file()      # demo images written on first use
    assert len(list(cache.glob("ebv_N10_d32_*.npz"))) == 1     # EBVs generated once, cached

    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 9))
    best = max(records, key=lambda r: r["top1"])
    assert best["top1"] >= 90.0, records                       # a real learning bar on real images
    assert records[0]["train_loss"] > 2 * records[-1]["train_loss"]

    ev = json.loads((out_dir / "eval.json").read_text())
    assert ev["ckpt"].endswith("best.ckpt") and ev["epoch"] == best["epoch"]
    assert ev["num_samples"] == best["eval_samples"]
    assert ev["top1"] == pytest.approx(best["top1"], abs=1e-9)  # eval.py reproduces training's number
    assert ev["top5"] == pytest.approx(best["top5"], abs=1e-9)
    assert ev["params_frozen"] > 0 and ev["params_trainable"] > 0
    assert "quick start: done on CPU" in log

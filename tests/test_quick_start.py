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


def test_a_config_is_relative_to_where_the_script_was_run(tmp_path, monkeypatch, capsys):
    """CONFIG was looked up after a chdir to the repository: a path relative to the caller's
    folder failed, or picked the repository's file of that name. The default stays the demo."""
    from ebv_ms.tools import launch as L
    record, python = tmp_path / "steps.txt", tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')  # records each step's arguments
    python.chmod(0o755)
    mine = tmp_path / "configs" / "demo_cpu.yaml"  # the repository's demo config's name
    mine.parent.mkdir()
    mine.write_text(f"output_dir: {tmp_path / 'out'}\ndata: {{path: {tmp_path}}}\n")
    (tmp_path / "c.yaml").write_text(mine.read_text())
    monkeypatch.setenv("EBV_FORCE_CPU", "1")
    monkeypatch.delenv("EBV_PYTHON", raising=False)

    def quick_start(*args):
        monkeypatch.chdir(tmp_path)
        record.unlink(missing_ok=True)
        a = L.parse_args(L.SPECS["quick-start"], list(args), "run_with_gpu/run_quick_start.sh",
                         "train.py")
        launch = L.Launch("quick-start", a, "GPU", str(python), "train.py", dict(os.environ),
                          dry_run=False)
        assert L.launch_quick_start(launch) == 0
        return [line.split() for line in record.read_text().splitlines()], capsys.readouterr().out

    for given, want in (("configs/demo_cpu.yaml", mine), ("c.yaml", tmp_path / "c.yaml"),
                        (str(tmp_path / "c.yaml"), tmp_path / "c.yaml")):
        steps, out = quick_start(given)
        assert [s[s.index("--config") + 1] for s in steps[:2]] == [str(want)] * 2, steps
        assert f"running {want} on CPU" in out
    steps, out = quick_start(f"data.path={tmp_path}", f"output_dir={tmp_path / 'out'}")
    assert steps[0][steps[0].index("--config") + 1] == "configs/demo_cpu.yaml"
    assert "with the demo config (configs/demo_cpu.yaml)" in out

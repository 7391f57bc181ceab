"""The training loop reads the loss back to the host once per log interval, not every step
(issue 18 §4), and what it logs is unchanged: each logged loss and each epoch's train_loss
against the losses tests/probes.py's LossProbe computes itself, step by step (real train.py,
real JPEGs, small_mlp without BatchNorm so the probe's own forward changes nothing)."""
import json
import re
from pathlib import Path

import pytest
from conftest import run_script
from demo_data import small_demo_zip

ROOT = Path(__file__).resolve().parents[1]


def _probe_run(tmp_path, demo_zip, *extra):
    data = small_demo_zip(demo_zip, tmp_path)
    out = tmp_path / "run"
    r = run_script(ROOT / "tests" / "probed_train.py",
                   ["--config", ROOT / "configs" / "demo_cpu.yaml", f"output_dir={out}",
                    f"data.path={data}", f"ebv.cache_dir={tmp_path / 'ebv'}", "data.num_workers=1",
                    "train.progress_bar=false", "train.batch_size=16", "train.log_interval=3",
                    "model.backbone=small_mlp",
                    "model.backbone_kwargs={widths: [], image_size: 8, grayscale: true}",
                    "--loss-probe", *extra], tmp_path, timeout=300)
    probe = json.loads((out / "logs" / "loss_probe_rank_0.json").read_text())
    return r, out, probe


@pytest.mark.slow
def test_logged_losses_are_the_steps_losses_read_once_per_interval(tmp_path, demo_zip):
    r, out, probe = _probe_run(tmp_path, demo_zip, "train.epochs=2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ref, reads = probe["ref_losses"], probe["reads"]
    spe = 10                                              # 160 images / 16
    assert len(ref) == 2 * spe
    logged = re.findall(r"epoch (\d+) step (\d+)/10 loss ([0-9.]+)", (out / "train.log").read_text())
    assert [(int(e), int(s)) for e, s, _ in logged] == [(e, s) for e in (1, 2) for s in (3, 6, 9)]
    for e, s, loss in logged:
        assert float(loss) == pytest.approx(ref[(int(e) - 1) * spe + int(s) - 1], abs=1.5e-4)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for rec in recs:
        e = rec["epoch"]
        assert rec["train_loss"] == pytest.approx(sum(ref[(e - 1) * spe:e * spe]) / spe, rel=1e-5)
    # host reads made while running steps 1..9 of each epoch (step 10 is followed by the
    # evaluation; the run's very first step compiles the graph, which reads parameters): one
    # at each log interval (steps 3, 6, 9), none in between; the old loop read the loss and the
    # finiteness flag after every step
    want = [1 if (k + 1) % 3 == 0 else 0 for k in range(spe - 1)]
    assert reads[1:spe - 1] == want[1:] and reads[spe:2 * spe - 1] == want, reads


@pytest.mark.slow
def test_divergence_stops_the_run_within_one_log_interval(tmp_path, demo_zip):
    r, out, probe = _probe_run(tmp_path, demo_zip, "train.epochs=1", "optim.lr=1e30",
                               "scheduler.name=constant")
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.search(r"training diverged at epoch 1 step (\d+): loss is nan", r.stderr)
    assert m, r.stderr[-2000:]
    ref = probe["ref_losses"]
    first_bad = next(i for i, v in enumerate(ref) if v != v)  # the probe's own view: first NaN
    assert int(m.group(1)) == first_bad
    assert len(ref) <= first_bad + 3                          # stopped within one interval
    assert not (out / "last.ckpt").exists()

"""What a 2-rank run gives a user (issue 16 §2, §3): real train.py on 2 CPU ranks through
scripts/run_distribute_gpu.sh (dynamic-cluster scheduler + mpirun), the demo digits cut to 160
training / 39 validation JPEGs, batch 16 per rank: 5 steps per epoch.

- the saved BatchNorm statistics keep moving every epoch, and train.py's per-epoch top-1 is
  eval.py's on that epoch's checkpoint;
- a run killed after epoch 1 and resumed ends with the uninterrupted run's model, bit for bit;
- 2 ranks x batch b == 1 rank x batch 2b over the same samples (no BatchNorm): same weights;
- ranks that see different checkpoints stop with one message instead of hanging.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from demo_data import small_demo_zip

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "scripts" / "run_distribute_gpu.sh"
PROBED_TRAIN = ROOT / "tests" / "probed_train.py"
DEMO_CONFIG = ROOT / "configs" / "demo_cpu.yaml"

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")]


def _env():
    env = dict(os.environ, PYTHON=sys.executable, DEVICE_TARGET="CPU", GLOG_v="2",
               ENTRY=str(PROBED_TRAIN))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MS_ROLE", None)
    return env


def _launch(args, timeout=400):
    return subprocess.run(["bash", str(LAUNCH), *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _params(path, prefix=""):
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()
            if k.startswith(prefix) and hasattr(v, "asnumpy")}  # metadata entries are strings


def _bn_stats(path):
    return {k: v for k, v in _params(path).items() if k.endswith(("moving_mean", "moving_variance"))}


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, demo_zip):
    """The reference: 2 ranks, 3 epochs, every epoch's checkpoint kept (tests/probes.py)."""
    tmp = tmp_path_factory.mktemp("dist_outcomes")
    data = small_demo_zip(demo_zip, tmp)
    # small_mlp with one BatchNorm layer: a step costs ~10x less than the demo CNN on CPU
    common = [f"data.path={data}", "eval.batch_size=40", "data.num_workers=1",
              "train.batch_size=16", "train.epochs=3", f"ebv.cache_dir={tmp / 'ebv'}",
              "train.progress_bar=false", "model.backbone=small_mlp",
              "model.backbone_kwargs={widths: [32], image_size: 8, grayscale: true}"]
    out = tmp / "ref"
    r = _launch([DEMO_CONFIG, 2, f"output_dir={out}", *common, "--", "--keep-epochs"])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return tmp, out, common


def test_bn_statistics_move_every_epoch_and_train_top1_is_eval_py(two_rank_run):
    tmp, out, _ = two_rank_run
    stats = [_bn_stats(out / f"epoch_{k}.ckpt") for k in (1, 2, 3)]
    assert stats[0], "no BatchNorm statistics in the checkpoint"
    for a, b, (e1, e2) in ((stats[0], stats[1], (1, 2)), (stats[1], stats[2], (2, 3))):
        frozen = [k for k in a if np.array_equal(a[k], b[k])]
        assert not frozen, f"BN statistics unchanged between epochs {e1} and {e2}: {frozen}"
    # train.py's per-epoch evaluation (every rank its shard, rank 0's statistics) against
    # eval.py alone on that epoch's checkpoint
    recs = _records(out)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    evals = {rec["epoch"]: subprocess.Popen(  # the three eval.py runs side by side
        [sys.executable, str(ROOT / "eval.py"), "--ckpt", str(out / f"epoch_{rec['epoch']}.ckpt"),
         "--no-progress", "--json", str(tmp / f"eval_{rec['epoch']}.json")], cwd=tmp, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rec in recs}
    for rec in recs:
        proc = evals[rec["epoch"]]
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
        got = json.loads((tmp / f"eval_{rec['epoch']}.json").read_text())
        assert got["num_samples"] == rec["eval_samples"] == 39
        assert (got["top1"], got["top5"]) == (rec["top1"], rec["top5"]), rec["epoch"]


def test_killed_two_rank_run_resumes_to_the_uninterrupted_model(two_rank_run):
    """SIGKILL rank 0 before the first step of epoch 2 (epoch 1's checkpoint written), then
    --resume: every saved tensor (weights, BN statistics, optimizer state) equals the
    uninterrupted run's bit for bit (same data order, same reduction order on 2 CPU ranks)."""
    tmp, ref, common = two_rank_run
    out = tmp / "killed"
    r = _launch([DEMO_CONFIG, 2, f"output_dir={out}", *common, "--", "--kill-at-step", "5",
                 "--kill-rank", "0"])
    assert r.returncode != 0
    assert [rec["epoch"] for rec in _records(out)] == [1]
    r = _launch([DEMO_CONFIG, 2, f"output_dir={out}", *common, "--resume"])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "resumed from" in (out / "train.log").read_text()
    got, want = _params(out / "last.ckpt"), _params(ref / "last.ckpt")
    assert sorted(got) == sorted(want)
    differ = [k for k in want if not np.array_equal(got[k], want[k])]
    assert not differ, differ
    keys = ("epoch", "train_loss", "top1", "top5", "lr")
    assert [{k: rec[k] for k in keys} for rec in _records(out)] == \
        [{k: rec[k] for k in keys} for rec in _records(ref)]


def test_ranks_that_see_different_checkpoints_stop_with_one_message(two_rank_run):
    """Rank 1 given another (empty) output_dir, as a host without the shared run folder:
    instead of rank 1 starting from scratch while rank 0 resumes (a hang), both stop."""
    tmp, ref, common = two_rank_run
    out, elsewhere = tmp / "split", tmp / "rank1_view"
    shutil.copytree(ref, out, ignore=shutil.ignore_patterns("logs", "epoch_*.ckpt"))
    before = (out / "last.ckpt").read_bytes()
    r = _launch([DEMO_CONFIG, 2, f"output_dir={out}", *common, "train.epochs=4", "--resume",
                 "--", f"--rank1-output-dir={elsewhere}"], timeout=200)
    assert r.returncode != 0
    text = r.stdout + r.stderr + "".join(p.read_text() for p in (out / "logs").glob("rank_*.log"))
    assert "rank 0 sees a checkpoint at epoch 3 (global step 15" in text
    assert "rank 1 sees no checkpoint (would start from scratch)" in text
    assert "Traceback" not in text
    assert (out / "last.ckpt").read_bytes() == before
    assert [rec["epoch"] for rec in _records(out)] == [1, 2, 3]


def test_two_ranks_equal_one_rank_with_twice_the_batch(tmp_path, demo_zip):
    """No BatchNorm (small_mlp without hidden layers: flatten -> Dense -> EBV head), dynamic
    loss scaling on: rank r of 2 takes samples r, r+2, ... of each epoch's permutation, so step k
    of 2 ranks x 16 covers the samples of step k of 1 rank x 32. Mean-reduced gradients, the same
    lr schedule and an unscaled update make the weights agree after 10 steps."""
    data = small_demo_zip(demo_zip, tmp_path)
    common = [f"data.path={data}", "data.num_workers=1", "train.epochs=2",
              f"ebv.cache_dir={tmp_path / 'ebv'}", "train.progress_bar=false",
              "model.backbone=small_mlp",
              "model.backbone_kwargs={widths: [], image_size: 8, grayscale: true}",
              "train.loss_scale=dynamic", "train.loss_scale_value=1024", "eval.batch_size=40"]
    two, one = tmp_path / "two", tmp_path / "one"
    r = _launch([DEMO_CONFIG, 2, f"output_dir={two}", "train.batch_size=16", *common])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(DEMO_CONFIG),
                        f"output_dir={one}", "train.batch_size=32", *common], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [rec["global_step"] for rec in _records(two)] == \
        [rec["global_step"] for rec in _records(one)] == [5, 10]
    a, b = _params(two / "last.ckpt"), _params(one / "last.ckpt")
    start = _params(two / "last.ckpt")  # names of the trainable weights: backbone + projection
    weights = [k for k in start if not k.startswith(("optimizer/", "loss_scale/"))
               and "ebv" not in k]
    assert weights
    for k in weights:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=2e-6, err_msg=k)
    assert not np.allclose(a[weights[0]], 0)

"""eval.py from a checkpoint alone (config + EBV set recorded with it), and its clear errors."""
import json
import os
from pathlib import Path

import pytest
from conftest import run_script

pytestmark = pytest.mark.slow  # see README 'Tests and CI'

ROOT = Path(__file__).resolve().parents[1]


def _py(script, args, cwd):
    return run_script(script, args, cwd)


@pytest.fixture(scope="module")
def trained(demo_run):
    """The session's short demo run (conftest.demo_run): its EBV set is next to the checkpoints
    (as a 100k-class set would be) and its EBV cache is deleted."""
    return demo_run


def test_eval_from_checkpoint_alone_reproduces_logged_accuracy(trained, tmp_path):
    _, out = trained
    r = _py("eval.py", ["--ckpt", str(out / "last.ckpt"), "--json", str(tmp_path / "e.json"),
                        "--no-progress"], tmp_path)  # another folder: nothing but the checkpoint
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ev = json.loads((tmp_path / "e.json").read_text())
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert ev["epoch"] == 2 and ev["top1"] == pytest.approx(last["top1"], abs=1e-9)
    assert ev["correct5"] >= ev["correct1"] and ev["num_samples"] == last["eval_samples"]
    assert "top-1" in r.stdout and "images/s" in r.stdout and "parameters" in r.stdout
    assert "not loaded" not in r.stdout + r.stderr  # the frozen matrix is not in it, on purpose
    assert ev["params_total"] == ev["params_trainable"] + ev["params_frozen"]
    # a different evaluation size runs through the same checkpoint (CNN with global pooling)
    r16 = _py("eval.py", ["--ckpt", str(out / "last.ckpt"), "--test-size", "12", "--no-progress"],
              tmp_path)
    assert r16.returncode == 0, r16.stderr[-3000:]


def test_eval_errors_are_clear(trained, tmp_path):
    _, out = trained
    r = _py("eval.py", ["--ckpt", str(tmp_path / "nope.ckpt")], tmp_path)
    assert r.returncode == 2 and "checkpoint not found" in r.stderr
    import mindspore as ms
    plain = tmp_path / "plain.ckpt"
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor([1.0])}], str(plain))
    r = _py("eval.py", ["--ckpt", str(plain)], tmp_path)
    assert r.returncode == 2 and "records no config" in r.stderr and "--config" in r.stderr
    r = _py("eval.py", ["--ckpt", str(out / "best.ckpt"), "model.num_clases=3"], tmp_path)
    assert r.returncode == 2 and "model.num_clases" in r.stderr and "num_classes" in r.stderr


def test_eval_finds_rebuilds_or_refuses_the_ebv_set(trained, tmp_path):
    _, out = trained
    sets = [f for f in os.listdir(out) if f.startswith("ebv_N10_d32_") and f.endswith(".npz")]
    assert len(sets) == 1  # written once for last.ckpt and best.ckpt
    import mindspore as ms
    assert "head.ebv" not in ms.load_checkpoint(str(out / "best.ckpt"))
    # the checkpoint alone: the demo's set is a closed form (orthonormal), rebuilt and verified
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "best.ckpt").write_bytes((out / "best.ckpt").read_bytes())
    r = _py("eval.py", ["--ckpt", str(alone / "best.ckpt"), "--no-progress",
                        "--json", str(tmp_path / "e.json")], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert os.listdir(alone) == ["best.ckpt"]  # rebuilt in memory (the EBV cache is gone too)
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["top1"] == pytest.approx(ev["logged_top1"], abs=1e-9)
    # an ebv.path given at evaluation time that is not the checkpoint's set: refused, not ignored
    import numpy as np
    from ebv_ms.ebv import EBVSet, save_ebv
    other = tmp_path / "other.npy"
    save_ebv(EBVSet(np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32)), other)
    r = _py("eval.py", ["--ckpt", str(out / "best.ckpt"), f"ebv.path={other}"], tmp_path)
    assert r.returncode == 2 and "EBV mismatch" in r.stderr and sets[0] in r.stderr, r.stderr[-2000:]
    r = _py("eval.py", ["--ckpt", str(out / "best.ckpt"), "--ebv", str(other)], tmp_path)
    assert r.returncode == 2 and "EBV mismatch" in r.stderr, r.stderr[-2000:]

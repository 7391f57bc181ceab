"""Parameter report: the paper's numbers (supp. Table 1) and agreement with built models."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ebv_ms.config import load_config
from ebv_ms.ebv import EBVSet
from ebv_ms.models import HEADS, create_classifier
from ebv_ms.models.classifier import PARTS, count_cell
from ebv_ms.tools.params import main, parameter_report

ROOT = Path(__file__).resolve().parents[1]


def count_parameters(net):
    """{part: PartCount} of a built Classifier, to compare with parameter_report."""
    return {part: count_cell(getattr(net, part)) for part in PARTS}


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


def test_resnet50_100k_classes_fc_vs_ebv(tmp_path, capsys):
    cfg = _write(tmp_path, "model:\n  backbone: resnet50\n  head: ebv\n  num_classes: 100000\n"
                           "  embed_dim: 5000\n  tau: 0.007\n")
    assert main(["--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "head = ebv (configured)" in out and "head = fc (alternative)" in out
    assert "trainable: 33.8M" in out and "trainable: 228.4M" in out
    assert "frozen (fixed class vectors): 500.0M" in out
    report = parameter_report(load_config(cfg).model)
    ebv_total = sum(c.trainable for c in report["ebv"].values())
    fc_total = sum(c.trainable for c in report["fc"].values())
    assert round(ebv_total / 1e6, 1) == 33.8 and round(fc_total / 1e6, 1) == 228.4
    assert report["ebv"]["projection"].trainable == 2048 * 5000 + 5000
    assert report["fc"]["head"].trainable == 2048 * 100000 + 100000


def test_resnet50_imagenet_d1000(tmp_path, capsys):
    cfg = _write(tmp_path, "model:\n  backbone: resnet50\n  head: ebv\n  num_classes: 1000\n  embed_dim: 1000\n")
    assert main(["--config", cfg, "model.head=fc"]) == 0
    out = capsys.readouterr().out
    assert "head = fc (configured)" in out and "head = ebv (alternative)" in out
    assert out.count("trainable: 25.6M") == 2


@pytest.mark.parametrize("head", HEADS)
def test_report_equals_built_model_small_cnn(head):
    cfg = load_config(overrides=["model.backbone=small_cnn", f"model.head={head}",
                                 "model.num_classes=9", "model.embed_dim=6"]).model
    ebv = EBVSet(np.random.default_rng(0).standard_normal((9, 6)).astype(np.float32))
    net = create_classifier(ebv=ebv if head == "ebv" else None, **{k: v for k, v in cfg.items()})
    assert count_parameters(net) == parameter_report(cfg, heads=[head])[head]


def test_report_equals_built_resnet50_ebv():
    cfg = load_config(overrides=["model.num_classes=1000", "model.embed_dim=1000"]).model
    ebv = EBVSet(np.random.default_rng(0).standard_normal((1000, 1000)).astype(np.float32))
    net = create_classifier(ebv=ebv, **dict(cfg))
    counts = count_parameters(net)
    assert counts == parameter_report(cfg, heads=["ebv"])["ebv"]
    assert sum(c.trainable for c in counts.values()) == 25_557_032


@pytest.mark.slow
def test_cli_subprocess_and_bad_key(tmp_path):
    cfg = _write(tmp_path, "model:\n  backbone: small_cnn\n  head: fixed_random_cos\n  num_classes: 10\n  embed_dim: 8\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "ebv_ms.tools.params", "--config", cfg, "--json"],
                         capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert run.returncode == 0, run.stderr
    assert '"fixed_random_cos"' in run.stdout and '"frozen": 80' in run.stdout
    bad = subprocess.run([sys.executable, "-m", "ebv_ms.tools.params", "--config", cfg, "model.embed_dims=3"],
                         capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)
    assert bad.returncode == 2 and "model.embed_dims" in bad.stderr and "did you mean" in bad.stderr

"""Analysis: blockwise pair statistics against a full Gram matrix, and the inspect CLI end to end."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ebv_ms.ebv import EBVSet, pairwise_stats, save_ebv
from ebv_ms.tools.inspect import main

ROOT = Path(__file__).resolve().parents[1]


def _run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "ebv_ms.tools.inspect", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("block_size", [7, 64, 1000])
def test_pair_stats_match_full_gram(block_size):
    w = np.random.default_rng(5).standard_normal((150, 12))
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    c = (wn @ wn.T)[np.triu_indices(150, 1)]
    ang = np.degrees(np.arccos(np.clip(c, -1, 1)))
    st = pairwise_stats(w.astype(np.float32), block_size=block_size, bins=36)
    w32 = w.astype(np.float32).astype(np.float64)
    w32 /= np.linalg.norm(w32, axis=1, keepdims=True)
    c32 = (w32 @ w32.T)[np.triu_indices(150, 1)]
    assert st.coherence == pytest.approx(np.abs(c32).max(), abs=1e-12)
    assert st.mean_delta_angle_deg == pytest.approx(np.abs(ang - 90).mean(), abs=1e-5)
    assert st.num_pairs == 150 * 149 // 2
    assert np.array_equal(st.hist_counts, np.histogram(
        np.degrees(np.arccos(np.clip(c32, -1, 1))), bins=np.linspace(0, 180, 37))[0])


def test_pair_stats_known_sets():
    st = pairwise_stats(np.eye(6)[:4], block_size=3)          # orthonormal: all 90 deg
    assert (st.coherence, st.min_angle_deg, st.mean_delta_angle_deg) == (0.0, 90.0, 0.0)
    d = 5                                                     # simplex: every pair at 1/d
    st = pairwise_stats(np.eye(d + 1) - 1.0 / (d + 1), block_size=2)
    assert st.mean_delta_angle_deg == pytest.approx(math.degrees(math.asin(1 / d)), abs=1e-12)


@pytest.mark.slow
def test_inspect_cli_on_official_file(official_dir, tmp_path):
    png = tmp_path / "angles.png"
    r = _run_cli(official_dir / "pytorch_eq_200_1000.pkl", "--hist", png, "--block-size", "256")
    assert r.returncode == 0, r.stderr
    out = r.stdout

    def field(label):
        m = re.search(rf"^{re.escape(label)}\s*:\s*(\S+)", out, re.M)
        assert m, f"{label!r} missing from:\n{out}"
        return m.group(1)

    assert field("N (classes)") == "1000" and field("d (dimension)") == "200"
    assert field("min angle (deg)") == "85.41"                       # README / paper Table 2
    assert float(field("coherence max|cos|")) == pytest.approx(0.08003, abs=1e-5)
    assert float(field("ave. del. ang. (deg)")) == pytest.approx(3.368, abs=0.001)
    assert float(field("Welch bound")) == pytest.approx(0.06328, abs=1e-5)
    assert "pair stats" in r.stderr                                  # progress bar: 10 blocks
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_inspect_json_and_native_file(tmp_path, capsys):
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))
    p = save_ebv(EBVSet(q[:5], alpha=0.0, method="closed_form:orthonormal", seed=3),
                 tmp_path / "o.npz")
    assert main([str(p), "--json", "--save", str(tmp_path / "o.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "o.npy"), EBVSet(q[:5]).vectors)
    rep = json.loads(capsys.readouterr().out)
    assert rep["num_classes"] == 5 and rep["dim"] == 8 and rep["seed"] == 3
    assert rep["coherence"] < 1e-6 and rep["min_angle_deg"] == pytest.approx(90.0, abs=1e-4)
    assert rep["method"] == "closed_form:orthonormal"


def test_inspect_bad_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones(3))
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and "2-D" in err
    assert main([str(tmp_path / "nope.npz")]) == 2
    assert "not found" in capsys.readouterr().err

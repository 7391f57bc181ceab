import math

import numpy as np
import pytest

from ebv_ms.config import ConfigError, load_config
from ebv_ms.ebv import EBVError, EBVSet, coherence, pairwise_stats, welch_bound


def test_orthonormal_has_zero_coherence():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))
    assert coherence(q.T[:50], block_size=16) < 1e-12


def test_simplex_coherence_is_one_over_d():
    d = 9
    e = np.eye(d + 1) - 1.0 / (d + 1)      # d+1 centred points span a d-dim subspace
    st = pairwise_stats(e, block_size=4)
    assert st.coherence == pytest.approx(1.0 / d, abs=1e-12)
    assert st.min_angle_deg == pytest.approx(math.degrees(math.acos(1 / d)))
    assert st.num_pairs == (d + 1) * d // 2


def test_blocks_match_full_gram():
    w = np.random.default_rng(1).standard_normal((37, 5))
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    g = np.abs(wn @ wn.T)[np.triu_indices(37, 1)]
    st = pairwise_stats(w, block_size=8, bins=18)
    assert st.coherence == pytest.approx(g.max(), abs=1e-12)
    assert st.hist_counts.sum() == g.size
    assert welch_bound(37, 5) == pytest.approx(math.sqrt(32 / (5 * 36)))


def test_ebvset_rejects_bad_matrices():
    for bad in (np.zeros((3, 4)), np.ones(5), np.array([[1.0, np.nan]]), np.array([["a", "b"]])):
        with pytest.raises(EBVError):
            EBVSet(bad)
    s = EBVSet(np.eye(3) * 2.0)
    assert np.allclose(np.linalg.norm(s.vectors, axis=1), 1.0)
    assert s.checksum() == EBVSet(np.eye(3)).checksum()


def test_config_names_bad_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hed: ebv\n")
    with pytest.raises(ConfigError, match=r"model\.hed.*did you mean 'model\.head'"):
        load_config(str(p))
    with pytest.raises(ConfigError, match="model.tau"):
        load_config(overrides=["model.tau=fast"])
    cfg = load_config(overrides=["model.tau=1", "model.head=fc"])
    assert cfg.model.tau == 1.0 and isinstance(cfg.model.tau, float) and cfg.model.head == "fc"

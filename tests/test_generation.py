"""Generation: closed forms with known coherences, Algorithm 1's stopping rule, the default
method, alpha checks and the CLI."""
import math
import os
from pathlib import Path

import numpy as np
import pytest

from ebv_ms.ebv import coherence, load_ebv, welch_bound
from ebv_ms.generation import GenerationError, create_ebv
from ebv_ms.generation import closed_form as cf


# ------------------------------------------------------------------ closed forms (exact)
def test_orthonormal_when_n_le_d():
    e = create_ebv(50, 64, seed=3, progress=False)
    assert e.method == "closed_form:orthonormal" and e.seed == 3
    assert coherence(e.vectors) < 1e-6
    np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 1.0, atol=1e-6)


def test_simplex_when_n_is_d_plus_1():
    e = create_ebv(10, 9, progress=False)
    assert e.method == "closed_form:simplex"
    g = e.vectors.astype(np.float64) @ e.vectors.T.astype(np.float64)
    off = g[~np.eye(10, dtype=bool)]
    np.testing.assert_allclose(off, -1.0 / 9, atol=1e-6)       # all pairs at exactly -1/d
    assert coherence(e.vectors) == pytest.approx(1 / 9, abs=1e-6)


@pytest.mark.parametrize("d,n,coh", [(16, 144, 0.25), (64, 2112, 0.125)])
def test_kerdock_full_sets_have_coherence_one_over_sqrt_d(d, n, coh):
    assert cf.kerdock_capacity(d) == n
    e = create_ebv(n, d, progress=False)
    assert e.method == "closed_form:kerdock" and e.num_classes == n
    assert coherence(e.vectors) == pytest.approx(coh, abs=1e-7)
    # no two vectors coincide up to sign: 144 / 2112 distinct lines
    assert coherence(e.vectors) < 1 - 1e-3


def check_kerdock(dim: int) -> bool:
    """True if every A_u + A_v (u != v) is non-singular over GF(2), i.e. the bases are unbiased:
    its integer determinant is odd (exact in float64: at most 12 x 12 0/1 entries here)."""
    a = cf.kerdock_polar_forms(dim)
    iu, iv = np.triu_indices(a.shape[0], 1)
    return all(bool((np.rint(np.linalg.det(a[iu[s:s + 65536]] ^ a[iv[s:s + 65536]])) % 2).all())
               for s in range(0, iu.size, 65536))


@pytest.mark.parametrize("d", [4, 16, 64, 256])
def test_kerdock_polar_forms_pairwise_nonsingular(d):
    assert check_kerdock(d)


def test_kerdock_d1024_generated_on_demand():
    d = 1024
    assert cf.kerdock_capacity(d) == 525_312
    # vectors from 4 different bases (incl. the standard one) and the last index
    idx = np.concatenate([np.arange(0, 300), d + np.arange(0, 300), 100 * d + np.arange(300),
                          np.array([cf.kerdock_capacity(d) - 1])])
    w = cf.kerdock_vectors(d, idx)
    assert w.shape == (901, d) and w.dtype == np.float32
    assert coherence(w) == pytest.approx(1 / 32, abs=1e-7)
    # within one basis the vectors are orthogonal
    b = w[300:600].astype(np.float64)
    assert np.abs(b @ b.T - np.eye(300)).max() < 1e-6


def test_kerdock_subset_is_deterministic_from_seed():
    a = create_ebv(500, 16 * 4, seed=1, progress=False).vectors
    b = create_ebv(500, 16 * 4, seed=1, progress=False).vectors
    c = create_ebv(500, 16 * 4, seed=2, progress=False).vectors
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert coherence(c) == pytest.approx(0.125, abs=1e-7)


def test_padded_kerdock_meets_alpha_without_optimising():
    e = create_ebv(1000, 100, alpha=0.13, progress=False)
    assert e.method == "closed_form:kerdock_padded" and e.extra["base_dim"] == 64
    assert e.alpha == 0.13 and e.seed == 0
    assert coherence(e.vectors) == pytest.approx(0.125, abs=1e-7)


# ------------------------------------------------------------------ alpha checks
def test_alpha_below_welch_bound_is_refused_with_the_bound():
    wb = welch_bound(1000, 100)
    with pytest.raises(GenerationError, match=f"{wb:.5f}"):
        create_ebv(1000, 100, alpha=0.09, progress=False)
    with pytest.raises(GenerationError, match="unknown method"):
        create_ebv(10, 4, method="magic", progress=False)
    with pytest.raises(GenerationError, match="needs alpha"):
        create_ebv(10, 4, method="official", progress=False)


# ------------------------------------------------------------------ official (Algorithm 1)
def test_official_stops_exactly_at_its_rule():
    from ebv_ms.generation.factory import normal_init
    from ebv_ms.generation.iterative import OFFICIAL_TOL, run_official
    alpha = 0.8   # from 0.850 at step 0; lr raised so the small case takes ~100 steps
    res = run_official(normal_init(24, 8, seed=5), alpha, max_steps=1000, lr=0.05)
    maxes = [h[2] for h in res.history]
    assert res.reached and res.steps > 0
    assert maxes[-1] <= alpha + OFFICIAL_TOL                       # the rule holds at the stop
    assert all(m > alpha + OFFICIAL_TOL for m in maxes[:-1])       # ... and at no earlier step
    assert coherence(res.vectors) == pytest.approx(maxes[-1], abs=1e-5)
    assert len(maxes) == res.steps + 1                             # one check per step


def test_official_step_cap_returns_best_and_reports_short():
    e = create_ebv(24, 8, alpha=0.3, method="official", seed=5, max_steps=3, progress=False)
    assert e.method == "official" and e.alpha == 0.3 and e.seed == 5
    assert e.extra["steps"] == 3 and e.extra["reached"] is False
    assert e.extra["coherence"] > 0.3


# ------------------------------------------------------------------ default method
@pytest.mark.slow
def test_smoothmax_beats_official_at_equal_steps():
    from ebv_ms.generation.factory import normal_init
    from ebv_ms.generation.iterative import run_official, run_smoothmax
    w0 = normal_init(80, 12, seed=0)
    start = coherence(w0)
    off = run_official(w0, 0.3, max_steps=150)
    sm = run_smoothmax(w0, None, max_steps=150, beta0=30.0, lr=1e-2)
    c_sm = coherence(sm.vectors)
    assert c_sm < start - 0.1
    assert c_sm < coherence(off.vectors)
    assert c_sm >= welch_bound(80, 12) - 1e-6                      # sanity: bound respected


def _smoothmax_reference_grad(w, rows, beta):
    """float64 central differences of the default's objective for row slice ``rows``:
    f(W) = log(sum_{i in rows, j != i} exp(b c_ij^2)) / b with b = beta / (2 max |c|) held
    fixed, then projected onto the tangent space of each (unit) row."""
    w = w.astype(np.float64)
    mask = np.ones((len(rows), w.shape[0]), bool)
    mask[np.arange(len(rows)), rows] = False

    def f(x):
        c = x[rows] @ x.T
        return c[mask]

    m = np.abs(f(w)).max()
    b = beta / (2 * m)

    def obj(x):
        sq = f(x) ** 2
        top = sq.max()
        return (np.log(np.exp(b * (sq - top)).sum()) + b * top) / b

    g = np.zeros_like(w)
    h = 1e-6
    for i in range(w.shape[0]):
        for k in range(w.shape[1]):
            xp, xm = w.copy(), w.copy()
            xp[i, k] += h
            xm[i, k] -= h
            g[i, k] = (obj(xp) - obj(xm)) / (2 * h)
    return m, g - (g * w).sum(1, keepdims=True) * w


@pytest.mark.parametrize("rows", [np.arange(14), np.array([3, 4, 5, 6, 7])])
def test_smoothmax_gradient_matches_a_numpy_reference(rows):
    """The hand-written gradient (whole set, and one row slice) equals finite differences."""
    from mindspore import Parameter, Tensor
    from ebv_ms.generation.iterative import SmoothMaxGrad
    from ebv_ms.generation.factory import normal_init
    w = normal_init(14, 4, seed=6)
    whole = len(rows) == w.shape[0]
    cell = SmoothMaxGrad(Parameter(Tensor(w), name="ebv"), whole=whole)
    m, grad = cell(Tensor(rows.astype(np.int32)), Tensor(np.float32(20.0)))
    m_ref, g_ref = _smoothmax_reference_grad(w, rows, 20.0)
    assert float(m.asnumpy()) == pytest.approx(m_ref, abs=1e-6)
    np.testing.assert_allclose(grad.asnumpy(), g_ref, atol=2e-4 * np.abs(g_ref).max())


def test_create_ebv_default_method_records_provenance():
    e = create_ebv(40, 6, seed=4, max_steps=60, progress=False)
    assert e.method == "smoothmax" and e.seed == 4 and e.alpha is None
    assert e.extra["steps"] == 60
    assert e.extra["coherence"] == pytest.approx(coherence(e.vectors), abs=1e-9)


# ------------------------------------------------------------------ CLI
def test_cli_writes_npy_and_refuses_impossible_alpha(tmp_path, capsys):
    from ebv_ms.tools.generate import main
    out = tmp_path / "k.npy"
    assert main(["-n", "144", "-d", "16", "--out", str(out), "--no-progress"]) == 0
    arr = np.load(out)
    assert arr.dtype == np.float32 and arr.shape == (144, 16)
    assert coherence(arr) == pytest.approx(0.25, abs=1e-7)
    assert main(["-n", "1000", "-d", "100", "-a", "0.05", "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "Welch bound" in err and "0.09492" in err
    assert not (tmp_path / "x.npy").exists()


def test_cli_step_cap_saves_best_and_says_it_fell_short(tmp_path, capsys):
    from ebv_ms.tools.generate import main
    out = tmp_path / "short.npz"
    rc = main(["-n", "30", "-d", "5", "-a", "0.5", "--max-steps", "4", "--method", "official",
               "--out", str(out), "--no-progress"])
    assert rc == 3
    assert "fell short" in capsys.readouterr().err
    e = load_ebv(out)
    assert e.num_classes == 30 and e.method == "official" and e.alpha == 0.5
    assert math.isfinite(coherence(e.vectors))


# ------------------------------------------------------------------ row slices
@pytest.mark.slow
def test_official_row_slices_give_the_full_batch_step():
    from ebv_ms.generation.factory import normal_init
    from ebv_ms.generation.iterative import run_official
    w0 = normal_init(50, 6, seed=1)
    full = run_official(w0, 0.2, max_steps=3, lr=0.05)
    sliced = run_official(w0, 0.2, max_steps=3, lr=0.05, slice_size=7)   # 8 slices, last short
    np.testing.assert_allclose([h[2] for h in sliced.history], [h[2] for h in full.history],
                               atol=1e-5)
    np.testing.assert_allclose(sliced.vectors, full.vectors, atol=1e-5)


@pytest.mark.slow
def test_smoothmax_with_row_slices_improves_and_reports_true_coherence():
    from ebv_ms.generation.factory import normal_init
    from ebv_ms.generation.iterative import run_smoothmax
    w0 = normal_init(300, 10, seed=2)
    res = run_smoothmax(w0, None, max_steps=80, slice_size=64, beta0=30.0, lr=1e-2)
    assert coherence(res.vectors) < coherence(w0) - 0.05


def test_official_matches_a_numpy_reference_of_algorithm_1():
    """Three steps of Algorithm 1 written out in numpy (float64): normalise, gradient
    2 sum_j sign(c_ij) [|c_ij| > alpha] w_j, SGD step; the Cell-based run must follow it."""
    from ebv_ms.generation.factory import normal_init
    from ebv_ms.generation.iterative import run_official
    alpha, lr = 0.3, 0.01
    w = normal_init(40, 5, seed=3).astype(np.float64)
    maxes = []
    for _ in range(4):
        w = w / np.linalg.norm(w, axis=1, keepdims=True)
        c = w @ w.T
        np.fill_diagonal(c, 0.0)
        maxes.append(np.abs(c).max())
        w = w - lr * 2.0 * ((np.abs(c) > alpha) * np.sign(c)) @ w
    res = run_official(normal_init(40, 5, seed=3), alpha, max_steps=3, lr=lr)
    np.testing.assert_allclose([h[2] for h in res.history], maxes, atol=2e-5)
    assert len(set(np.round(maxes, 4))) > 1            # the set really moved between steps


_PEAK_SCRIPT = """
import os, sys
import mindspore as ms
from memstat import status_mb
ms.set_device("CPU"); ms.set_context(mode=ms.PYNATIVE_MODE)
from ebv_ms.generation.factory import normal_init
from ebv_ms.generation.iterative import run_official, run_smoothmax
w0 = normal_init(16000, 8, seed=0)
before = status_mb("VmHWM")
run_smoothmax(w0, None, max_steps=2, slice_size=250)
run_official(w0, 0.5, max_steps=0, slice_size=250)
print(status_mb("VmHWM") - before)
"""


@pytest.mark.slow
def test_iterative_generators_hold_no_n_by_n_mask():
    """N = 16,000 in 64 slices of 250 rows: a slice's block is 16 MB and the peak grows by ~160 MB
    (the blocks' temporaries and graph compilation); one stored self-pair mask per slice was
    16,000 x 16,000 floats in all (1 GB)."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True,
                         cwd=root, env=dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{root / 'tests'}"),
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 512, f"peak memory grew by {grown_mb:.0f} MB during the runs"


@pytest.mark.parametrize("args", [["-n", "100000000", "-d", "3"],
                                  ["-n", "1000", "-d", "1073741824", "--method", "kerdock"],
                                  ["-n", "3000000", "-d", "3000", "--method", "orthonormal"]])
def test_cli_refuses_sizes_beyond_this_machine_at_once(tmp_path, args):
    """These grew to 4.6-7.3 GB, then ended in tracebacks (or ran for hours): the memory is
    estimated before anything is allocated, and the refusal gives the figure. Under an 8 GB
    address-space cap, with a 60 s limit, so the old behaviour fails the test instead of the box."""
    import resource
    import subprocess
    import sys

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    r = subprocess.run([sys.executable, "-m", "ebv_ms.tools.generate", *args, "--no-progress",
                        "--out", str(tmp_path / "x.npy")], capture_output=True, text=True,
                       timeout=60, preexec_fn=cap)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "GiB of memory" in lines[0] and "this machine has" in lines[0], r.stderr
    assert not (tmp_path / "x.npy").exists()

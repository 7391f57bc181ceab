"""`create_ebv` picks the way to make an EBV set. ``method="auto"``: 1. an exact closed form
(orthonormal N <= d, simplex N = d + 1, Kerdock for d = 4^k, N <= d(d/2+1)) if it meets ``alpha``;
2. the Kerdock set of the largest fitting 4^k <= d zero-padded into d, if that meets ``alpha`` (or
alpha is None and N > ``LARGE_N``: an optimiser epoch costs ~N^2 d flops, hours on a CPU, and at
100k x 5000 the padded set is within ~15% of the Welch bound); 3. else ``smoothmax``, from the
padded Kerdock set if that is within ``PAD_INIT_RATIO`` x Welch bound with ``PAD_INIT_FREE``
free dimensions, else from a normal draw."""
from __future__ import annotations

import math
import os
from contextlib import closing
from typing import Optional

import numpy as np

from ebv_ms.config import METHODS  # the one list, with the config keys
from ebv_ms.device import set_device
from ebv_ms.ebv import EBVSet, coherence, welch_bound
from ebv_ms.errors import EBVMSError

from . import closed_form as cf

LARGE_N = 20_000          # above this, auto returns the padded closed form when alpha is None
PAD_INIT_RATIO = 1.4      # start smoothmax from a padded Kerdock set of R^k if 1/sqrt(k) <= this x
PAD_INIT_FREE = 0.5       # Welch bound and d - k >= this x k (N=1000: wins at d=100, k=64; at
#   d=300, k=256 it stays near its start: the MUB part relaxes only through the free dimensions)
VERIFY_MAX_N = 20_000     # iterative results are re-measured exactly (float64) up to this N
DEFAULT_STEPS = {"official": 100_000, "smoothmax": 3_000}


class GenerationError(EBVMSError, ValueError):
    """A request that cannot be met (impossible alpha, unknown method, ...)."""


def normal_init(n: int, dim: int, seed: int) -> np.ndarray:
    """Seeded standard-normal rows, normalised (Algorithm 1's initialisation)."""
    w = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _check_memory(method: str, n: int, dim: int) -> None:
    """Refuse at once what cannot fit in RAM. Iterative: eight N x d float32 copies (start, W,
    Adam's moments, gradient, before, best, epoch), a step's block, ~500 bytes per slice; Kerdock:
    (d/2 + d) x d sign tables and ~64 MB chunks; orthonormal / simplex: a float64 d x N QR."""
    need = 4 * n * dim
    if method in ("smoothmax", "official"):
        from .iterative import block_rows
        rows = block_rows(n, dim)
        need = 8 * need + 32 * rows * n + 500 * -(-n // rows)
    elif method in ("kerdock", "kerdock_padded"):
        k = dim if method == "kerdock" else (cf.largest_kerdock_dim(n, dim) or 0)
        need += 3 * k * k // 2 + (1 << 26) if n > k else 0
    else:
        need += 24 * n * dim
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > ram:
        raise GenerationError(
            f"N={n}, d={dim} with method {method!r} needs about {need / 2**30:,.1f} GiB of memory "
            f"(the set alone is {4 * n * dim / 2**30:,.1f} GiB); this machine has "
            f"{ram / 2**30:,.1f} GiB: use a smaller N or d")


def closed_form_choice(num_classes: int, dim: int, alpha: Optional[float] = None,
                       method: str = "auto") -> Optional[str]:
    """The closed form ``create_ebv`` makes for these settings, else None (iterative). A closed
    form is a function of (N, d, seed): every host rebuilds it (100k x 5000 in seconds)."""
    n, d = int(num_classes), int(dim)
    if method != "auto":
        return method if method in cf.CLOSED_FORMS else None
    exact = cf.closed_form_for(n, d)
    if exact and (alpha is None or cf.closed_form_coherence(exact, n, d) <= alpha):
        return exact
    k = cf.largest_kerdock_dim(n, d)
    if k is not None and k < d and (n > LARGE_N if alpha is None
                                    else cf.closed_form_coherence("kerdock_padded", n, d) <= alpha):
        return "kerdock_padded"
    return None


def create_ebv(num_classes: int, dim: int, alpha: Optional[float] = None, method: str = "auto",
               seed: int = 0, max_steps: Optional[int] = None, progress: bool = True,
               device_target: Optional[str] = None, *, time_limit: Optional[float] = None,
               **method_kwargs) -> EBVSet:
    """N = ``num_classes`` unit vectors in R^``dim`` with max |cos| as low as possible, at most
    ``alpha`` if given (``official`` needs it). ``extra`` of the returned set holds the measured
    coherence, steps, ``reached`` and the start; ``time_limit`` (s) stops iterative runs."""
    n, d, seed = int(num_classes), int(dim), int(seed)
    if n < 1 or d < 1:
        raise GenerationError(f"need num_classes >= 1 and dim >= 1, got N={n}, d={d}")
    if method not in METHODS:
        raise GenerationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "official" and alpha is None:
        raise GenerationError("method 'official' (Algorithm 1) needs alpha, its stopping "
                              "threshold, e.g. alpha=0.135 for N=1000, d=100")
    if alpha is not None and not 0.0 <= float(alpha) < 1.0:
        raise GenerationError(f"alpha must be in [0, 1), got {alpha}")
    wb = welch_bound(n, d)
    if alpha is not None and float(alpha) < wb:
        raise GenerationError(
            f"alpha={alpha} is impossible for N={n}, d={d}: no {n} unit vectors in R^{d} have "
            f"max |cos| below the Welch bound sqrt((N-d)/(d(N-1))) = {wb:.5f}; use alpha >= "
            f"{wb:.5f} (or a larger --dim)")

    closed = closed_form_choice(n, d, alpha, method)
    _check_memory(closed or ("official" if method == "official" else "smoothmax"), n, d)
    if closed is not None:
        try:
            vec = cf.CLOSED_FORMS[closed](n, d, seed)
        except ValueError as exc:
            raise GenerationError(f"method {method!r} does not fit N={n}, d={d}: {exc}") from None
        coh = cf.closed_form_coherence(closed, n, d)
        extra = {"coherence": coh, "reached": alpha is None or coh <= alpha + 1e-12}
        if closed == "kerdock_padded":
            extra["base_dim"] = cf.largest_kerdock_dim(n, d)
        return EBVSet(vec, alpha=alpha, method=f"closed_form:{closed}", seed=seed, extra=extra)
    method = "official" if method == "official" else "smoothmax"  # auto's fallback: smoothmax
    w0, init_name = None, "normal"
    if method == "smoothmax":
        method_kwargs["seed"] = seed
        k = cf.largest_kerdock_dim(n, d)
        if cf.closed_form_for(n, d) == "kerdock":
            w0, init_name = cf.kerdock(n, d, seed), "kerdock"
        elif k is not None and n > d and 1.0 / math.sqrt(k) <= PAD_INIT_RATIO * wb \
                and d - k >= PAD_INIT_FREE * k:
            w0, init_name = cf.padded_kerdock(n, d, seed, noise=0.05), f"kerdock{k}_padded"
        # run_smoothmax's defaults suit a normal draw (N=1000, d=200, 30 s: 0.0771; lr 1e-3 0.0801);
        # a closed-form start is close already: small steps, a firmer max, a long patience, as the
        # max first climbs while the free dimensions open up (d=100, 30 s: 0.1112; normal 0.1313)
        if w0 is not None:
            method_kwargs = {"lr": 1e-3, "beta0": 100.0, "patience": 200, **method_kwargs}
    from ebv_ms.progress import progress_bar
    from .iterative import OFFICIAL_TOL, run_official, run_smoothmax
    if device_target:
        set_device(device_target)
    steps = int(max_steps) if max_steps is not None else DEFAULT_STEPS[method]
    user_callback = method_kwargs.pop("callback", None) or (lambda step, coh: None)
    run = run_official if method == "official" else run_smoothmax
    with closing(progress_bar(total=steps, desc=method, unit="step", dynamic_ncols=True,
                              mininterval=0.5, disable=not progress)) as bar:
        def callback(step, coh):
            bar.update(min(step, steps) - bar.n)
            bar.set_postfix_str(f"coherence {coh:.5f}" + (f" (target {alpha})" if alpha else ""),
                                refresh=False)
            user_callback(step, coh)

        res = run(normal_init(n, d, seed) if w0 is None else w0, alpha, steps,
                  time_limit=time_limit, callback=callback, **method_kwargs)
    coh = coherence(res.vectors) if n <= VERIFY_MAX_N else res.coherence
    tol = OFFICIAL_TOL if method == "official" else 1e-7
    reached = res.reached if alpha is None else bool(coh <= alpha + tol)
    extra = {"coherence": float(coh), "steps": int(res.steps), "reached": bool(reached),
             "seconds": round(res.seconds, 3), "init": init_name}
    return EBVSet(res.vectors, alpha=alpha, method=method, seed=seed, extra=extra)

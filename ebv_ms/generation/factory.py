"""`create_ebv`: one entry point that picks the way to make an EBV set. ``method="auto"``:

1. an exact closed form when (N, d) fits one (orthonormal N <= d, simplex N = d + 1, Kerdock
   real MUBs for d = 4^k, N <= d(d/2+1)) and its coherence meets ``alpha``;
2. the Kerdock set of the largest fitting 4^k <= d, zero-padded into d, when that meets
   ``alpha`` (or no alpha is given and N > ``LARGE_N``: an optimiser epoch costs ~N^2 d flops,
   hours on a CPU, and at 100k x 5000 the padded set is within ~15% of the Welch bound);
3. else ``smoothmax``, started from the padded Kerdock set when that is within
   ``PAD_INIT_RATIO`` x Welch bound with ``PAD_INIT_FREE`` free dimensions, else a normal draw.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from ebv_ms.device import set_device
from ebv_ms.ebv import EBVSet, coherence, welch_bound
from ebv_ms.errors import EBVMSError

from . import closed_form as cf

from ebv_ms.config import METHODS  # noqa: E402 - the one list, with the config keys
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


def check_alpha(num_classes: int, dim: int, alpha: Optional[float]) -> None:
    """Refuse at once an alpha no set can reach (below the Welch bound) or outside [0, 1)."""
    if alpha is None:
        return
    if not (0.0 <= float(alpha) < 1.0):
        raise GenerationError(f"alpha must be in [0, 1), got {alpha}")
    wb = welch_bound(num_classes, dim)
    if float(alpha) < wb:
        raise GenerationError(
            f"alpha={alpha} is impossible for N={num_classes}, d={dim}: no {num_classes} unit "
            f"vectors in R^{dim} have max |cos| below the Welch bound sqrt((N-d)/(d(N-1))) = "
            f"{wb:.5f}; use alpha >= {wb:.5f} (or a larger --dim)")


def memory_needed(method: str, n: int, dim: int) -> int:
    """Estimated peak bytes of a method for N x d. Iterative: eight N x d float32 copies (start,
    weights, Adam's moments, gradient, before, best, epoch), one step's block and ~500 bytes per
    row slice. Kerdock: the (d/2 + d) x d sign tables and ~64 MB chunks. Orthonormal / simplex:
    the float64 QR of a d x N draw."""
    out = 4 * n * dim
    if method in ("smoothmax", "official"):
        from .iterative import block_rows
        rows = block_rows(n, dim)
        return 8 * out + 32 * rows * n + 500 * -(-n // rows)
    if method in ("kerdock", "kerdock_padded"):
        k = dim if method == "kerdock" else (cf.largest_kerdock_dim(n, dim) or 0)
        return out + (3 * k * k // 2 + (1 << 26) if n > k else 0)
    return out + 24 * n * dim


def _check_memory(method: str, n: int, dim: int) -> None:
    need = memory_needed(method, n, dim)
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > ram:
        raise GenerationError(
            f"N={n}, d={dim} with method {method!r} needs about {need / 2**30:,.1f} GiB of memory "
            f"(the set alone is {4 * n * dim / 2**30:,.1f} GiB); this machine has "
            f"{ram / 2**30:,.1f} GiB: use a smaller N or d")


def _closed(name: str, n: int, dim: int, alpha, seed: int) -> EBVSet:
    _check_memory(name, n, dim)
    vec = cf.CLOSED_FORMS[name](n, dim, seed)
    coh = cf.closed_form_coherence(name, n, dim)
    extra = {"coherence": coh, "reached": alpha is None or coh <= alpha + 1e-12}
    if name == "kerdock_padded":
        extra["base_dim"] = cf.largest_kerdock_dim(n, dim)
    return EBVSet(vec, alpha=alpha, method=f"closed_form:{name}", seed=seed, extra=extra)


def _iterative(method: str, n: int, dim: int, alpha, seed: int, max_steps: Optional[int],
               progress: bool, device_target: Optional[str], init: Optional[np.ndarray],
               init_name: str, time_limit: Optional[float], **kw) -> EBVSet:
    from .iterative import run_official, run_smoothmax
    _check_memory(method, n, dim)
    if device_target:
        set_device(device_target)
    steps = int(max_steps) if max_steps is not None else DEFAULT_STEPS[method]
    bar = None
    if progress:
        from ebv_ms.progress import progress_bar
        bar = progress_bar(total=steps, desc=method, unit="step", dynamic_ncols=True,
                           mininterval=0.5)
    user_callback = kw.pop("callback", None)

    def callback(step, coh):
        if bar is not None:
            bar.update(min(step, steps) - bar.n)
            bar.set_postfix_str(f"coherence {coh:.5f}" + (f" (target {alpha})" if alpha else ""),
                                refresh=False)
        if user_callback is not None:
            user_callback(step, coh)

    w0 = init if init is not None else normal_init(n, dim, seed)
    try:
        if method == "official":
            res = run_official(w0, alpha, steps, time_limit=time_limit, callback=callback, **kw)
        else:
            res = run_smoothmax(w0, alpha, steps, seed=seed, time_limit=time_limit,
                                callback=callback, **kw)
    finally:
        if bar is not None:
            bar.close()
    coh = coherence(res.vectors) if n <= VERIFY_MAX_N else res.coherence
    reached = res.reached if alpha is None else bool(coh <= alpha + (1e-4 if method == "official" else 1e-7))
    extra = {"coherence": float(coh), "steps": int(res.steps), "reached": bool(reached),
             "seconds": round(res.seconds, 3), "init": init_name}
    return EBVSet(res.vectors, alpha=alpha, method=method, seed=seed, extra=extra)


def closed_form_choice(num_classes: int, dim: int, alpha: Optional[float] = None,
                       method: str = "auto") -> Optional[str]:
    """The closed form ``create_ebv`` makes for these settings, else None (an iterative method).

    A closed form is a deterministic function of (N, d, seed): every host rebuilds the same set
    (at 100k x 5000 in seconds) instead of waiting for a file or receiving it over the network.
    """
    n, d = int(num_classes), int(dim)
    if method in ("orthonormal", "simplex", "kerdock", "kerdock_padded"):
        return method
    if method != "auto":
        return None
    exact = cf.closed_form_for(n, d)
    if exact and (alpha is None or cf.closed_form_coherence(exact, n, d) <= alpha):
        return exact
    k = cf.largest_kerdock_dim(n, d)
    if k is not None and k < d:
        pad_coh = cf.closed_form_coherence("kerdock_padded", n, d)
        if (alpha is not None and pad_coh <= alpha) or (alpha is None and n > LARGE_N):
            return "kerdock_padded"
    return None


def create_ebv(num_classes: int, dim: int, alpha: Optional[float] = None, method: str = "auto",
               seed: int = 0, max_steps: Optional[int] = None, progress: bool = True,
               device_target: Optional[str] = None, *, time_limit: Optional[float] = None,
               **method_kwargs) -> EBVSet:
    """Make N = ``num_classes`` unit vectors in R^``dim`` with max |cos| as low as possible.

    ``alpha``: the coherence target (None: the method's best within ``max_steps``; ``official``
    needs it; below the Welch bound refused at once). ``extra`` of the returned set holds the
    measured coherence, steps, ``reached`` and the start; ``time_limit`` (s) stops iterative runs.
    """
    n, d = int(num_classes), int(dim)
    if n < 1 or d < 1:
        raise GenerationError(f"need num_classes >= 1 and dim >= 1, got N={n}, d={d}")
    if method not in METHODS:
        raise GenerationError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_alpha(n, d, alpha)
    seed = int(seed)

    closed = closed_form_choice(n, d, alpha, method)
    if closed is not None:
        try:
            return _closed(closed, n, d, alpha, seed)
        except GenerationError:
            raise
        except ValueError as exc:
            raise GenerationError(f"method {method!r} does not fit N={n}, d={d}: {exc}") from None

    if method == "official":
        if alpha is None:
            raise GenerationError("method 'official' (Algorithm 1) needs alpha, its stopping "
                                  "threshold, e.g. alpha=0.135 for N=1000, d=100")
        return _iterative("official", n, d, alpha, seed, max_steps, progress, device_target,
                          None, "normal", time_limit, **method_kwargs)

    # smoothmax, explicitly or as auto's fallback
    _check_memory("smoothmax", n, d)
    init, init_name = None, "normal"
    exact = cf.closed_form_for(n, d)
    if exact == "kerdock":
        init, init_name = cf.kerdock(n, d, seed), "kerdock"
    else:
        k = cf.largest_kerdock_dim(n, d)
        if k is not None and n > d:
            pad_coh = 1.0 / math.sqrt(k)
            if pad_coh <= PAD_INIT_RATIO * welch_bound(n, d) and d - k >= PAD_INIT_FREE * k:
                init, init_name = cf.padded_kerdock(n, d, seed, noise=0.05), f"kerdock{k}_padded"
    # run_smoothmax's defaults suit a normal draw (N=1000, d=200, 30 s: lr 1e-2 / beta0 40 gives
    # 0.0771, lr 1e-3 0.0801). A closed-form start is close already: small steps, a firmer max,
    # a long patience, as the max first climbs while the free dimensions open up (d=100, 30 s:
    # 0.1112; from a normal start 0.1313).
    if init is not None:
        method_kwargs.setdefault("lr", 1e-3)
        method_kwargs.setdefault("beta0", 100.0)
        method_kwargs.setdefault("patience", 200)
    return _iterative("smoothmax", n, d, alpha, seed, max_steps, progress, device_target, init,
                      init_name, time_limit, **method_kwargs)

"""The EBV set a run uses: a configured file, or generated once and cached; and the set a
checkpoint was trained with (``checkpoint_ebv``).

The cache file name is the generation key (N, d, alpha, method, seed), so a second run (or
another rank) with the same settings reuses the same vectors. Under data parallel only rank 0
generates (generation on a GPU is not bit-reproducible across processes); the other ranks wait
for the file, which is written atomically.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

from ebv_ms.config import ConfigError
from ebv_ms.ebv import EBVSet

__all__ = ["needs_ebv", "ebv_cache_path", "resolve_ebv", "checkpoint_ebv"]

_log = logging.getLogger("ebv_ms")


def needs_ebv(cfg) -> bool:
    return str(cfg.model.head) == "ebv"


def ebv_cache_path(cfg) -> str:
    e = cfg.ebv
    alpha = "auto" if e.alpha is None else f"{float(e.alpha):g}"
    name = (f"ebv_N{int(cfg.model.num_classes)}_d{int(cfg.model.embed_dim)}_a{alpha}_"
            f"{e.method}_s{e.seed}.npz").replace("/", "-").replace(":", "-")
    return os.path.join(str(e.cache_dir), name)


def _check_shape(ebv: EBVSet, cfg, source: str) -> EBVSet:
    n, d = int(cfg.model.num_classes), int(cfg.model.embed_dim)
    if (ebv.num_classes, ebv.dim) != (n, d):
        raise ConfigError(f"EBV set from {source} is {ebv.num_classes} x {ebv.dim}, but config keys "
                          f"'model.num_classes' / 'model.embed_dim' say {n} x {d}; fix those keys "
                          "or point 'ebv.path' at a matching file")
    return ebv


def resolve_ebv(cfg, rank: int = 0, progress: bool = True, wait_timeout_s: float = 6 * 3600,
                logger: Optional[logging.Logger] = None) -> Optional[EBVSet]:
    """EBVSet for ``cfg`` (None unless ``model.head`` is "ebv")."""
    log = logger or _log
    if not needs_ebv(cfg):
        return None
    from ebv_ms.ebv import load_ebv, save_ebv  # files helper's API

    if cfg.ebv.path:
        path = str(cfg.ebv.path)
        if not os.path.isfile(path):
            raise ConfigError(f"config key 'ebv.path': file not found: {path} (leave it unset to "
                              "generate a set and cache it under 'ebv.cache_dir')")
        ebv = _check_shape(load_ebv(path), cfg, path)
        log.info("EBV set loaded from %s: %r", path, ebv)
        return ebv

    path = ebv_cache_path(cfg)
    if os.path.isfile(path):
        ebv = _check_shape(load_ebv(path), cfg, path)
        log.info("EBV set reused from cache %s: %r", path, ebv)
        return ebv
    if rank != 0:
        log.info("waiting for rank 0 to generate the EBV set at %s", path)
        t0 = time.time()
        while not os.path.isfile(path):
            if time.time() - t0 > wait_timeout_s:
                raise TimeoutError(f"rank {rank}: no EBV set appeared at {path} after "
                                   f"{wait_timeout_s:.0f} s; check rank 0's log")
            time.sleep(2.0)
        return _check_shape(load_ebv(path), cfg, path)

    from ebv_ms.generation import create_ebv  # generation helper's API
    log.info("generating the EBV set (N=%d, d=%d, alpha=%s, method=%s, seed=%s); cached at %s",
             cfg.model.num_classes, cfg.model.embed_dim, cfg.ebv.alpha, cfg.ebv.method,
             cfg.ebv.seed, path)
    t0 = time.time()
    ebv = create_ebv(int(cfg.model.num_classes), int(cfg.model.embed_dim), alpha=cfg.ebv.alpha,
                     method=cfg.ebv.method, seed=int(cfg.ebv.seed), max_steps=cfg.ebv.max_steps,
                     progress=progress, device_target=cfg.device_target)
    ebv = _check_shape(ebv, cfg, "create_ebv")
    save_ebv(ebv, path)  # atomic (temporary sibling + rename): waiting ranks never see half a file
    log.info("EBV set generated in %.1f s: %r", time.time() - t0, ebv)
    return ebv


def _closed_form_recipe(info: dict):
    """The ``create_ebv`` method that rebuilds a recorded closed-form set, else None."""
    method = str(info.get("method") or "")
    if not method.startswith("closed_form:") or info.get("seed") is None:
        return None
    from ebv_ms.generation.factory import METHODS
    name = method.split(":", 1)[1]
    return name if name in METHODS else None


def checkpoint_ebv(state, cfg=None, ebv_file: Optional[str] = None, rank: int = 0,
                   progress: bool = False, logger: Optional[logging.Logger] = None):
    """The EBV set ``state`` (a ``CheckpointState``) was trained with, verified by its checksum.

    Looked for in this order: ``ebv_file`` (``eval.py --ebv``) or an ``ebv.path`` in ``cfg``
    that the checkpoint's own config does not have (both must be the recorded set, else an
    error); the set inside the checkpoint; the recorded file next to the checkpoint; the
    training config's ``ebv.path`` and the EBV cache of ``cfg``; a rebuild from the recorded
    recipe for the deterministic closed forms. Anything else is refused with the file it needs.
    A checkpoint that records no set gets ``resolve_ebv(cfg)``.
    """
    from ebv_ms.ebv import load_ebv
    from .checkpoint import CheckpointError, check_ebv_matches
    log = logger or _log
    if state.ebv_info is None:
        return resolve_ebv(cfg, rank, progress=progress, logger=log) if cfg is not None else None
    trained_path = ((state.config or {}).get("ebv") or {}).get("path")
    given = ebv_file
    if given is None and cfg is not None and cfg.ebv.path and cfg.ebv.path != trained_path:
        given = str(cfg.ebv.path)
    if given is not None:
        if not os.path.isfile(given):
            raise CheckpointError(f"EBV file not found: {given}; {state.path} needs its "
                                  f"{state.describe_ebv()}")
        ebv = load_ebv(given)
        check_ebv_matches(state, ebv)
        log.info("EBV set for %s loaded from %s", state.path, given)
        return ebv
    if state.ebv is not None:
        return state.ebv
    looked = []
    candidates = [state.ebv_file(), trained_path]
    if cfg is not None and needs_ebv(cfg):
        candidates.append(ebv_cache_path(cfg))
    for path in candidates:
        if not path or path in looked:
            continue
        looked.append(path)
        if os.path.isfile(path):
            ebv = load_ebv(path)
            if ebv.checksum() == state.ebv_checksum:
                log.info("EBV set for %s loaded from %s", state.path, path)
                return ebv
            log.warning("%s holds EBV set %s, not the checkpoint's %s; not used", path,
                        ebv.checksum(), state.ebv_checksum)
    info = state.ebv_info
    recipe = _closed_form_recipe(info)
    if recipe is not None:
        from ebv_ms.generation import create_ebv
        t0 = time.time()
        ebv = create_ebv(int(info["num_classes"]), int(info["dim"]), alpha=info.get("alpha"),
                         method=recipe, seed=int(info["seed"]), progress=False)
        check_ebv_matches(state, ebv)
        log.info("EBV set for %s rebuilt from its recipe (%s, seed %s) in %.1f s", state.path,
                 info["method"], info["seed"], time.time() - t0)
        return ebv
    raise CheckpointError(
        f"{state.path} needs its {state.describe_ebv()}, which is not in the checkpoint and was "
        f"not found (looked at: {', '.join(looked) or 'nothing'}); put "
        f"{info.get('file') or 'that set'} next to the checkpoint or pass --ebv FILE")


def main(argv=None) -> int:
    """``python -m ebv_ms.engine.ebv_source --config X [key=value ...]``: make/cache the EBV set."""
    import argparse
    from ebv_ms.config import load_config
    from ebv_ms.errors import run_cli
    ap = argparse.ArgumentParser(prog="python -m ebv_ms.engine.ebv_source",
                                 description="generate (once) the EBV set a config trains with")
    ap.add_argument("--config", "-c", required=True)
    ap.add_argument("--debug", action="store_true", help="print the traceback of an error too")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def body() -> int:
        cfg = load_config(args.config, args.overrides)
        ebv = resolve_ebv(cfg)
        if ebv is None:
            print(f"model.head={cfg.model.head}: no EBV set needed")
        else:
            print(f"EBV set ready: {ebv!r} ({cfg.ebv.path or ebv_cache_path(cfg)})")
        return 0

    return run_cli("ebv_source", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())

"""The EBV set a run uses: the configured file, or generated once and cached (``.npz``, mapped
read-only: a host's ranks share one copy). A closed form is rebuilt per host, an iterative set by
rank 0 only (GPU generation is not bit-reproducible); ranks compare checksums in one all-gather
and receive rank 0's set over the collective, so hosts need no shared folder."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import zlib
from typing import Optional

import numpy as np

from ebv_ms.atomic import atomic_path
from ebv_ms.config import ConfigError, ebv_path_missing
from ebv_ms.ebv import EBVError, EBVSet, load_ebv, save_ebv
from ebv_ms.ebv.identity import ebv_file_name
from ebv_ms.generation import closed_form_choice, create_ebv
from .distributed import all_gather_counts, broadcast, get_rank_info

_log = logging.getLogger("ebv_ms")
_CHUNK_BYTES = 16 << 20   # per broadcast: a 2 GB set never needs a 2 GB collective buffer


def ebv_cache_path(cfg) -> str:
    e = cfg.ebv
    alpha = "auto" if e.alpha is None else f"{float(e.alpha):g}"
    name = (f"ebv_N{int(cfg.model.num_classes)}_d{int(cfg.model.embed_dim)}_a{alpha}_"
            f"{e.method}_s{e.seed}.npz").replace("/", "-").replace(":", "-")
    return os.path.join(str(e.cache_dir), name)


def _check_shape(ebv: EBVSet, n: int, d: int, source: str) -> EBVSet:
    if (ebv.num_classes, ebv.dim) != (n, d):
        raise ConfigError(f"EBV set from {source} is {ebv.num_classes} x {ebv.dim}, but config "
                          f"keys 'model.num_classes' / 'model.embed_dim' say {n} x {d}; fix those "
                          "keys or point 'ebv.path' at a matching file")
    return ebv


@contextlib.contextmanager
def _cache_lock(path: str):
    """One process at a time makes ``path`` (a host's ranks share the cache folder)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "a") as f:
        # a file system without locks (some Lustre mounts): atomic writes still keep the file
        with contextlib.suppress(OSError):  # whole; ranks may then build the set side by side
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _mapped(path: str, checksum: str) -> EBVSet:
    """The set saved at ``path``, mapped (callers drop theirs first: 2 GB at 100k x 5000)."""
    ebv = load_ebv(path)
    if ebv.checksum() != checksum:
        raise EBVError(f"{path}: holds EBV set {ebv.checksum()}, not {checksum} (written just "
                       "now, or by a neighbour rank): delete it and run again")
    return ebv


def _local_ebv(cfg, rank: int, progress: bool) -> Optional[EBVSet]:
    """The set from this rank's disk (``ebv.path``, else the cache) or a local build; None: a rank
    > 0 that needs rank 0's (``ebv.path`` not here, or an iterative set not cached here)."""
    e, n, d = cfg.ebv, int(cfg.model.num_classes), int(cfg.model.embed_dim)
    path = str(e.path) if e.path else ebv_cache_path(cfg)
    if not os.path.isfile(path):
        if e.path and rank > 0:
            _log.info("rank %d: %s not found here; receiving rank 0's set", rank, path)
            return None
        if e.path:
            raise ebv_path_missing(path)
        if rank > 0 and closed_form_choice(n, d, e.alpha, str(e.method)) is None:
            return None  # an iterative set: rank 0 generates it, the others receive it
    with contextlib.nullcontext() if e.path else _cache_lock(path):
        t0 = time.time()
        if os.path.isfile(path):
            ebv = _check_shape(load_ebv(path), n, d, path)
            _log.info("EBV set %s %s in %.1f s: %r", "loaded from" if e.path else
                      "reused from cache", path, time.time() - t0, ebv)
            return ebv
        _log.info("generating the EBV set (N=%d, d=%d, alpha=%s, method=%s, seed=%s); cached at %s",
                  n, d, e.alpha, e.method, e.seed, path)
        ebv = create_ebv(n, d, alpha=e.alpha, method=e.method, seed=int(e.seed),
                         max_steps=e.max_steps, progress=progress, device_target=cfg.device_target)
        checksum = _check_shape(ebv, n, d, "create_ebv").checksum()
        save_ebv(ebv, path)  # atomic (temporary sibling + rename): no reader sees half a file
        del ebv
        ebv = _mapped(path, checksum)
        _log.info("EBV set generated in %.1f s: %r", time.time() - t0, ebv)
        return ebv


def resolve_ebv(cfg, rank: int = 0, progress: bool = True) -> Optional[EBVSet]:
    """EBVSet for ``cfg`` (None unless ``model.head`` is "ebv"); the same set on every rank."""
    if cfg.model.head != "ebv":
        return None
    ebv = _local_ebv(cfg, rank, progress)
    if get_rank_info()[1] == 1:
        return ebv
    name = None if cfg.ebv.path else os.path.basename(ebv_cache_path(cfg))
    return share_ebv(ebv, rank, str(cfg.ebv.cache_dir), name)


def share_ebv(ebv: Optional[EBVSet], rank: int, folder: str, name: Optional[str]) -> EBVSet:
    """Rank 0's set on every rank (a collective; ``ebv`` None: this rank has none); a different
    set stops every rank. In each host's ``folder`` one receiver saves it, the others map it."""
    # each rank's row: has-set, N, d, checksum (4 x 16 bits), metadata size, folder key (2 x 16)
    key = zlib.crc32(f"{socket.gethostname()}:{os.path.realpath(folder)}".encode())
    meta = b"" if ebv is None else json.dumps(
        {"alpha": ebv.alpha, "method": ebv.method, "seed": ebv.seed, "extra": ebv.extra},
        sort_keys=True).encode()
    row = [0] * 8 if ebv is None else [1, ebv.num_classes, ebv.dim, *(
        int(ebv.checksum()[i:i + 4], 16) for i in range(0, 16, 4)), len(meta)]
    rows = all_gather_counts(row + [key >> 16, key & 0xFFFF])
    ref = rows[0]  # rank 0 always has one: _local_ebv returns None on ranks > 0 only
    n, d, checksum = int(ref[1]), int(ref[2]), "".join(f"{int(v):04x}" for v in ref[3:7])
    differ = [r for r, row in enumerate(rows) if row[0] and list(row[1:7]) != list(ref[1:7])]
    if differ:
        raise EBVError(
            f"rank(s) {differ} hold a different EBV set than rank 0 ({n} x {d}, checksum "
            f"{checksum}) under the same settings; delete their cached file (in "
            f"'ebv.cache_dir') or give every host the same 'ebv.path' file")
    lacking = [r for r, row in enumerate(rows) if not row[0]]
    if not lacking:
        return ebv
    path = os.path.join(folder, name or f"ebv_N{n}_d{d}_{checksum}.npz")
    if rank in lacking and os.path.isfile(path):  # a folder shared with rank 0: its file is there
        ebv = load_ebv(path)
        ebv = ebv if ebv.checksum() == checksum else None
    have = all_gather_counts([int(ebv is not None)])
    lacking = [r for r in lacking if not have[r][0]]
    if not lacking:
        return ebv
    # the first receiver per host folder keeps the matrix; its neighbours map the file it saves
    keeper = {tuple(rows[r][8:]): r for r in reversed(lacking)}
    keeps = rank in keeper.values()
    t0 = time.time()
    sent = np.frombuffer(meta, np.uint8) if rank == 0 else np.zeros(int(ref[7]))
    info = json.loads(broadcast(sent.astype(np.float32)).astype(np.uint8).tobytes())
    rows_per = max(1, _CHUNK_BYTES // (4 * d))
    out = np.empty((n, d), np.float32) if keeps else None
    for i in range(0, n, rows_per):
        j = min(n, i + rows_per)
        part = ebv.vectors[i:j] if rank == 0 else np.zeros((j - i, d), np.float32)
        got = broadcast(np.ascontiguousarray(part, dtype=np.float32))
        if keeps:
            out[i:j] = got
    error = ""
    if keeps:
        got_set = EBVSet(out, **info)  # alpha, method, seed, extra (meta)
        del out
        if got_set.checksum() != checksum:
            error = (f"rank {rank}: the set received from rank 0 has checksum "
                     f"{got_set.checksum()}, not {checksum}")
        else:
            with _cache_lock(path):
                save_ebv(got_set, path)
            del got_set
            ebv = _mapped(path, checksum)
            _log.info("rank %d: EBV set received from rank 0 in %.1f s and saved to %s", rank,
                      time.time() - t0, path)
    done = all_gather_counts([int(not error)])
    if error or not done.all():
        raise EBVError(error or f"ranks {[r for r in range(len(done)) if not done[r][0]]} did not "
                       "receive rank 0's EBV set intact; see their logs")
    if rank in lacking and not keeps:
        ebv = _mapped(path, checksum)
        _log.info("rank %d: EBV set mapped from %s, saved by rank %d", rank, path,
                  keeper[tuple(rows[rank][8:])])
    return ebv


_WRITING: dict = {}   # target path -> the thread writing it (start_run_ebv_file)


def _write_run_file(ebv: EBVSet, target: str) -> None:
    """``ebv`` at ``target``, atomically: a hard link to the file it is mapped from if possible."""
    if os.path.isfile(target):
        return  # the name holds the checksum: it is this set
    source = getattr(ebv.vectors.base, "filename", None)
    if source and str(source).endswith(".npz"):
        with contextlib.suppress(OSError), atomic_path(target, fsync=False) as tmp:
            os.link(source, tmp)
    if not os.path.isfile(target):
        save_ebv(ebv, target)


def start_run_ebv_file(folder: str, ebv: EBVSet) -> str:
    """Write the run's EBV file in a thread (``run_ebv_file`` waits): written by the first
    checkpoint, it held the other ranks 7.6-10.9 s (2 GB at 100k x 5000)."""
    target = os.path.join(os.path.abspath(folder), ebv_file_name(ebv))
    if target not in _WRITING and not os.path.isfile(target):
        _WRITING[target] = threading.Thread(target=_write_run_file, args=(ebv, target),
                                            name="ebv-run-file", daemon=True)
        _WRITING[target].start()
    return target


def run_ebv_file(folder: str, ebv: EBVSet) -> str:
    """The name of the run's EBV file in ``folder``, there when this returns."""
    target = os.path.join(os.path.abspath(folder), ebv_file_name(ebv))
    pending = _WRITING.pop(target, None)
    if pending is not None:
        pending.join()
    _write_run_file(ebv, target)  # nothing to do when the file is there
    return os.path.basename(target)

"""The checkpoint, written, read and loaded into a network here only: MindSpore's ``.ckpt``
protobuf, parsed with checks first (``ebv_ms.ckpt_file``). It holds the parameters but the frozen
EBV matrix, ``optimizer/`` and ``loss_scale/`` state, the config, a JSON record and a sha256 of all
of it; an EBV set over 64 MiB (100k x 5000 = 2 GB) is written once next to it instead."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import yaml

from ebv_ms.atomic import atomic_copy, atomic_path
from ebv_ms.ckpt_file import DTYPES, CheckpointError, Entry, read_entries
from ebv_ms.config import METHODS, Config, ConfigError, load_config, parse_yaml
from ebv_ms.ebv import EBVError, EBVSet, load_ebv
from ebv_ms.ebv.identity import describe, identity, matches, safe_file_name
from ebv_ms.generation import create_ebv
from .ebv_source import ebv_cache_path, resolve_ebv, run_ebv_file

_log = logging.getLogger("ebv_ms")

FORMAT = "ebv-ms/3"                 # 3: weights checksum and class names recorded
EBV_INLINE_MAX_BYTES = 64 << 20     # larger sets go to a file next to the checkpoints
_META, _CONFIG, _EBV, _SUM = "ebv_ms_meta", "ebv_ms_config", "ebv_ms_ebv_vectors", "ebv_ms_sha256"
_OPT, _EXTRA = "optimizer/", "loss_scale/"
_CHUNK = 1 << 28                    # bytes per protobuf Value (a message must stay < 2 GiB)
_LABELS = {v: k for k, v in DTYPES.items()}
# a recipe from a file is rebuilt only up to this many float32 elements (N x d): the 100k x 5000
# set is 5e8; a crafted N = d = 20,000 orthonormal recipe grew eval.py to 9.8 GB
MAX_RECIPE_ELEMENTS = 2_000_000_000
_ANOTHER = "use another checkpoint (last.ckpt / best.ckpt of the run)"


def _digest(entries: Mapping[str, Entry]) -> str:
    h = hashlib.sha256()
    for name, value in entries.items():  # _SUM is added after (write) or popped before (load)
        if isinstance(value, str):
            label, dims, data = "str", "", value.encode("utf-8")
        else:
            label, dims = _LABELS[value.dtype], ",".join(map(str, value.shape))
            data = memoryview(np.ascontiguousarray(value)).cast("B")
        h.update(f"{len(name)}:{name}|{label}|{dims}|{len(data)}|".encode())
        h.update(data)
    return h.hexdigest()


def write_entries(path: str, entries: Mapping[str, Entry]) -> str:
    """``entries`` and their sha256 as a ``.ckpt``, atomically."""
    from mindspore.train.checkpoint_pb2 import Checkpoint
    entries = {k: v if isinstance(v, str) else np.ascontiguousarray(v) for k, v in entries.items()}
    entries[_SUM] = _digest(entries)
    with atomic_path(path, suffix=".ckpt") as tmp, open(tmp, "wb") as f:
        for name, value in entries.items():
            if isinstance(value, str):
                label, dims, raw = "str", [0], np.array(value).tobytes()  # as MindSpore: UTF-32
            else:  # a view: each chunk is copied once, into the message
                label, dims, raw = _LABELS[value.dtype], value.shape, memoryview(value).cast("B")
            for i in range(0, max(len(raw), 1), _CHUNK):
                f.write(Checkpoint(value=[dict(tag=name, tensor=dict(
                    tensor_type=label, dims=dims, tensor_content=bytes(raw[i:i + _CHUNK])))]
                ).SerializeToString())
    return path


@dataclass
class CheckpointState:
    """What ``load_checkpoint`` read; ``is_ebv_ms`` False for a plain MindSpore weights file."""

    path: str
    epoch: int = 0                     # last completed epoch (1-based); 0 = none
    global_step: int = 0
    config: Optional[dict] = None
    ebv: Optional[EBVSet] = None
    ebv_info: Optional[dict] = None
    best_top1: float = -1.0
    best_epoch: int = 0
    metrics: dict = field(default_factory=dict)
    class_names: Optional[list] = None
    params: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    is_ebv_ms: bool = True

    @property
    def ebv_checksum(self) -> Optional[str]:
        return self.ebv_info["checksum"] if self.ebv_info else None

    def ebv_file(self) -> Optional[str]:
        name = (self.ebv_info or {}).get("file")
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), name) if name else None


def save_checkpoint(path: str, network, optimizer=None, *, epoch: int, global_step: int,
                    config: Optional[Config] = None, ebv: Optional[EBVSet] = None,
                    best_top1: float = -1.0, best_epoch: int = 0,
                    metrics: Optional[Mapping] = None, class_names: Optional[Sequence] = None,
                    extra_params: Optional[Mapping] = None,
                    ebv_inline_max_bytes: int = EBV_INLINE_MAX_BYTES) -> str:
    """Everything needed to resume (or evaluate), atomically (``atomic_path`` makes the folder)."""
    _, net, opt, extra = _params(network, optimizer, extra_params)
    entries: Dict[str, Entry] = {k: p.asnumpy().reshape(p.shape) for k, p in net + opt + extra}
    meta = {"format": FORMAT, "epoch": int(epoch), "global_step": int(global_step),
            "best_top1": float(best_top1), "best_epoch": int(best_epoch),
            "metrics": dict(metrics or {}),
            "class_names": [str(c) for c in class_names] if class_names is not None else None}
    if ebv is not None:
        meta["ebv"] = identity(ebv)
        if ebv.vectors.nbytes <= int(ebv_inline_max_bytes):
            entries[_EBV] = ebv.vectors
        else:  # the run's file, written at set-up (trainer), else now
            meta["ebv"]["file"] = run_ebv_file(os.path.dirname(os.path.abspath(path)), ebv)
    entries[_META] = json.dumps(meta)
    if config is not None:
        entries[_CONFIG] = yaml.safe_dump(config.to_dict(), sort_keys=False)
    return write_entries(path, entries)


def load_checkpoint(path: str) -> CheckpointState:
    """A checkpoint or plain weights file, checked; no Tensor is made (eval.py, before init())."""
    raw = read_entries(path, _ANOTHER)
    state = CheckpointState(path=path)
    recorded = raw.pop(_SUM, None)
    if recorded is not None and not (isinstance(recorded, str) and recorded == _digest(raw)):
        raise CheckpointError(f"{path}: checksum mismatch: the file is damaged (changed since it "
                              "was written); use another copy or the run's other checkpoint")
    if any(not isinstance(v, np.ndarray) for k, v in raw.items() if k not in (_META, _CONFIG)):
        raise CheckpointError(f"{path}: holds strings where weights belong; not a checkpoint of "
                              "this project")
    meta_s, cfg_s, vec = raw.pop(_META, None), raw.pop(_CONFIG, None), raw.pop(_EBV, None)
    if meta_s is None:
        if recorded is not None:
            raise CheckpointError(f"{path}: checksummed but holds no record; damaged")
        from ebv_ms.models.heads import EBVHead  # ms.save_checkpoint(net): the matrix is inside
        state.is_ebv_ms, suffix = False, "head." + EBVHead.param_name
        name = next((k for k in raw if k == suffix or k.endswith("." + suffix)), None)
        if name is not None:
            stored = raw.pop(name)
            state.ebv = _set_from(path, stored.astype(np.float32), method="checkpoint")
            state.ebv_info = {**identity(state.ebv), "param": name, "dtype": str(stored.dtype)}
    elif recorded is None:
        raise CheckpointError(f"{path}: holds no weights checksum (written by an older version; "
                              f"this one reads format {FORMAT!r}): its weights cannot be verified")
    elif not isinstance(meta_s, str) or (cfg_s is not None and not isinstance(cfg_s, str)):
        raise CheckpointError(f"{path}: damaged checkpoint metadata (not text)")
    else:
        try:
            _read_metadata(state, meta_s, cfg_s, vec)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError,
                yaml.YAMLError) as exc:
            raise CheckpointError(f"{path}: damaged checkpoint metadata ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]}); {_ANOTHER}") from None
    for name, arr in raw.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or inf; these weights are "
                                  "unusable (a diverged or damaged run): use an earlier checkpoint")
    state.params = raw
    return state


def _set_from(path: str, vectors, **how) -> EBVSet:
    try:
        return EBVSet(vectors, **how)
    except EBVError as exc:
        raise CheckpointError(f"{path}: the stored EBV matrix is unusable ({exc})") from None


def _read_metadata(state: CheckpointState, meta_s: str, cfg_s: Optional[str], vec) -> None:
    meta = json.loads(meta_s)
    if not isinstance(meta, dict):
        raise TypeError(f"the record is a {type(meta).__name__}, not a mapping")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{state.path}: checkpoint format {str(meta.get('format'))[:40]!r}, "
                              f"this version reads {FORMAT!r}")
    state.epoch, state.global_step = _int(meta["epoch"]), _int(meta["global_step"])
    state.best_top1, state.best_epoch = float(meta["best_top1"]), _int(meta["best_epoch"])
    state.metrics, names = meta.get("metrics", {}), meta.get("class_names")
    if not isinstance(state.metrics, Mapping):
        raise TypeError(f"metrics is a {type(state.metrics).__name__}, not a mapping")
    if not isinstance(state.metrics.get("top1", 0.0), (int, float)):
        raise TypeError("metrics.top1 is not a number")
    if names is not None and not (isinstance(names, list)
                                  and all(isinstance(n, str) for n in names)):
        raise TypeError("class_names is not a list of strings")
    state.class_names = names
    state.config = parse_yaml(cfg_s, "stored config") if cfg_s else None
    if state.config is not None and not isinstance(state.config, Mapping):
        raise TypeError(f"the recorded config is a {type(state.config).__name__}, not a mapping")
    info = meta.get("ebv")
    if info is None:
        return
    if not isinstance(info, dict) or not isinstance(info.get("checksum"), str):
        raise TypeError("the EBV record is not a mapping with a checksum")
    n, d = _int(info.get("num_classes")), _int(info.get("dim"))
    if info.get("file") is not None and not safe_file_name(info["file"]):
        raise ValueError(f"the recorded EBV file {str(info['file'])[:80]!r} is not a plain file "
                         "name (only files next to the checkpoint are looked for; pass --ebv FILE)")
    if names is not None and len(names) != n:
        raise ValueError(f"{len(names)} class names recorded for an EBV set of N={n}")
    state.ebv_info = dict(info)
    if vec is not None:
        if vec.shape != (n, d):
            raise ValueError(f"the stored EBV matrix is {vec.shape}, the record says {n} x {d}")
        state.ebv = _set_from(state.path, vec.astype(np.float32), alpha=info.get("alpha"),
                              method=str(info.get("method", "unknown")), seed=info.get("seed"))
        if state.ebv.checksum() != info["checksum"]:
            raise CheckpointError(f"{state.path}: the stored EBV matrix does not match its "
                                  f"recorded checksum {info['checksum']}; the file is damaged")


def _int(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** 62:
        raise ValueError(f"{str(v)[:40]!r} is not a whole number >= 0")
    return v


def _params(network, optimizer=None, extra_params=None):
    """EBV head, (key, param) pairs: network's but its matrix, optimizer's but lr list, scaler's."""
    from ebv_ms.models.heads import EBVHead
    head = next((c for _, c in network.cells_and_names() if isinstance(c, EBVHead)), None)
    net = list(network.get_parameters())
    ids = {id(p) for p in net}
    opt = [] if optimizer is None else [(_OPT + p.name, p) for p in optimizer.get_parameters()
                                        if id(p) not in ids
                                        and not p.name.startswith("learning_rate")]
    extra = [(_EXTRA + n, p) for n, p in (extra_params or {}).items()]
    return head, [(p.name, p) for p in net if head is None or p is not head.matrix], opt, extra


def _mismatch(state: CheckpointState, given: str) -> CheckpointError:
    return CheckpointError(f"EBV mismatch: {state.path} was trained with "
                           f"{describe(state.ebv_info)}, {given}")


def check_ebv_matches(state: CheckpointState, ebv: EBVSet) -> Optional[str]:
    """Raise unless ``ebv`` is the checkpoint's set; its checksum (None: no set recorded)."""
    if state.ebv_info is None:
        return None
    if not matches(state.ebv_info, ebv):
        near = state.ebv_file()
        hint = f" ({near})" if near and os.path.isfile(near) else ""
        raise _mismatch(state, f"but the set given is {ebv.num_classes} x {ebv.dim} (checksum "
                        f"{ebv.checksum()}); use the set it was trained with{hint}: eval.py "
                        "--ebv FILE, or the original run's 'ebv' settings / ebv.path for "
                        "train.py --resume")
    return ebv.checksum()


def checkpoint_ebv(state: CheckpointState, cfg=None, ebv_file: Optional[str] = None,
                   rank: int = 0, progress: bool = False) -> Optional[EBVSet]:
    """The set ``state`` was trained with, verified, from: ``ebv_file`` or ``ebv.path``; inside;
    next to it; the cache; a closed-form rebuild (no set recorded: ``resolve_ebv(cfg)``)."""
    info = state.ebv_info
    if info is None:
        return resolve_ebv(cfg, rank, progress=progress) if cfg is not None else None
    given = ebv_file or (str(cfg.ebv.path) if cfg is not None and cfg.ebv.path else None)
    if given is not None and not os.path.isfile(given):
        raise CheckpointError(f"EBV file not found: {given}; {state.path} needs its "
                              f"{describe(info)}")
    if given is None and state.ebv is not None:
        return state.ebv
    cache = ebv_cache_path(cfg) if cfg is not None and cfg.model.head == "ebv" else None
    looked = list(dict.fromkeys(filter(None, [given] if given else [state.ebv_file(), cache])))
    for path in filter(os.path.isfile, looked):
        ebv = load_ebv(path)
        if path == given:
            check_ebv_matches(state, ebv)
        elif ebv.checksum() != state.ebv_checksum:
            _log.warning("%s holds EBV set %s, not the checkpoint's %s; not used", path,
                         ebv.checksum(), state.ebv_checksum)
            continue
        _log.info("EBV set for %s loaded from %s", state.path, path)
        return ebv
    method, seed = info.get("method"), info.get("seed")
    kind, _, recipe = str(method).partition(":")
    if kind != "closed_form" or type(seed) is not int or recipe not in METHODS:
        raise CheckpointError(
            f"{state.path} needs its {describe(info)}, which is not in the checkpoint and was "
            f"not found (looked at: {', '.join(looked) or 'nothing'}); put "
            f"{info.get('file') or 'that set'} next to the checkpoint or pass --ebv FILE")
    n, d = info["num_classes"], info["dim"]
    why = None
    if cfg is not None and (cfg.model.num_classes, cfg.model.embed_dim) != (n, d):
        why = (f"the config's model.num_classes / embed_dim are {cfg.model.num_classes} / "
               f"{cfg.model.embed_dim}")
    elif not any(a.ndim == 2 and a.shape[0] == d and not k.startswith((_OPT, _EXTRA))
                 for k, a in state.params.items()):
        why = f"no weight in it projects to d={d}"
    elif n * d > MAX_RECIPE_ELEMENTS:
        why = f"N x d = {n * d:,} is over the {MAX_RECIPE_ELEMENTS:,} a recipe may ask for"
    if why:
        raise CheckpointError(f"{state.path}: its EBV recipe (N={n}, d={d}) does not fit the "
                              f"network it holds ({why}); not rebuilt: pass --ebv FILE")
    t0 = time.time()
    ebv = create_ebv(n, d, alpha=info.get("alpha"), method=recipe, seed=seed, progress=False)
    check_ebv_matches(state, ebv)
    _log.info("EBV set for %s rebuilt from its recipe (%s, seed %s) in %.1f s", state.path,
              method, seed, time.time() - t0)
    return ebv


def checkpoint_config(state: CheckpointState, config: Optional[str] = None,
                      overrides: Sequence[str] = ()):
    """Recorded config <- ``config`` <- ``overrides``, without the recorded ``ebv.path`` /
    ``cache_dir`` (paths from a file lead anywhere)."""
    if state.config is None and not config:
        raise ConfigError(f"{state.path} records no config (not written by train.py); pass "
                          "--config with the model/data settings it was trained with")
    base = dict(state.config) if state.config is not None else None
    if base is not None and isinstance(base.get("ebv"), Mapping):
        base["ebv"] = {k: v for k, v in base["ebv"].items() if k not in ("path", "cache_dir")}
    cfg = load_config(config, list(overrides), base=base)
    if state.class_names is not None and len(state.class_names) != int(cfg.model.num_classes):
        raise CheckpointError(f"{state.path} records {len(state.class_names)} class names but "
                              f"model.num_classes={cfg.model.num_classes}")
    return cfg


def network_from_checkpoint(state: CheckpointState, cfg, ebv_file: Optional[str] = None,
                            rank: int = 0, progress: bool = False):
    from .builders import build_network
    ebv = checkpoint_ebv(state, cfg, ebv_file, rank=rank, progress=progress)
    network = build_network(cfg, ebv)
    restore(state, network)
    return network, ebv


def restore(state: CheckpointState, network, optimizer=None,
            extra_params: Optional[Mapping] = None) -> None:
    """``state``'s weights into ``network``, optimizer and loss scaler (never the EBV matrix); not
    by ``load_param_into_net``, which called parameters shared with the optimizer "not loaded"."""
    head, params, opt, extra = _params(network, optimizer, extra_params)
    if head is not None and state.ebv_info is not None \
            and not matches(state.ebv_info, None, head.checksum):
        raise _mismatch(state, f"not the network's set {head.checksum}")
    _assign(state, params, "network parameters",
            "was it written for another model, head or number of classes?")
    if optimizer is not None:
        hint = "resume with the same optim.opt as the original run"
        saved = [k for k in state.params if k.startswith(_OPT)]
        if not saved:
            raise CheckpointError(f"{state.path}: holds no optimizer state; cannot resume from it")
        unused = sorted(set(saved) - {k for k, _ in opt})
        if unused:
            raise CheckpointError(f"{state.path}: optimizer state does not match this optimizer "
                                  f"(unexpected {unused[:5]}); {hint}")
        _assign(state, opt, "optimizer states", hint)
    # in place: the compiled step keeps the scaler's buffers (see write_in_place)
    _assign(state, [(k, p) for k, p in extra if k in state.params], "", "", in_place=True)


def _assign(state: CheckpointState, pairs, what: str, hint: str, in_place: bool = False):
    import mindspore as ms
    missing = [k for k, _ in pairs if k not in state.params]
    if missing:
        raise CheckpointError(f"{state.path}: {len(missing)} {what} are not in the checkpoint "
                              f"(e.g. {missing[:5]}); {hint}")
    for key, p in pairs:
        arr = state.params[key]
        if arr.size == 1 == math.prod(p.shape):  # a scalar state is () or (1,) by MindSpore's mood
            arr = arr.reshape(p.shape)
        want = DTYPES[str(p.dtype)]
        if tuple(arr.shape) != tuple(p.shape) or (arr.dtype != want and p.requires_grad):
            raise CheckpointError(f"{state.path}: {key} is {arr.dtype} {list(arr.shape)} there "
                                  f"but {want} {list(p.shape)} in this network; "
                                  f"{hint or 'not this run'}")
        value = ms.Tensor(arr.astype(want))
        p.copy_(value) if in_place else p.set_data(value, p.sliced)

"""Checkpoints that are enough to resume training or to evaluate, and the one place that
decides how the EBV set travels with them.

One MindSpore ``.ckpt`` file holds: the network's parameters (names as in the Cell) except the
frozen EBV matrix, the optimizer's state under ``optimizer/`` (moments, ``global_step`` - which
also positions the per-step lr list), the loss scaler's state under ``loss_scale/``, and as
strings the full config (YAML) and a JSON record (epoch, global step, best top-1, metrics, and
the EBV set's identity: checksum, N, d, alpha, method, seed, file).

The EBV set is never changed by training, so it is not rewritten with every epoch:

* a set of at most ``ebv_inline_max_bytes`` (default ``EBV_INLINE_MAX_BYTES`` = 64 MiB of
  float32, e.g. ImageNet's 1000 x 1000 = 4 MB) is stored inside each checkpoint, once, as
  float32 (``ebv_ms_ebv_vectors``), so a demo checkpoint evaluates alone;
* a larger one (100,000 x 5,000 = 2.0 GB) is written once, atomically, next to the checkpoint
  as ``ebv_N{N}_d{d}_{checksum}.npz`` (the native format, verified by its checksum on load) and
  the checkpoint records only its identity (about 2 GB less per checkpoint and per epoch).

``restore_checkpoint`` checks that the network's EBV head holds the recorded set (by the cached
checksum, no data read) and never loads the matrix over it; finding the set for a checkpoint
(next to it, ``--ebv``, or rebuilt from a closed-form recipe) is ``ebv_source.checkpoint_ebv``.

Files are written atomically: to a temporary file in the same folder, fsync'ed, then
``os.replace``d over the target, so a kill at any moment leaves either the old or the new file.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np
import yaml
import mindspore as ms
from mindspore import nn

from ebv_ms.ebv import EBVSet
from ebv_ms.atomic import atomic_copy, atomic_path
from ebv_ms.config import parse_yaml
from ebv_ms.errors import EBVMSError

__all__ = ["CheckpointError", "CheckpointState", "save_checkpoint", "load_checkpoint",
           "restore_checkpoint", "atomic_copy", "FORMAT", "EBV_INLINE_MAX_BYTES",
           "ebv_file_name", "ebv_head", "check_ebv_matches", "ebv_from_checkpoint"]

FORMAT = "ebv-ms/2"
_READS = ("ebv-ms/1", FORMAT)      # 1: the matrix was always inside (as a parameter or _EBV)
EBV_INLINE_MAX_BYTES = 64 << 20    # larger sets go to a file next to the checkpoints
_META = "ebv_ms_meta"
_CONFIG = "ebv_ms_config"
_EBV = "ebv_ms_ebv_vectors"
_OPT = "optimizer/"
_EXTRA = "loss_scale/"


class CheckpointError(EBVMSError, RuntimeError):
    """A checkpoint that cannot be used here (missing, foreign, or for another model/EBV set)."""


@dataclass
class CheckpointState:
    """What ``load_checkpoint`` read; ``params`` maps names to Parameters for ``restore``.

    ``ebv_info`` is the recorded identity of the EBV set (None: the checkpoint records none);
    ``ebv`` the set itself when the checkpoint carries it inline.
    """

    path: str
    epoch: int = 0                     # last completed epoch (1-based); 0 = none
    global_step: int = 0
    config: Optional[dict] = None      # the full config the run used, if recorded
    ebv: Optional[EBVSet] = None
    ebv_checksum: Optional[str] = None
    ebv_info: Optional[dict] = None
    best_top1: float = -1.0
    best_epoch: int = 0
    metrics: dict = field(default_factory=dict)
    params: Dict[str, ms.Parameter] = field(default_factory=dict, repr=False)
    is_ebv_ms: bool = True             # False: a plain weights file (no config/epoch)

    def ebv_file(self) -> Optional[str]:
        """Where the recorded EBV file is expected: next to the checkpoint (None: inline/none)."""
        name = (self.ebv_info or {}).get("file")
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), name) if name else None

    def describe_ebv(self) -> str:
        """The recorded set in words, for error messages."""
        i = self.ebv_info or {}
        where = f" (file {i['file']})" if i.get("file") else ""
        return (f"EBV set {i.get('checksum')}{where}: N={i.get('num_classes')}, d={i.get('dim')}, "
                f"alpha={i.get('alpha')}, method={i.get('method')}, seed={i.get('seed')}")


def ebv_file_name(ebv: EBVSet) -> str:
    """File name of an external EBV set: shape and checksum, so one name is one set."""
    return f"ebv_N{ebv.num_classes}_d{ebv.dim}_{ebv.checksum()}.npz"


def ebv_head(network: nn.Cell):
    """The network's EBV head (``models.EBVHead``), or None."""
    from ebv_ms.models.heads import EBVHead
    if isinstance(network, EBVHead):
        return network
    for _, cell in network.cells_and_names():
        if isinstance(cell, EBVHead):
            return cell
    return None


def _identity(ebv: EBVSet) -> dict:
    return {"checksum": ebv.checksum(), "num_classes": ebv.num_classes, "dim": ebv.dim,
            "alpha": ebv.alpha, "method": ebv.method, "seed": ebv.seed, "file": None}


def save_checkpoint(path: str, network: nn.Cell, optimizer: Optional[nn.Optimizer] = None, *,
                    epoch: int, global_step: int, config: Optional[Mapping] = None,
                    ebv: Optional[EBVSet] = None, best_top1: float = -1.0, best_epoch: int = 0,
                    metrics: Optional[Mapping] = None,
                    extra_params: Optional[Mapping[str, ms.Parameter]] = None,
                    ebv_inline_max_bytes: int = EBV_INLINE_MAX_BYTES) -> str:
    """Write everything needed to resume (or evaluate) to ``path``, atomically.

    ``ebv`` larger than ``ebv_inline_max_bytes`` (float32 bytes) is written once next to
    ``path`` (``ebv_file_name``; kept if already there) instead of into the checkpoint.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    head = ebv_head(network)
    skip = {id(head.matrix)} if head is not None else set()  # the frozen matrix: see module doc
    items = []
    seen = set()
    for p in network.get_parameters():
        seen.add(id(p))
        if id(p) not in skip:
            items.append({"name": p.name, "data": p})
    if optimizer is not None:
        for p in optimizer.get_parameters():
            # the lr list is rebuilt from the config; the network's own weights are saved above
            if id(p) in seen or p.name.startswith("learning_rate"):
                continue
            items.append({"name": _OPT + p.name, "data": p})
    for name, p in (extra_params or {}).items():
        items.append({"name": _EXTRA + name, "data": p})
    meta = {"format": FORMAT, "epoch": int(epoch), "global_step": int(global_step),
            "best_top1": float(best_top1), "best_epoch": int(best_epoch),
            "metrics": dict(metrics or {})}
    append: dict = {}
    if ebv is not None:
        meta["ebv"] = _identity(ebv)
        if ebv.vectors.nbytes <= int(ebv_inline_max_bytes):
            append[_EBV] = ms.Tensor(ebv.vectors)
        else:
            from .ebv_source import run_ebv_file  # written at set-up (trainer), else now
            meta["ebv"]["file"] = run_ebv_file(os.path.dirname(os.path.abspath(path)), ebv)
    append[_META] = json.dumps(meta)
    if config is not None:
        plain = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        append[_CONFIG] = yaml.safe_dump(plain, sort_keys=False)
    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint(items, tmp, append_dict=append)
    return path


def _plain_ebv_param(raw: Mapping) -> Optional[str]:
    """Name of the EBV matrix in a plain ``ms.save_checkpoint(net)`` file, if any."""
    from ebv_ms.models.heads import EBVHead
    suffix = "head." + EBVHead.param_name
    keys = [k for k in raw if k == suffix or k.endswith("." + suffix)]
    return keys[0] if keys else None


def load_checkpoint(path: str, params: bool = True) -> CheckpointState:
    """Read a checkpoint written by ``save_checkpoint`` (or a plain MindSpore weights file).

    ``params=False``: the record and config only, no Tensor made (eval.py reads the config this
    way before ``init()``, which MindSpore asks for before any Tensor on Ascend)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    names = []  # every entry's name, also those a header read leaves out

    def header(name: str) -> bool:
        names.append(name)
        return name in (_META, _CONFIG)

    try:
        raw = ms.load_checkpoint(path, choice_func=None if params else header)
    except Exception as exc:  # noqa: BLE001 - MindSpore raises several types for bad files
        if not params and names and "empty after filter" in str(exc):
            raw = {}  # a readable plain weights file: neither record nor config
        else:
            raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from exc
    state = CheckpointState(path=path)
    meta_s = raw.pop(_META, None)
    cfg_s = raw.pop(_CONFIG, None)
    vec = raw.pop(_EBV, None)
    if meta_s is None:
        state.is_ebv_ms = False
        if not params:  # only say where the matrix is: nothing is read
            name = _plain_ebv_param(dict.fromkeys(names))
            state.ebv_info = {"param": name} if name else None
            return state
        name = _plain_ebv_param(raw)
        if name is not None:  # ms.save_checkpoint(net) of an EBV classifier: the matrix inside
            stored = raw.pop(name).asnumpy()
            state.ebv = EBVSet(stored.astype(np.float32), method="checkpoint")
            state.ebv_checksum = state.ebv.checksum()
            state.ebv_info = {**_identity(state.ebv), "param": name, "dtype": str(stored.dtype)}
        state.params = raw
        return state
    try:
        _read_metadata(state, meta_s, cfg_s, vec, raw)
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        # damaged or crafted metadata (bad JSON, missing keys, wrong types, YAML tags)
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]}); use another checkpoint "
                              "(last.ckpt / best.ckpt of the run)") from exc
    state.params = raw
    return state


def _read_metadata(state: CheckpointState, meta_s, cfg_s, vec, raw) -> None:
    """Fill ``state`` from the JSON record and the YAML config of an ebv-ms checkpoint."""
    path = state.path
    meta = json.loads(str(meta_s))
    if not isinstance(meta, dict):
        raise TypeError(f"the record is a {type(meta).__name__}, not a mapping")
    if meta.get("format") not in _READS:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, "
                              f"this version reads {' and '.join(map(repr, _READS))}")
    state.epoch = int(meta["epoch"])
    state.global_step = int(meta["global_step"])
    state.best_top1 = float(meta["best_top1"])
    state.best_epoch = int(meta["best_epoch"])
    state.metrics = meta.get("metrics", {})
    state.config = parse_yaml(str(cfg_s), "stored config") if cfg_s else None
    info = meta.get("ebv")
    if info:
        state.ebv_info = dict(info)
        state.ebv_checksum = info["checksum"]
        if vec is None and info.get("param") in raw:  # format 1: the head's own parameter
            vec = raw.pop(info["param"])
        if vec is not None:
            state.ebv = EBVSet(vec.asnumpy().astype(np.float32), alpha=info.get("alpha"),
                               method=info.get("method", "unknown"), seed=info.get("seed"))
            if state.ebv.checksum() != state.ebv_checksum:
                raise CheckpointError(f"{path}: the stored EBV matrix does not match its recorded "
                                      f"checksum {state.ebv_checksum}; the file is damaged")
    if not isinstance(state.metrics, Mapping):
        raise TypeError(f"metrics is a {type(state.metrics).__name__}, not a mapping")
    if state.config is not None and not isinstance(state.config, Mapping):
        raise TypeError(f"the recorded config is a {type(state.config).__name__}, not a mapping")


def check_ebv_matches(state: CheckpointState, ebv) -> str:
    """Raise CheckpointError unless ``ebv`` (an EBVSet, or an EBV head) is the checkpoint's set.

    A model trained against one set of EBVs gives meaningless predictions against another.
    Compares cached checksums; for a plain weights file holding an fp16-stored matrix, the
    given set rounded to fp16. Returns the checksum. No-op (None) if no set is recorded.
    """
    if state.ebv_checksum is None:
        return None
    given = ebv.checksum() if isinstance(ebv, EBVSet) else ebv.checksum
    dtype = (state.ebv_info or {}).get("dtype", "float32")
    if given != state.ebv_checksum and dtype != "float32" and isinstance(ebv, EBVSet):
        # a plain file of an fp16-stored head: its set is the given one rounded to fp16
        if EBVSet(ebv.vectors.astype(dtype).astype(np.float32)).checksum() == state.ebv_checksum:
            return given
    if given != state.ebv_checksum:
        near = state.ebv_file()
        hint = f" ({near})" if near and os.path.isfile(near) else ""
        raise CheckpointError(
            f"EBV mismatch: {state.path} was trained with {state.describe_ebv()}, but the set "
            f"given is {ebv.num_classes} x {ebv.dim} (checksum {given}); use the set it was "
            f"trained with{hint}: eval.py --ebv FILE, or the original run's 'ebv' settings / "
            "ebv.path for train.py --resume")
    return given


def ebv_from_checkpoint(path: str) -> Optional[EBVSet]:
    """The EBV set a checkpoint carries inline, or in its recorded file next to it (None: none)."""
    from .ebv_source import checkpoint_ebv
    state = load_checkpoint(path)
    return checkpoint_ebv(state) if state.ebv_info else None


@contextlib.contextmanager
def _mindspore_warnings_off(active: bool):
    """The frozen EBV matrix is deliberately not in the checkpoint, and MindSpore warns that
    ``head.ebv`` was "not loaded" (two WARNING lines in every eval.py run). Silence MindSpore's
    own logger for that one call; any other missing parameter is our error below."""
    if not active:
        yield
        return
    from mindspore import log as ms_log
    logger = ms_log._get_logger()  # noqa: SLF001 - MindSpore's logger has no public handle
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def restore_checkpoint(state: CheckpointState, network: nn.Cell,
                       optimizer: Optional[nn.Optimizer] = None,
                       extra_params: Optional[Mapping[str, ms.Parameter]] = None) -> None:
    """Load ``state`` into ``network`` (every parameter must be found), and the optimizer/scaler.

    The network's EBV head must already hold the checkpoint's set (``check_ebv_matches``);
    the frozen matrix itself is never loaded over (it may share its buffer with the EBVSet).
    """
    net_dict = {k: v for k, v in state.params.items()
                if not k.startswith(_OPT) and not k.startswith(_EXTRA)}
    head = ebv_head(network)
    if head is not None:
        check_ebv_matches(state, head)
        net_dict.pop(head.matrix.name, None)
    with _mindspore_warnings_off(head is not None):
        missing, _unused = ms.load_param_into_net(network, net_dict, strict_load=True)
    missing = [m for m in missing if head is None or m != head.matrix.name]
    if missing:
        raise CheckpointError(f"{state.path}: {len(missing)} network parameters are not in the "
                              f"checkpoint (e.g. {missing[:5]}); was it written for another "
                              "model, head or number of classes?")
    if optimizer is not None:
        opt_dict = {k[len(_OPT):]: v for k, v in state.params.items() if k.startswith(_OPT)}
        if not opt_dict:
            raise CheckpointError(f"{state.path}: holds no optimizer state; cannot resume from it")
        net_ids = {id(p) for p in network.get_parameters()}
        _, unused = ms.load_param_into_net(optimizer, opt_dict, strict_load=True)
        expected = {p.name for p in optimizer.get_parameters()
                    if id(p) not in net_ids and not p.name.startswith("learning_rate")}
        not_found = sorted(expected - set(opt_dict))
        if not_found or unused:
            raise CheckpointError(f"{state.path}: optimizer state does not match this optimizer "
                                  f"(missing {not_found[:5]}, unexpected {list(unused)[:5]}); "
                                  "resume with the same optim.opt as the original run")
    for name, p in (extra_params or {}).items():
        saved = state.params.get(_EXTRA + name)
        if saved is not None:
            p.copy_(ms.Tensor(saved.asnumpy(), dtype=p.dtype))  # in place: see write_in_place

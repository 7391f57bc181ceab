"""Checkpoints that are enough to resume training or to evaluate with nothing else.

One MindSpore ``.ckpt`` file holds: the network's parameters (names as in the Cell), the
optimizer's state under ``optimizer/`` (moments, ``global_step`` - which also positions the
per-step lr list), the loss scaler's state under ``loss_scale/``, and as strings the full
config (YAML) and a JSON record (epoch, global step, best top-1, metrics, the EBV set's
checksum/alpha/method/seed). The EBV matrix itself is stored unless the network already holds
an identical frozen float32 copy (then only that parameter's name is recorded).

Files are written atomically: to a temporary file in the same folder, fsync'ed, then
``os.replace``d over the target, so a kill at any moment leaves either the old or the new file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np
import yaml
import mindspore as ms
from mindspore import nn

from ebv_ms.ebv import EBVSet
from ebv_ms.atomic import atomic_copy, atomic_path
from ebv_ms.errors import EBVMSError

__all__ = ["CheckpointError", "CheckpointState", "save_checkpoint", "load_checkpoint",
           "restore_checkpoint", "atomic_copy", "FORMAT"]

FORMAT = "ebv-ms/1"
_META = "ebv_ms_meta"
_CONFIG = "ebv_ms_config"
_EBV = "ebv_ms_ebv_vectors"
_OPT = "optimizer/"
_EXTRA = "loss_scale/"


class CheckpointError(EBVMSError, RuntimeError):
    """A checkpoint that cannot be used here (missing, foreign, or for another model/EBV set)."""


@dataclass
class CheckpointState:
    """What ``load_checkpoint`` read; ``params`` maps names to Parameters for ``restore``."""

    path: str
    epoch: int = 0                     # last completed epoch (1-based); 0 = none
    global_step: int = 0
    config: Optional[dict] = None      # the full config the run used, if recorded
    ebv: Optional[EBVSet] = None
    ebv_checksum: Optional[str] = None
    best_top1: float = -1.0
    best_epoch: int = 0
    metrics: dict = field(default_factory=dict)
    params: Dict[str, ms.Parameter] = field(default_factory=dict, repr=False)
    is_ebv_ms: bool = True             # False: a plain weights file (no config/epoch)


def _find_ebv_param(network: nn.Cell, ebv: EBVSet) -> Optional[str]:
    """Name of a frozen float32 parameter equal to the EBV matrix, if the network holds one."""
    for p in network.get_parameters():
        if p.requires_grad or tuple(p.shape) != (ebv.num_classes, ebv.dim):
            continue
        if p.dtype != ms.float32:
            continue
        if np.array_equal(p.asnumpy(), ebv.vectors):
            return p.name
    return None


def save_checkpoint(path: str, network: nn.Cell, optimizer: Optional[nn.Optimizer] = None, *,
                    epoch: int, global_step: int, config: Optional[Mapping] = None,
                    ebv: Optional[EBVSet] = None, best_top1: float = -1.0, best_epoch: int = 0,
                    metrics: Optional[Mapping] = None,
                    extra_params: Optional[Mapping[str, ms.Parameter]] = None) -> str:
    """Write everything needed to resume (or evaluate) to ``path``, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    items = []
    seen = set()
    for p in network.get_parameters():
        items.append({"name": p.name, "data": p})
        seen.add(id(p))
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
        meta["ebv"] = {"checksum": ebv.checksum(), "num_classes": ebv.num_classes,
                       "dim": ebv.dim, "alpha": ebv.alpha, "method": ebv.method,
                       "seed": ebv.seed, "param": _find_ebv_param(network, ebv)}
        if meta["ebv"]["param"] is None:
            append[_EBV] = ms.Tensor(ebv.vectors)
    append[_META] = json.dumps(meta)
    if config is not None:
        plain = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        append[_CONFIG] = yaml.safe_dump(plain, sort_keys=False)
    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint(items, tmp, append_dict=append)
    return path


def load_checkpoint(path: str) -> CheckpointState:
    """Read a checkpoint written by ``save_checkpoint`` (or a plain MindSpore weights file)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        raw = ms.load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - MindSpore raises several types for bad files
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({exc})") from exc
    state = CheckpointState(path=path)
    meta_s = raw.pop(_META, None)
    cfg_s = raw.pop(_CONFIG, None)
    vec = raw.pop(_EBV, None)
    if meta_s is None:
        state.is_ebv_ms = False
        state.params = raw
        return state
    meta = json.loads(meta_s)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, "
                              f"this version reads {FORMAT!r}")
    state.epoch = int(meta["epoch"])
    state.global_step = int(meta["global_step"])
    state.best_top1 = float(meta["best_top1"])
    state.best_epoch = int(meta["best_epoch"])
    state.metrics = meta.get("metrics", {})
    state.config = yaml.safe_load(cfg_s) if cfg_s else None
    info = meta.get("ebv")
    if info:
        state.ebv_checksum = info["checksum"]
        if vec is None and info.get("param") in raw:
            vec = raw[info["param"]]
        if vec is not None:
            state.ebv = EBVSet(vec.asnumpy().astype(np.float32), alpha=info.get("alpha"),
                               method=info.get("method", "unknown"), seed=info.get("seed"))
            if state.ebv.checksum() != state.ebv_checksum:
                raise CheckpointError(f"{path}: the stored EBV matrix does not match its recorded "
                                      f"checksum {state.ebv_checksum}; the file is damaged")
    state.params = raw
    return state


def restore_checkpoint(state: CheckpointState, network: nn.Cell,
                       optimizer: Optional[nn.Optimizer] = None,
                       extra_params: Optional[Mapping[str, ms.Parameter]] = None) -> None:
    """Load ``state`` into ``network`` (every parameter must be found), and the optimizer/scaler."""
    net_dict = {k: v for k, v in state.params.items()
                if not k.startswith(_OPT) and not k.startswith(_EXTRA)}
    missing, _unused = ms.load_param_into_net(network, net_dict, strict_load=True)
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
            p.set_data(ms.Tensor(saved.asnumpy(), dtype=p.dtype))

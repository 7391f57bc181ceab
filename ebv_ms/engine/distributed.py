"""Data-parallel set-up for ranks started by mpirun or msrun (MindSpore's dynamic cluster), and the
collectives the engine uses.

The dynamic cluster (a scheduler plus N workers that find it through ``MS_SCHED_HOST``/``_PORT``)
even under mpirun, because MindSpore's MPI-only ``init()`` does not work on CPU: the launcher
(``ebv_ms.tools.launch``) starts ``python -m ebv_ms.tools.scheduler`` beside mpirun's workers and
maps ``OMPI_COMM_WORLD_RANK`` to ``MS_NODE_ID``; msrun sets the same variables. Call
``init_distributed`` right after choosing the device, before any work: under msrun the scheduler
runs the training script itself, and ``init_distributed`` then serves the cluster and exits.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import zlib
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ebv_ms.device import set_device
from ebv_ms.errors import EBVMSError

_LOG = logging.getLogger(__name__)


class DistributedError(EBVMSError, RuntimeError):
    """A launch that cannot work; the message says what to do."""


def launch_env() -> Optional[str]:
    """'dynamic_cluster' (msrun / the launcher), 'mpirun' (bare, without the cluster's
    variables) or None (a single process)."""
    if os.environ.get("MS_ROLE"):
        return "dynamic_cluster"
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "mpirun"
    return None


def init_distributed(cfg: Any = None) -> Tuple[int, int]:
    """Join the data-parallel job if launched as one (DATA_PARALLEL, mean-reduced gradients);
    returns (rank, world_size), (0, 1) for a single process."""
    how = launch_env()
    device_target = (cfg.get("device_target") if isinstance(cfg, Mapping)
                     else getattr(cfg, "device_target", None))
    if how is None or _comm_initialized():
        return get_rank_info()

    import mindspore as ms
    from mindspore.communication import init

    if how == "mpirun" and (device_target or "CPU") == "CPU":
        raise DistributedError(
            "started by bare mpirun on CPU, where MindSpore's MPI-only init does not work; "
            "launch with `DEVICE_TARGET=CPU bash scripts/run_distribute_gpu.sh CONFIG N`, which "
            "starts the dynamic-cluster scheduler and sets MS_ROLE/MS_NODE_ID for each rank")
    set_device(device_target)  # init() needs the device (and the rank's card) chosen
    role = os.environ.get("MS_ROLE")
    try:
        init()
    except Exception as exc:  # the message of MindSpore's own error is kept
        raise DistributedError(
            f"mindspore.communication.init() failed (MS_ROLE={role}, MS_NODE_ID="
            f"{os.environ.get('MS_NODE_ID')}, scheduler {os.environ.get('MS_SCHED_HOST')}:"
            f"{os.environ.get('MS_SCHED_PORT')}, MS_WORKER_NUM={os.environ.get('MS_WORKER_NUM')}): "
            f"{exc}") from exc
    if role == "MS_SCHED":  # the scheduler's work is done when init() returns
        sys.exit(0)
    rank, world = get_rank_info()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    _LOG.info("data parallel: rank %d of %d on %s", rank, world, device_target)
    return rank, world


def _comm_initialized() -> bool:
    from mindspore.communication.management import GlobalComm
    return bool(GlobalComm.INITED)


def get_rank_info() -> Tuple[int, int]:
    """(rank, world_size) from MindSpore's communication state (no copy kept here)."""
    if not _comm_initialized():
        return 0, 1
    from mindspore.communication import get_group_size, get_rank
    return int(get_rank()), int(get_group_size())


def is_main_rank() -> bool:
    return get_rank_info()[0] == 0


def rank_log_dir(output_dir: str) -> str:
    return os.path.join(str(output_dir), "logs")


def rank_log_path(output_dir: str, rank: Optional[int] = None) -> str:
    """OUTPUT_DIR/logs/rank_K.log: where the launcher writes rank K's output."""
    rank = get_rank_info()[0] if rank is None else rank
    return os.path.join(rank_log_dir(output_dir), f"rank_{rank}.log")


def all_gather_counts(counts) -> np.ndarray:
    """Every rank's integer ``counts`` as a (world_size, k) int64 array, in rank order (int32
    AllGather: CPU's AllReduce takes floats only in MindSpore 2.10)."""
    arr = np.asarray(counts, dtype=np.int32).reshape(1, -1)
    if get_rank_info()[1] == 1:
        return arr.astype(np.int64)
    import mindspore as ms
    from mindspore import ops
    return ops.AllGather()(ms.Tensor(arr)).asnumpy().astype(np.int64)


def write_in_place(params, values) -> None:
    """Copy ``values`` (flat, the params' sizes in order) into ``params`` with ``Tensor.copy_``.

    Not ``Parameter.set_data``, which gives the Parameter a new buffer while a graph that has run
    keeps the one it was given: after set_data the compiled step never moved the BatchNorm
    statistics again (tests/test_param_writes.py)."""
    import mindspore as ms
    at = 0
    for p in params:
        n = int(np.prod(p.shape)) if p.shape else 1
        p.copy_(ms.Tensor(np.asarray(values[at:at + n]).reshape(p.shape), dtype=p.dtype))
        at += n


def broadcast_from_main_rank(params) -> None:
    """Rank 0's values of ``params`` (float32) on every rank, in place: one ``ops.Broadcast``."""
    params = list(params)
    if get_rank_info()[1] == 1 or not params:
        return
    import mindspore as ms
    from mindspore import ops
    flat = np.concatenate([p.asnumpy().astype(np.float32).reshape(-1) for p in params])
    (got,) = ops.Broadcast(0)((ms.Tensor(flat),))
    write_in_place(params, got.asnumpy())


def check_same_start(state, rank: int, world_size: int) -> None:
    """Stop every rank, with one message, unless all resume from the same checkpoint (``state``,
    None: from scratch). A rank that cannot see OUTPUT_DIR/last.ckpt would start from scratch
    while the others resume, and hang in a collective."""
    if world_size == 1:
        return
    seen = [0, 0, 0]
    if state is not None:
        ident = json.dumps([state.epoch, state.global_step, state.ebv_checksum, state.metrics],
                           sort_keys=True, default=str)
        seen = [state.epoch, state.global_step, zlib.crc32(ident.encode()) & 0x7FFFFFFF]
    per_rank = all_gather_counts(seen)
    if (per_rank == per_rank[0]).all():
        return

    def said(row) -> str:
        epoch, step, ident = (int(v) for v in row)
        if not (epoch or step or ident):
            return "no checkpoint (would start from scratch)"
        return f"a checkpoint at epoch {epoch} (global step {step}, identity {ident:08x})"

    where = state.path if state is not None else "nothing"
    raise DistributedError(
        "the ranks do not agree where the resumed run starts: " + "; ".join(
            f"rank {k} sees {said(row)}" for k, row in enumerate(per_rank)) +
        f" (rank {rank} read {where}). Every rank must see the same OUTPUT_DIR/last.ckpt: put "
        "output_dir on a folder all hosts share, or copy the run folder to every host")

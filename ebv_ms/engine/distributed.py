"""Data-parallel set-up and the engine's collectives. Always MindSpore's dynamic cluster (its
MPI-only ``init()`` fails on CPU): the launcher starts the scheduler and maps mpirun's rank to
``MS_NODE_ID``. Under msrun the scheduler runs the script too: ``init_distributed`` first."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import zlib
from typing import Mapping, Optional, Tuple

import numpy as np

from ebv_ms.device import set_device
from ebv_ms.errors import EBVMSError


class DistributedError(EBVMSError, RuntimeError):
    """A launch that cannot work; the message says what to do."""


def launch_env() -> Optional[str]:
    """'dynamic_cluster' (msrun / the launcher), 'mpirun' (bare) or None (a single process)."""
    if os.environ.get("MS_ROLE"):
        return "dynamic_cluster"
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "mpirun"
    return None


def init_distributed(cfg: Optional[Mapping] = None) -> Tuple[int, int]:
    """Join the data-parallel job (mean-reduced gradients) if launched as one; (rank, world)."""
    from mindspore.communication import GlobalComm
    how, device_target = launch_env(), (cfg or {}).get("device_target")
    if how is None or GlobalComm.INITED:
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
    logging.getLogger(__name__).info("data parallel: rank %d of %d on %s", rank, world,
                                     device_target)
    return rank, world


def get_rank_info() -> Tuple[int, int]:
    from mindspore.communication import GlobalComm, get_group_size, get_rank
    if not GlobalComm.INITED:
        return 0, 1
    return int(get_rank()), int(get_group_size())


def all_gather_counts(counts) -> np.ndarray:
    """Every rank's ``counts`` as a (world_size, k) int64 array (AllGather: CPU's AllReduce takes
    floats only in MindSpore 2.10)."""
    arr = np.asarray(counts, dtype=np.int32).reshape(1, -1)
    if get_rank_info()[1] == 1:
        return arr.astype(np.int64)
    import mindspore as ms
    from mindspore import ops
    return ops.AllGather()(ms.Tensor(arr)).asnumpy().astype(np.int64)


def write_in_place(params, values) -> None:
    """Flat ``values`` into ``params`` by ``Tensor.copy_``: after ``set_data`` (a new buffer) the
    compiled step never moved the BatchNorm statistics again (tests/test_param_writes.py)."""
    import mindspore as ms
    at = 0
    for p in params:
        n = math.prod(p.shape)
        p.copy_(ms.Tensor(np.asarray(values[at:at + n]).reshape(p.shape), dtype=p.dtype))
        at += n


def broadcast(arr: np.ndarray) -> np.ndarray:
    """Rank 0's ``arr`` on every rank; the others pass a buffer of the same shape and dtype."""
    import mindspore as ms
    from mindspore import ops
    (got,) = ops.Broadcast(0)((ms.Tensor(arr),))
    return got.asnumpy()


def broadcast_from_main_rank(params) -> None:
    params = list(params)
    if get_rank_info()[1] > 1 and params:
        write_in_place(params, broadcast(np.concatenate([p.asnumpy().astype(np.float32).reshape(-1)
                                                         for p in params])))


def check_same_start(state, rank: int, world_size: int) -> None:
    """Stop every rank unless all resume from the same checkpoint (``state`` None: from scratch):
    a rank that cannot see last.ckpt would start afresh and hang in a collective."""
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
    seen = "; ".join(f"rank {k} sees a checkpoint at epoch {e} (global step {s}, identity "
                     f"{i:08x})" if e or s or i else f"rank {k} sees no checkpoint (would start "
                     "from scratch)" for k, (e, s, i) in enumerate(per_rank.tolist()))
    raise DistributedError(
        f"the ranks do not agree where the resumed run starts: {seen} (rank {rank} read "
        f"{state.path if state is not None else 'nothing'}). Every rank must see the same "
        "OUTPUT_DIR/last.ckpt: put output_dir on a folder all hosts share, or copy the run "
        "folder to every host")

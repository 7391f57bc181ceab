"""Data-parallel set-up for ranks started by mpirun or msrun (MindSpore's dynamic cluster).

Why the dynamic cluster even under mpirun: MindSpore's MPI-only ``init()`` does not work on CPU,
while the dynamic cluster (one scheduler process plus N workers that find it through
``MS_SCHED_HOST``/``MS_SCHED_PORT``) works on CPU, GPU and Ascend alike. So
``scripts/run_distribute_gpu.sh`` uses mpirun only to start and stop the workers; it starts the
scheduler beside them (``python -m ebv_ms.tools.scheduler``) and a small wrapper
maps ``OMPI_COMM_WORLD_RANK`` to ``MS_NODE_ID``. ``msrun`` sets the same variables itself.

What a training or evaluation script calls (in this order):

    rank, world = init_distributed(cfg)        # right after choosing the device, before any work
    ds, info = create_dataset(..., num_shards=world, shard_id=rank, seed=cfg.seed)
    ... checkpoints and the main log only if is_main_rank()
    per_rank = all_gather_counts([hits, samples])   # sharded evaluation: every rank's counts

Under msrun the scheduler runs the training script itself; ``init_distributed`` then never
returns (the process serves the cluster and exits), which is why it must come before any work.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ebv_ms.device import set_device
from ebv_ms.errors import EBVMSError

_LOG = logging.getLogger(__name__)

# Environment of the dynamic cluster (set by msrun, or by scripts/run_distribute_gpu.sh).
ROLE_ENV = "MS_ROLE"            # MS_SCHED | MS_WORKER
WORKER_ROLE = "MS_WORKER"
SCHED_ROLE = "MS_SCHED"

class DistributedError(EBVMSError, RuntimeError):
    """A launch that cannot work; the message says what to do."""


def _cfg_get(cfg: Any, key: str, default=None):
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def launch_env() -> Optional[str]:
    """How this process was started: 'dynamic_cluster' (msrun / our mpirun script), 'mpirun'
    (bare mpirun without the dynamic-cluster variables), or None (a single process)."""
    if os.environ.get(ROLE_ENV):
        return "dynamic_cluster"
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "mpirun"
    return None


def init_distributed(cfg: Any = None) -> Tuple[int, int]:
    """Join the data-parallel job if launched as one; returns (rank, world_size).

    Single process: (0, 1), nothing changes. Under msrun / run_distribute_gpu.sh: calls
    ``mindspore.communication.init()`` and sets DATA_PARALLEL with mean-reduced gradients, so
    ``nn.TrainOneStepCell`` / ``Model`` all-reduce gradients across ranks. A scheduler process
    (MS_ROLE=MS_SCHED) serves the cluster inside ``init()`` and exits without returning.
    """
    how = launch_env()
    device_target = _cfg_get(cfg, "device_target")
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
    role = os.environ.get(ROLE_ENV)
    try:
        init()
    except Exception as exc:  # the message of MindSpore's own error is kept
        raise DistributedError(
            f"mindspore.communication.init() failed (MS_ROLE={role}, MS_NODE_ID="
            f"{os.environ.get('MS_NODE_ID')}, scheduler {os.environ.get('MS_SCHED_HOST')}:"
            f"{os.environ.get('MS_SCHED_PORT')}, MS_WORKER_NUM={os.environ.get('MS_WORKER_NUM')}): "
            f"{exc}") from exc
    if role == SCHED_ROLE:
        # The scheduler's work is done when init() returns (all workers have left).
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
    """(rank, world_size), from MindSpore's communication state itself (the one source: no copy
    kept here); (0, 1) before ``init_distributed`` joined a job, or in a single process."""
    if not _comm_initialized():
        return 0, 1
    from mindspore.communication import get_group_size, get_rank
    return int(get_rank()), int(get_group_size())


def is_main_rank() -> bool:
    """True on rank 0: the only rank that writes checkpoints, the main log and summaries."""
    return get_rank_info()[0] == 0


def rank_log_dir(output_dir: str) -> str:
    return os.path.join(str(output_dir), "logs")


def rank_log_path(output_dir: str, rank: Optional[int] = None) -> str:
    """OUTPUT_DIR/logs/rank_K.log: where the launch scripts write rank K's stdout and stderr."""
    rank = get_rank_info()[0] if rank is None else rank
    return os.path.join(rank_log_dir(output_dir), f"rank_{rank}.log")


def all_gather_counts(counts) -> np.ndarray:
    """Every rank's integer ``counts`` as a (world_size, k) int array, in rank order.

    One ``ops.AllGather`` of k int32 values (int32: CPU's AllReduce kernel takes floats only in
    MindSpore 2.10, its AllGather takes int32; summing the rows afterwards is exact). Alone: (1, k).
    """
    arr = np.asarray(counts, dtype=np.int32).reshape(1, -1)
    if get_rank_info()[1] == 1:
        return arr.astype(np.int64)
    import mindspore as ms
    from mindspore import ops
    return ops.AllGather()(ms.Tensor(arr)).asnumpy().astype(np.int64)


def write_in_place(params, values) -> None:
    """Copy ``values`` (a flat float array, the params' sizes in order) into ``params`` in place.

    In place, not ``Parameter.set_data``: set_data gives the Parameter a new buffer
    (parameter.py: set_data -> _update_tensor_data -> assign_value), while a graph that has
    already run keeps reading and writing the buffer it was given at its first step. Measured
    (tests/test_param_writes.py): after set_data the compiled train step never moved the
    BatchNorm statistics again; ``Tensor.copy_`` (what MindSpore 2.10 names in place of
    ``assign_value``; ``ops.assign`` is deprecated) writes the buffer the graph reads.
    """
    import mindspore as ms
    at = 0
    for p in params:
        n = int(np.prod(p.shape)) if p.shape else 1
        p.copy_(ms.Tensor(np.asarray(values[at:at + n]).reshape(p.shape), dtype=p.dtype))
        at += n


def broadcast_from_main_rank(params) -> None:
    """Set ``params`` (float32 Parameters) to rank 0's values on every rank, in place (the
    compiled steps keep using them): one ``ops.Broadcast`` of their concatenation. Alone:
    nothing to do."""
    params = list(params)
    if get_rank_info()[1] == 1 or not params:
        return
    import mindspore as ms
    from mindspore import ops
    flat = np.concatenate([p.asnumpy().astype(np.float32).reshape(-1) for p in params])
    (got,) = ops.Broadcast(0)((ms.Tensor(flat),))
    write_in_place(params, got.asnumpy())


def check_same_start(resume, rank: int, world_size: int) -> None:
    """Stop every rank, with one message, unless all ranks resume from the same checkpoint.

    ``resume`` is this rank's ``ResumeState`` (None: starts from scratch). Each rank decides from
    the files it sees, so a rank that cannot see OUTPUT_DIR/last.ckpt would start from scratch
    while the others resume, run a different number of steps and hang in a collective. One
    all-gather of (epoch, global step, checkpoint identity) per rank compares them first.
    """
    if world_size == 1:
        return
    import json
    import zlib
    seen = [0, 0, 0]
    if resume is not None:
        ckpt = resume.checkpoint
        ident = json.dumps([resume.epoch, resume.global_step, getattr(ckpt, "ebv_checksum", None),
                            getattr(ckpt, "metrics", None)], sort_keys=True, default=str)
        seen = [resume.epoch, resume.global_step, zlib.crc32(ident.encode()) & 0x7FFFFFFF]
    per_rank = all_gather_counts(seen)
    if (per_rank == per_rank[0]).all():
        return

    def said(row) -> str:
        epoch, step, ident = (int(v) for v in row)
        if not (epoch or step or ident):
            return "no checkpoint (would start from scratch)"
        return f"a checkpoint at epoch {epoch} (global step {step}, identity {ident:08x})"

    where = resume.path if resume is not None else "nothing"
    raise DistributedError(
        "the ranks do not agree where the resumed run starts: " + "; ".join(
            f"rank {k} sees {said(row)}" for k, row in enumerate(per_rank)) +
        f" (rank {rank} read {where}). Every rank must see the same OUTPUT_DIR/last.ckpt: put "
        "output_dir on a folder all hosts share, or copy the run folder to every host")

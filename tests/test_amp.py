"""Mixed precision and loss scaling on CPU (MindSpore runs amp O1/O2 and its loss scalers there):
the compiled loss-scaled step, the stall guard, O1, and the fp32 embedding."""
import re
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from ebv_ms.ebv import EBVSet
from ebv_ms.engine.train_step import SkippedStepGuard, build_train_step, create_loss_scaler
from ebv_ms.loss import create_loss
from ebv_ms.models import create_classifier
from ebv_ms.optim import create_optimizer


def _classifier(num_classes=10, dim=16, tau=0.07, seed=0):
    ms.set_seed(seed)
    w = np.linalg.qr(np.random.RandomState(seed).randn(dim, num_classes))[0].T.astype(np.float32)
    return create_classifier("small_cnn", "ebv", num_classes, ebv=EBVSet(w), tau=tau,
                             backbone_kwargs={"widths": [8, 8, 16]})


def _batch(n=8, classes=10, seed=0):
    rng = np.random.RandomState(seed)
    return (ms.Tensor(rng.randn(n, 3, 8, 8).astype(np.float32)),
            ms.Tensor((np.arange(n) % classes).astype(np.int32)))


_LOAD = re.compile(r"^\s+%(\d+)\(.*?\) = Load\(%para\d+_head\.ebv[,)]")
_MOVE = re.compile(r"TensorMove\(%(\d+)\)")


def frozen_matrix_copies(ir_dir: Path):
    """(number of Loads of head.ebv, TensorMoves of such a Load) over all saved IR files;
    %N names are per subgraph, so the Loads are collected per subgraph."""
    loads, moves = 0, []
    for path in sorted(ir_dir.rglob("*.ir")):
        defs = set()
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("subgraph @"):
                defs = set()
            m = _LOAD.match(line)
            if m:
                defs.add(m.group(1))
                loads += 1
            moves += [f"{path.name}: {line.strip()[:100]}" for n in _MOVE.findall(line) if n in defs]
    return loads, moves


def test_loss_scaled_step_never_copies_the_frozen_matrix(tmp_path):
    """GRAPH mode, dynamic loss scaler: the saved IR reads head.ebv but never TensorMoves it
    (the old single compiled step with an `if finite:` branch did, once per step). The network
    is built in GRAPH mode, as train.py does: built in PYNATIVE mode even the old step had none."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = _classifier()
        net.set_train(True)
        opt = create_optimizer(net, "sgd", lr=[0.1] * 4, weight_decay=1e-4)
        step = build_train_step(net, create_loss(), opt, jit=True,
                                loss_scaler=create_loss_scaler("dynamic", "O2", 2.0 ** 16))
        x, y = _batch()
        w0 = net.projection.weight.asnumpy().copy()
        ms.set_context(save_graphs=1, save_graphs_path=str(tmp_path))
        loss, finite = step(x, y)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE, save_graphs=0)
    assert bool(finite.asnumpy()) and np.isfinite(float(loss.asnumpy()))
    assert not np.array_equal(net.projection.weight.asnumpy(), w0)  # the update ran
    loads, moves = frozen_matrix_copies(tmp_path)
    assert loads > 0, "no IR saved, or it never reads head.ebv: the check would see nothing"
    assert moves == [], f"the compiled step copies the frozen matrix: {moves[:3]}"

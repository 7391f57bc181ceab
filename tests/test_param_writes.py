"""Writes to a Parameter after its graph has compiled must be in place (issue 16 §1).

``Parameter.set_data`` gives the Parameter a new buffer; a compiled graph keeps the buffer it
had at its first step, so later steps update a buffer nothing reads (BatchNorm statistics froze
after the first evaluation of every multi-rank run). These tests compile the project's real train
step, write the way the code does, step again, and look at the outcome.
"""
import ast
from pathlib import Path

import numpy as np

import mindspore as ms
from mindspore import nn

from ebv_ms.engine import distributed as dist
from ebv_ms.engine.train_step import build_eval_step, build_train_step

ROOT = Path(__file__).resolve().parents[1]


def _bn_net_and_step():
    ms.set_seed(0)
    net = nn.SequentialCell(nn.Dense(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dense(4, 3))
    opt = nn.SGD(net.trainable_params(), learning_rate=0.1)
    step = build_train_step(net, nn.CrossEntropyLoss(), opt, jit=True)
    rng = np.random.RandomState(0)
    x = ms.Tensor(rng.randn(16, 6).astype(np.float32) * 3 + 1)
    y = ms.Tensor(rng.randint(0, 3, 16).astype(np.int32))
    stats = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
    return net, step, x, y, stats


def test_bn_statistics_keep_moving_after_the_broadcast_write():
    """What the trainer does before each evaluation: write rank 0's BN statistics into the
    Parameters (write_in_place, used by broadcast_from_main_rank); later steps must update them."""
    net, step, x, y, stats = _bn_net_and_step()
    net.set_train(True)
    step(x, y)                                           # compiles the step
    flat = np.concatenate([p.asnumpy().reshape(-1) for p in stats])
    dist.write_in_place(stats, flat)                     # same values, written as the code does
    written = [p.asnumpy().copy() for p in stats]
    step(x, y)
    step(x, y)
    for p, before in zip(stats, written):
        assert not np.allclose(p.asnumpy(), before), f"{p.name} froze after the write"


def test_the_compiled_eval_step_reads_what_was_written():
    """Evaluation after the broadcast must use the written statistics (the saved model's)."""
    net, step, x, y, stats = _bn_net_and_step()
    net.set_train(True)
    step(x, y)
    net.set_train(False)
    ev = build_eval_step(net, 3, jit=True)
    ev(x)                                                # compiles the eval graph
    mean, var = stats
    new = np.concatenate([np.full(4, 5.0, np.float32), np.full(4, 0.25, np.float32)])
    dist.write_in_place(stats, new)
    net.set_train(False)
    got = ev(x).asnumpy()
    # the same network with the statistics given before any compile: the reference ranking
    ref_net = nn.SequentialCell(nn.Dense(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dense(4, 3))
    ms.load_param_into_net(ref_net, {p.name: ms.Parameter(p.asnumpy(), name=p.name)
                                     for p in net.get_parameters()})
    ref_net.set_train(False)
    np.testing.assert_array_equal(ref_net[1].moving_mean.asnumpy(), np.full(4, 5.0, np.float32))
    ref = ms.ops.topk(ref_net(x), 3)[1].asnumpy()
    np.testing.assert_array_equal(got, ref)


def test_write_in_place_keeps_dtype_and_order():
    a = ms.Parameter(ms.Tensor(np.zeros((2, 3), np.float32)), name="a")
    b = ms.Parameter(ms.Tensor(np.zeros(4, np.float16)), name="b")
    dist.write_in_place([a, b], np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(a.asnumpy(), np.arange(6).reshape(2, 3))
    assert b.dtype == ms.float16 and b.asnumpy().tolist() == [6, 7, 8, 9]


# Every production call that replaces a Parameter's buffer, and why it is safe: each runs before
# the first step of any graph that reads that Parameter compiles. A new call site fails this test
# until it is made in place (distributed.write_in_place) or added here with its reason and test.
_BEFORE_FIRST_COMPILE = {
    # resume / eval.py / export / predict: Trainer.setup and deploy.load_network restore before any step;
    # outcome: tests/test_dist_outcomes.py (2-rank resume == uninterrupted), test_train_resume.py
    ("ebv_ms/engine/checkpoint.py", "_assign"): 1,  # restore(); in place for the loss scaler
    # pretrained backbone weights, while the model is built
    ("ebv_ms/models/backbones.py", "_load_backbone_checkpoint"): 1,
    # the frozen EBV matrix, given its buffer when the head is built (never written again)
    ("ebv_ms/models/heads.py", "_shared_parameter"): 1,
}


def _buffer_replacing_calls():
    found = {}
    for path in sorted((ROOT / "ebv_ms").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "attr", getattr(node.func, "id", None))
                    if name in ("set_data", "load_param_into_net", "assign_value"):
                        key = (str(path.relative_to(ROOT)), fn.name)
                        found[key] = found.get(key, 0) + 1
    return found


def test_every_buffer_replacing_write_runs_before_the_first_compile():
    assert _buffer_replacing_calls() == _BEFORE_FIRST_COMPILE

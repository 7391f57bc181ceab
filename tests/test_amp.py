"""Mixed precision and loss scaling on CPU (MindSpore runs amp O1/O2 and its loss scalers there):
the compiled loss-scaled step, the stall guard, O1, and the fp32 embedding."""
import re
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms

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
    assert finite is True and np.isfinite(float(loss.asnumpy()))
    assert not np.array_equal(net.projection.weight.asnumpy(), w0)  # the update ran
    loads, moves = frozen_matrix_copies(tmp_path)
    assert loads > 0, "no IR saved, or it never reads head.ebv: the check would see nothing"
    assert moves == [], f"the compiled step copies the frozen matrix: {moves[:3]}"


# ----------------------------------------------------------------------------- O1
def test_o1_head_survives_mindspore_rewrite(tmp_path, monkeypatch):
    """MindSpore's O1 regenerates ScaledL2Normalize's methods in a module without heads.py's
    globals: set_train() used to fail with NameError '_AMP_FLAGS'."""
    from ebv_ms.models import EBVHead
    monkeypatch.chdir(tmp_path)  # MindSpore's own O1 writes ./rewritten_network
    w = np.eye(4, 6, dtype=np.float32)
    head = ms.amp.auto_mixed_precision(EBVHead(w, tau=0.5), "O1")
    head.set_train(True)
    out = head(ms.Tensor(np.eye(3, 6, dtype=np.float16) * 3)).asnumpy()
    np.testing.assert_allclose(out, np.eye(3, 4) / 0.5, atol=1e-6)


def test_o1_trains_in_graph_mode_and_writes_nothing_in_cwd(tmp_path, monkeypatch):
    """apply_mixed_precision(O1) + loss scaler, two compiled steps: finite, learning, same
    parameter names as without amp, projection untouched (fp32), no ./rewritten_network."""
    from ebv_ms.models.amp import apply_mixed_precision
    monkeypatch.chdir(tmp_path)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = _classifier()
        names = [p.name for p in net.get_parameters()]
        projection = net.projection
        net = apply_mixed_precision(net, "O1")
        net.set_train(True)
        opt = create_optimizer(net, "sgd", lr=[0.1] * 4, weight_decay=0.0)
        step = build_train_step(net, create_loss(), opt, jit=True,
                                loss_scaler=create_loss_scaler("dynamic", "O1", 2.0 ** 10))
        x, y = _batch()
        w0 = projection.weight.asnumpy().copy()
        losses = [float(step(x, y)[0].asnumpy()) for _ in range(2)]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert all(np.isfinite(losses))
    assert [p.name for p in net.get_parameters()] == names
    assert net.projection is projection and not np.array_equal(projection.weight.asnumpy(), w0)
    assert type(net.backbone).__name__.endswith("Opt")  # the backbone really was rewritten
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- fp32 embedding
@pytest.mark.parametrize("level", ["O1", "O2", "O3", "auto"])
def test_embedding_past_fp16_range_stays_finite(level):
    """The EBV head is scale-invariant, so the embedding's norm is unbounded. With the projection
    scaled so the embedding reaches ~1.3e5 (> 65,504), amp logits stay finite and give the fp32
    predictions; MindSpore's amp on the whole network gives inf/NaN (checked for O2/O3/auto)."""
    from ebv_ms.models.amp import apply_mixed_precision

    def big():
        net = _classifier(tau=0.007)
        net.projection.weight.set_data(net.projection.weight * 1e6)
        net.set_train(False)
        return net

    x, _ = _batch(4)
    ref_net = big()
    assert np.abs(ref_net.projection(ref_net.backbone(x)).asnumpy()).max() > 65504
    ref = ref_net(x).asnumpy()
    out = apply_mixed_precision(big(), level)(x).asnumpy()
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(out, ref, atol=0.05)  # fp16 backbone: logits within 0.05 of 143
    if level != "O1":
        assert not np.isfinite(ms.amp.auto_mixed_precision(big(), level)(x).asnumpy()).all()


# ----------------------------------------------------------------------------- stall guard
def test_skipped_step_guard_counts_only_at_the_floor():
    guard = SkippedStepGuard(3, min_scale=1.0)
    guard(False, 4.0)                       # backing off: not counted
    guard(False, ms.Tensor(1.0))
    guard(False, 1.0)
    guard(True, 1.0)                        # a finite step resets
    guard(False, 1.0)
    guard(False, 1.0)
    with pytest.raises(FloatingPointError, match="train.max_skipped_steps"):
        guard(False, 1.0)
    SkippedStepGuard(0)(False, 1.0)         # 0 disables
    with pytest.raises(ValueError, match="max_steps must be >= 0"):
        SkippedStepGuard(-1)                # the config schema refuses it first (a named key)
    assert SkippedStepGuard.for_scaler(None, 5) is None
    assert SkippedStepGuard.for_scaler(create_loss_scaler("static", "O2", 8.0), 5).min_scale == 8.0
    assert SkippedStepGuard.for_scaler(create_loss_scaler("dynamic", "O2", 8.0), 5).min_scale == 1.0


def test_stalled_fp16_run_stops_with_a_message():
    """A forward pass that overflows fp16 (O2, inputs of 1e5: past 65,504 once the backbone casts
    them to fp16) makes every step non-finite: the dynamic scale goes 4 -> 2 -> 1 and stays; the guard,
    called as the trainer does, stops after 3 steps at the floor instead of skipping forever."""
    from ebv_ms.models.amp import apply_mixed_precision
    net = apply_mixed_precision(_classifier(), "O2")
    net.set_train(True)
    opt = create_optimizer(net, "sgd", lr=[0.1] * 20, weight_decay=0.0)
    scaler = create_loss_scaler("dynamic", "O2", 4.0)
    step = build_train_step(net, create_loss(), opt, jit=False, loss_scaler=scaler)
    guard = SkippedStepGuard.for_scaler(scaler, 3)
    x, y = _batch()
    x = ms.Tensor(np.full(x.shape, 1e5, np.float32))
    scales = []
    with pytest.raises(FloatingPointError, match="stalled: 3 consecutive steps"):
        for _ in range(20):
            _, finite = step(x, y)
            scales.append(float(scaler.scale_value.asnumpy()))
            guard(finite, scaler.scale_value)
    assert scales == [2.0, 1.0, 1.0, 1.0]
    assert int(opt.global_step.asnumpy()) == 0  # no step was applied

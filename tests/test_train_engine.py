"""Engine pieces with small real Cells: schedule, optimizer, train step, checkpoints, logs."""
import json
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from ebv_ms.config import ConfigError, load_config
from ebv_ms.ebv import EBVSet
from ebv_ms.engine.checkpoint import (CheckpointError, load_checkpoint, restore as restore_checkpoint,
                                      save_checkpoint)
from ebv_ms.engine.run_folder import JsonlLog
from ebv_ms.engine.evaluator import topk_correct
from ebv_ms.engine.train_step import (build_eval_step, build_train_step, create_loss_scaler,
                                      grad_reducer_for, resolve_amp_level)
from ebv_ms.optim import create_optimizer
from ebv_ms.scheduler import create_scheduler


class FrozenHeadNet(nn.Cell):
    """Dense layer -> cosine logits against a frozen class matrix (an EBV-like head)."""

    def __init__(self, w: np.ndarray, in_dim: int = 6):
        super().__init__()
        self.fc = nn.Dense(in_dim, w.shape[1])
        self.classes = ms.Parameter(ms.Tensor(w), name="classes", requires_grad=False)

    def construct(self, x):
        v = self.fc(x)
        v = v / ops.norm(v, dim=1, keepdim=True).clamp(1e-12)
        return ops.matmul(v, self.classes.T) / 0.1


def _data(n=64, in_dim=6, classes=4, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, in_dim).astype(np.float32)
    y = (np.abs(x[:, :classes])).argmax(1).astype(np.int32)
    return ms.Tensor(x), ms.Tensor(y)


def _net(seed=0):
    ms.set_seed(seed)
    w = np.linalg.qr(np.random.RandomState(1).randn(5, 4))[0].T.astype(np.float32)  # 4 x 5
    return FrozenHeadNet(w)


# ----------------------------------------------------------------------------- scheduler
def test_warmup_cosine_known_values():
    lrs = create_scheduler(steps_per_epoch=10, epochs=20, lr=0.1, warmup_epochs=5, warmup_factor=0.01)
    assert len(lrs) == 200
    assert lrs[0] == pytest.approx(0.001)                # lr x 0.01 at the first step
    assert lrs[25] == pytest.approx(0.001 + 0.099 * 0.5)  # half-way up the linear ramp
    assert lrs[50] == pytest.approx(0.1)                 # peak right after 5 epochs
    assert lrs[125] == pytest.approx(0.05)               # cosine half-way: lr / 2
    assert np.all(np.diff(lrs[:51]) > 0) and np.all(np.diff(lrs[50:]) < 0)
    assert 0 < lrs[-1] < 1e-4


def test_scheduler_constant_and_errors():
    assert create_scheduler(3, 2, 0.5, name="constant") == [0.5] * 6
    # a factory's errors are plain ValueErrors naming its arguments (the config was checked first)
    with pytest.raises(ValueError, match="unknown scheduler 'step'"):
        create_scheduler(3, 2, 0.5, name="step")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        create_scheduler(0, 2, 0.5)
    with pytest.raises(ValueError, match="lr must be > 0") as e:
        create_scheduler(3, 2, float("nan"))
    assert not isinstance(e.value, ConfigError)


# ----------------------------------------------------------------------------- optimizer
def test_optimizer_only_trainable_and_decay_groups():
    net = _net()
    opt = create_optimizer(net, "sgd", lr=0.1, weight_decay=1e-4)
    names = {p.name for p in opt.parameters}
    assert "classes" not in names and names == {"fc.weight", "fc.bias"}
    assert isinstance(opt, nn.Momentum) and float(opt.momentum.asnumpy()) == pytest.approx(0.9)
    decay = dict(zip([p.name for p in opt.parameters], opt.decay_flags))
    assert decay == {"fc.weight": True, "fc.bias": False}
    assert isinstance(create_optimizer(net, "adamw", lr=1e-3, weight_decay=0.05), nn.AdamWeightDecay)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        create_optimizer(net, "lbfgs")


def test_sgd_step_matches_hand_computation():
    """One momentum-SGD step with weight decay: w1 = w0 - lr * (g + wd * w0)."""
    net = _net()
    x, y = _data()
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    w0 = net.fc.weight.asnumpy().copy()
    grad = ms.grad(lambda a, b: loss_fn(net(a), b), None, [net.fc.weight])(x, y)[0].asnumpy()
    opt = create_optimizer(net, "sgd", lr=[0.5, 0.5], weight_decay=0.01)
    step = build_train_step(net, loss_fn, opt, jit=False)
    step(x, y)
    np.testing.assert_allclose(net.fc.weight.asnumpy(), w0 - 0.5 * (grad + 0.01 * w0), rtol=1e-5,
                               atol=1e-6)
    assert int(opt.global_step.asnumpy()) == 1


@pytest.mark.slow
def test_train_step_jit_equals_pynative_and_learns():
    x, y = _data()
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    results = []
    for jit in (False, True):
        net = _net(seed=3)
        frozen = net.classes.asnumpy().copy()
        opt = create_optimizer(net, "sgd", lr=[0.2] * 30, weight_decay=0.0)
        step = build_train_step(net, loss_fn, opt, jit=jit)
        losses = [float(step(x, y)[0].asnumpy()) for _ in range(30)]
        assert losses[-1] < 0.5 * losses[0]                     # it learns
        np.testing.assert_array_equal(net.classes.asnumpy(), frozen)  # head stays frozen
        results.append(net.fc.weight.asnumpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4, atol=1e-5)


def test_dynamic_loss_scale_skips_overflow_step():
    net = _net()
    x, y = _data()
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = create_optimizer(net, "sgd", lr=[0.1] * 4, weight_decay=0.0)
    scaler = create_loss_scaler("dynamic", "O2", 2.0 ** 16)
    step = build_train_step(net, loss_fn, opt, jit=False, loss_scaler=scaler)
    w0 = net.fc.weight.asnumpy().copy()
    bad = ms.Tensor(np.full((64, 6), np.inf, np.float32))
    _, finite = step(bad, y)
    assert finite is False
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), w0)          # update skipped
    assert float(scaler.scale_value.asnumpy()) == 2.0 ** 15              # scale halved
    _, finite = step(x, y)
    assert finite is True and not np.array_equal(net.fc.weight.asnumpy(), w0)


def test_amp_and_scaler_choices():
    assert resolve_amp_level("auto", "CPU") == "O0" and resolve_amp_level("auto", "GPU") == "O2"
    assert create_loss_scaler("auto", "O0") is None
    assert create_loss_scaler("auto", "O2") is not None
    with pytest.raises(ValueError, match="amp_level must be one of"):
        resolve_amp_level("O9", "GPU")
    assert grad_reducer_for(_net().trainable_params()) is None  # stand-alone: no all-reduce


def test_eval_step_topk_and_meter():
    idx = np.array([[2, 0, 1], [1, 2, 0], [0, 1, 2]])
    assert topk_correct(idx, np.array([2, 2, 1]), ks=(1, 2)) == {1: 1, 2: 3}
    net = _net()
    x, _ = _data(8)
    top = build_eval_step(net, 3, jit=False)(x).asnumpy()
    np.testing.assert_array_equal(top[:, 0], net(x).asnumpy().argmax(1))


# ----------------------------------------------------------------------------- checkpoints
def _trained(tmp_path, steps=3):
    net = _net()
    x, y = _data()
    opt = create_optimizer(net, "sgd", lr=[0.1] * 10, weight_decay=1e-4)
    step = build_train_step(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"),
                            opt, jit=False)
    for _ in range(steps):
        step(x, y)
    return net, opt


def test_checkpoint_roundtrip_resumes_exactly(tmp_path):
    net, opt = _trained(tmp_path)
    ebv = EBVSet(net.classes.asnumpy(), alpha=0.5, method="test", seed=7)
    cfg = load_config(overrides=["train.epochs=9", "model.num_classes=4", "model.embed_dim=5"])
    path = str(tmp_path / "last.ckpt")
    save_checkpoint(path, net, opt, epoch=3, global_step=3, config=cfg, ebv=ebv, best_top1=87.5,
                    best_epoch=2, metrics={"top1": 80.0})
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]  # no temporary file left behind
    st = load_checkpoint(path)
    assert (st.epoch, st.global_step, st.best_top1, st.best_epoch) == (3, 3, 87.5, 2)
    assert st.config["train"]["epochs"] == 9 and st.metrics == {"top1": 80.0}
    assert st.ebv_checksum == ebv.checksum() and st.ebv.checksum() == ebv.checksum()
    assert (st.ebv.alpha, st.ebv.method, st.ebv.seed) == (0.5, "test", 7)

    net2 = _net(seed=11)
    opt2 = create_optimizer(net2, "sgd", lr=[0.1] * 10, weight_decay=1e-4)
    restore_checkpoint(st, net2, opt2)
    for a, b in zip(net.get_parameters(), net2.get_parameters()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert int(opt2.global_step.asnumpy()) == 3
    np.testing.assert_array_equal(opt.moments[0].asnumpy(), opt2.moments[0].asnumpy())
    # the next step from the restored state equals the next step of the original
    x, y = _data()
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    build_train_step(net, loss_fn, opt, jit=False)(x, y)
    build_train_step(net2, loss_fn, opt2, jit=False)(x, y)
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), net2.fc.weight.asnumpy())


def test_checkpoint_stores_ebv_when_network_lacks_exact_copy(tmp_path):
    net, opt = _trained(tmp_path, 1)
    other = EBVSet(np.eye(4, 5, dtype=np.float32))
    path = str(tmp_path / "a.ckpt")
    save_checkpoint(path, net, opt, epoch=1, global_step=1, ebv=other)
    st = load_checkpoint(path)
    np.testing.assert_array_equal(st.ebv.vectors, other.vectors)
    assert st.config is None


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable MindSpore checkpoint"):
        load_checkpoint(str(bad))
    net, opt = _trained(tmp_path, 1)
    path = str(tmp_path / "n.ckpt")
    save_checkpoint(path, net, opt, epoch=1, global_step=1)
    wider = nn.Dense(6, 7)
    with pytest.raises(CheckpointError, match="another model"):
        restore_checkpoint(load_checkpoint(path), wider)
    adamw = create_optimizer(_net(), "adamw", lr=1e-3)
    with pytest.raises(CheckpointError, match="optim.opt"):
        restore_checkpoint(load_checkpoint(path), _net(), adamw)


def test_jsonl_truncate_after(tmp_path):
    log = JsonlLog(str(tmp_path / "m.jsonl"))
    for e in (1, 2, 3):
        log.write({"epoch": e, "top1": 10.0 * e})
    with open(log.path, "a") as f:
        f.write('{"epoch": 4, "to')  # a line cut by a kill
    log.truncate_after(2)
    assert [r["epoch"] for r in log.read()] == [1, 2]
    assert json.loads(open(log.path).readline())["top1"] == 10.0


def test_config_sections_reject_bad_keys():
    cfg = load_config(overrides=["optim.opt=adamw", "scheduler.warmup_epochs=0.5"])
    assert cfg.optim.opt == "adamw" and cfg.scheduler.warmup_epochs == 0.5
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(overrides=["train.epoch=3"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(overrides=["optim.lr=fast"])


# ----------------------------------------------------------------------------- EBV source
def test_resolve_ebv_from_file_and_cache_key(tmp_path):
    from ebv_ms.ebv import save_ebv
    from ebv_ms.engine.ebv_source import ebv_cache_path, resolve_ebv
    w = np.linalg.qr(np.random.RandomState(0).randn(8, 4))[0].T   # 4 x 8 orthonormal rows
    save_ebv(EBVSet(w), str(tmp_path / "set.npy"))
    cfg = load_config(overrides=[f"ebv.path={tmp_path / 'set.npy'}", "model.num_classes=4",
                                 "model.embed_dim=8"])
    ebv = resolve_ebv(cfg)
    assert (ebv.num_classes, ebv.dim) == (4, 8) and ebv.checksum() == EBVSet(w).checksum()
    bad = load_config(overrides=[f"ebv.path={tmp_path / 'set.npy'}", "model.num_classes=5",
                                 "model.embed_dim=8"])
    with pytest.raises(ConfigError, match="model.num_classes"):
        resolve_ebv(bad)
    with pytest.raises(ConfigError, match="ebv.path"):
        resolve_ebv(load_config(overrides=[f"ebv.path={tmp_path / 'nope.npy'}"]))
    assert resolve_ebv(load_config(overrides=["model.head=fc"])) is None
    key = ebv_cache_path(load_config(overrides=["model.num_classes=100000", "model.embed_dim=5000",
                                                "ebv.alpha=0.122", "ebv.cache_dir=c"]))
    assert key == os.path.join("c", "ebv_N100000_d5000_a0.122_auto_s0.npz")

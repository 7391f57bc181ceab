"""EBVHead / FixedRandomHead: numpy-reference logits, frozen matrix, amp, checkpoints."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from ebv_ms.ebv import EBVError, EBVSet
from ebv_ms.engine.checkpoint import (CheckpointError, check_ebv_matches, load_checkpoint,
                                      restore as restore_checkpoint)
from ebv_ms.models import EBVHead, FixedRandomHead, create_classifier, random_unit_vectors


def _ref_cos_logits(v, w, tau):
    v = v.astype(np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    w = w.astype(np.float64)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return v @ w.T / tau


@pytest.fixture
def ebv():
    return EBVSet(np.random.default_rng(1).standard_normal((12, 8)).astype(np.float32), method="test")


@pytest.mark.parametrize("tau", [0.07, 0.007])
def test_ebv_head_matches_numpy(ebv, tau):
    v = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32) * 3
    head = EBVHead(ebv, tau=tau)
    out = head(Tensor(v)).asnumpy()
    assert out.dtype == np.float32 and out.shape == (5, 12)
    np.testing.assert_allclose(out, _ref_cos_logits(v, ebv.vectors, tau), rtol=1e-5, atol=1e-5 / tau)
    np.testing.assert_array_equal(head.predict(Tensor(v)).asnumpy(),
                                  np.argmax(_ref_cos_logits(v, ebv.vectors, tau), 1))


def test_ebv_head_fp16_storage(ebv):
    v = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32)
    head = EBVHead(ebv, tau=0.07, storage_dtype="float16")
    assert head.ebv.dtype == ms.float16
    out = head(Tensor(v)).asnumpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _ref_cos_logits(v, ebv.vectors, 0.07), atol=2e-3 / 0.07)


@pytest.mark.parametrize("mode", ["dot", "cos"])
def test_fixed_random_head_matches_numpy(mode):
    v = np.random.default_rng(4).standard_normal((4, 16)).astype(np.float32)
    head = FixedRandomHead(20, 16, mode=mode, scale=5.0, seed=7)
    w = random_unit_vectors(20, 16, seed=7)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-6)
    ref = _ref_cos_logits(v, w, 1 / 5.0) if mode == "cos" else 5.0 * v.astype(np.float64) @ w.T
    np.testing.assert_allclose(head(Tensor(v)).asnumpy(), ref, rtol=1e-5, atol=1e-4)
    assert head.class_vectors.requires_grad is False


def test_bad_arguments_are_clear(ebv):
    with pytest.raises(ValueError, match="tau"):
        EBVHead(ebv, tau=0.0)
    with pytest.raises(ValueError, match="ebv_dtype"):
        EBVHead(ebv, storage_dtype="int8")
    with pytest.raises(EBVError, match="num_classes"):
        create_classifier("small_cnn", "ebv", 13, ebv=ebv)
    with pytest.raises(EBVError, match="embed_dim"):
        create_classifier("small_cnn", "ebv", 12, embed_dim=9, ebv=ebv)
    with pytest.raises(ValueError, match="needs an EBV set"):
        create_classifier("small_cnn", "ebv", 12)
    with pytest.raises(ValueError, match="unknown head"):
        create_classifier("small_cnn", "arcface", 12, ebv=ebv)


@pytest.mark.parametrize("head", ["ebv", "fixed_random_cos"])
def test_frozen_matrix_untouched_by_training(ebv, head):
    net = create_classifier("small_cnn", head, 12, embed_dim=8, ebv=ebv, tau=0.07)
    net.set_train(True)
    frozen = net.head.matrix
    before = frozen.asnumpy().copy()
    proj_before = net.projection.weight.asnumpy().copy()
    trainable = net.trainable_params()
    assert frozen.requires_grad is False
    assert all(p is not frozen for p in trainable)
    # weight decay and momentum act on every parameter they get: the frozen one must not be there
    opt = nn.AdamWeightDecay(trainable, learning_rate=0.1, weight_decay=0.5)
    assert frozen.name not in [p.name for p in opt.parameters]
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def forward(x, y):
        return loss_fn(net(x), y)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = Tensor(rng.integers(0, 12, 4).astype(np.int32))
    for _ in range(2):
        _, grads = grad_fn(x, y)
        assert len(grads) == len(opt.parameters)  # no gradient slot for the frozen matrix
        opt(grads)
    after = net.head.matrix.asnumpy()
    assert after.tobytes() == before.tobytes()  # bit-identical
    assert not np.array_equal(net.projection.weight.asnumpy(), proj_before)  # the rest trained


@pytest.mark.parametrize("amp_dtype", [ms.float16])
def test_amp_o2_keeps_head_fp32_at_small_tau(ebv, amp_dtype):
    """Under amp O2 (fp16), tau=0.007: same predictions as fp32, matrix never cast."""
    rng = np.random.default_rng(5)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.proj = nn.Dense(10, 8)
            self.head = EBVHead(ebv, tau=0.007)

        def construct(self, x):
            return self.head(self.proj(x))

    net32 = Net()
    x = Tensor(rng.standard_normal((32, 10)).astype(np.float32))
    ref = net32(x).asnumpy()
    net16 = Net()
    ms.load_param_into_net(net16, dict(net32.parameters_and_names()))
    net16 = ms.amp.auto_mixed_precision(net16, "O2", dtype=amp_dtype)
    out = net16(x).asnumpy()
    assert out.dtype == np.float32
    assert net32.head.ebv.dtype == ms.float32
    heads = [c for _, c in net16.cells_and_names() if isinstance(c, EBVHead)]
    assert heads and heads[0].ebv.dtype == ms.float32
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
    # the only error left is the fp16 rounding of the embedding (~1e-3 relative), not of the logits
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert np.isfinite(out).all()


def test_plain_weights_file_carries_ebv_and_refuses_other_set(tmp_path, ebv):
    """``ms.save_checkpoint(net)`` of an EBV classifier goes through the engine's one mechanism."""
    net = create_classifier("small_cnn", "ebv", 12, ebv=ebv, tau=0.07)
    path = str(tmp_path / "m.ckpt")
    ms.save_checkpoint(net, path)
    st = load_checkpoint(path)
    assert not st.is_ebv_ms and st.ebv_info["param"] == "head.ebv" and "head.ebv" not in st.params
    assert check_ebv_matches(st, ebv) == ebv.checksum() == net.ebv_checksum == st.ebv.checksum()
    other = EBVSet(np.random.default_rng(99).standard_normal((12, 8)).astype(np.float32))
    with pytest.raises(CheckpointError, match="EBV mismatch.*" + st.ebv_checksum):
        check_ebv_matches(st, other)
    with pytest.raises(CheckpointError, match="EBV mismatch"):  # restoring into another set
        restore_checkpoint(st, create_classifier("small_cnn", "ebv", 12, ebv=other, tau=0.07))
    # a checkpoint alone evaluates: rebuild from its own EBV matrix, same logits
    net2 = create_classifier("small_cnn", "ebv", 12, ebv=st.ebv, tau=0.07)
    restore_checkpoint(st, net2)
    net.set_train(False)
    net2.set_train(False)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(net(x).asnumpy(), net2(x).asnumpy())
    fc = create_classifier("small_cnn", "fc", 12)
    ms.save_checkpoint(fc, str(tmp_path / "fc.ckpt"))
    st_fc = load_checkpoint(str(tmp_path / "fc.ckpt"))
    assert st_fc.ebv_info is None and check_ebv_matches(st_fc, ebv) is None


def test_fp16_storage_plain_checkpoint_check(tmp_path, ebv):
    net = create_classifier("small_cnn", "ebv", 12, ebv=ebv, ebv_dtype="float16")
    path = str(tmp_path / "m16.ckpt")
    ms.save_checkpoint(net, path)
    st = load_checkpoint(path)
    check_ebv_matches(st, ebv)  # same set, stored as fp16: accepted
    with pytest.raises(CheckpointError):
        check_ebv_matches(st, EBVSet(ebv.vectors[::-1].copy()))


def test_head_shares_the_ebv_buffer_and_the_set_is_immutable():
    """One host copy: the fp32 head's Parameter is the EBVSet's buffer (Parameter(Tensor) would
    copy it: 2 GB more at 100k x 5000), and that buffer can no longer change under the cached
    checksum."""
    w = np.random.default_rng(4).standard_normal((50, 16)).astype(np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    ebv = EBVSet(w)
    head = EBVHead(ebv, tau=0.07)
    assert np.shares_memory(head.ebv.asnumpy(), ebv.vectors)
    assert head.checksum == ebv.checksum() and ebv._checksum is not None  # computed once, cached
    with pytest.raises(ValueError, match="read-only"):
        ebv.vectors[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0] = 1.0  # the caller's array was used without a copy: frozen too
    with pytest.raises(AttributeError, match="cannot be replaced"):
        ebv.vectors = np.eye(50, 16, dtype=np.float32)
    v = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(head(Tensor(v)).asnumpy(), _ref_cos_logits(v, w, 0.07),
                               rtol=1e-5, atol=1e-4)
    fixed = FixedRandomHead(20, 16)  # the same storage for the random baseline
    assert fixed.class_vectors.shape == (20, 16)


@pytest.mark.parametrize("level", ["O2", "O3", "auto"])
@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_amp_head_computes_in_fp32(level, mode):
    """fp16 embedding into an amp-converted head: logits equal fp64 math on the same fp16 values
    (an fp16 head would be off by >0.03 at |logit| ~ 143)."""
    ebv = EBVSet(np.random.default_rng(6).standard_normal((40, 16)).astype(np.float32))
    v16 = (np.random.default_rng(7).standard_normal((32, 16)) * 4).astype(np.float16)
    ref = _ref_cos_logits(v16.astype(np.float64), ebv.vectors, 0.007)
    net = ms.amp.auto_mixed_precision(EBVHead(ebv, tau=0.007), level, dtype=ms.float16)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        out = net(Tensor(v16)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 2e-3, np.abs(out - ref).max()
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_ebv_head_gradient_matches_numpy(ebv, mode):
    """The hand-written backward of the normalisation equals the analytic gradient."""
    rng = np.random.default_rng(8)
    v = rng.standard_normal((5, 8)).astype(np.float32)
    g = rng.standard_normal((5, 12)).astype(np.float32)
    head = EBVHead(ebv, tau=0.07)
    gt = Tensor(g)

    def f(x):
        return (head(x) * gt).sum()

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        dv = ms.grad(f)(Tensor(v)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    v64 = v.astype(np.float64)
    r = 1 / np.linalg.norm(v64, axis=1, keepdims=True)
    u = v64 * r
    du = g.astype(np.float64) @ ebv.vectors.astype(np.float64) / 0.07
    ref = r * (du - u * (du * u).sum(1, keepdims=True))
    np.testing.assert_allclose(dv, ref, rtol=1e-4, atol=1e-4)
    # and a finite difference on one coordinate, independent of the formula above
    eps = 1e-3
    vp, vm = v64.copy(), v64.copy()
    vp[1, 2] += eps
    vm[1, 2] -= eps
    fd = ((_ref_cos_logits(vp, ebv.vectors, 0.07) - _ref_cos_logits(vm, ebv.vectors, 0.07)) * g).sum() / (2 * eps)
    assert abs(fd - dv[1, 2]) < 1e-2 * max(1.0, abs(fd))


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_amp_with_fp16_storage(mode):
    """ebv_dtype=float16 under amp O2: matrix stays fp16 (one copy), logits fp32, fp16-matmul accurate."""
    ebv = EBVSet(np.random.default_rng(6).standard_normal((40, 16)).astype(np.float32))
    v16 = (np.random.default_rng(7).standard_normal((32, 16)) * 4).astype(np.float16)
    ref = _ref_cos_logits(v16.astype(np.float64), ebv.vectors, 0.007)
    head = EBVHead(ebv, tau=0.007, storage_dtype="float16")
    net = ms.amp.auto_mixed_precision(head, "O2", dtype=ms.float16)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        out = net(Tensor(v16)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert out.dtype == np.float32 and head.ebv.dtype == ms.float16
    # fp16 products of unit vectors: ~1e-3 relative on cos, times 1/tau
    assert np.abs(out - ref).max() < 3e-3 / 0.007

"""EBVLoss against a numpy reference: hard/soft targets, label smoothing, low precision."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from ebv_ms.loss import EBVLoss, create_loss


def _ref_loss(logits, target, eps):
    z = logits.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    n = z.shape[1]
    t = np.eye(n)[target] if target.ndim == 1 else target.astype(np.float64)
    t = t * (1 - eps) + eps / n
    return -(t * logp).sum(1)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_hard_labels(eps):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 9)).astype(np.float32) * 5
    y = rng.integers(0, 9, 6).astype(np.int32)
    out = create_loss(label_smoothing=eps)(Tensor(logits), Tensor(y)).asnumpy()
    np.testing.assert_allclose(out, _ref_loss(logits, y, eps).mean(), rtol=1e-5)
    per = EBVLoss(eps, reduction="none")(Tensor(logits), Tensor(y)).asnumpy()
    np.testing.assert_allclose(per, _ref_loss(logits, y, eps), rtol=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_soft_targets_mixup(eps):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 7)).astype(np.float32) * 4
    a, b = rng.integers(0, 7, 5), rng.integers(0, 7, 5)
    lam = 0.3
    soft = (lam * np.eye(7)[a] + (1 - lam) * np.eye(7)[b]).astype(np.float32)
    out = create_loss(eps)(Tensor(logits), Tensor(soft)).asnumpy()
    np.testing.assert_allclose(out, _ref_loss(logits, soft, eps).mean(), rtol=1e-5)
    # a one-hot soft target gives the same loss as the hard label
    hard = create_loss(eps)(Tensor(logits), Tensor(a.astype(np.int32))).asnumpy()
    onehot = create_loss(eps)(Tensor(logits), Tensor(np.eye(7, dtype=np.float32)[a])).asnumpy()
    np.testing.assert_allclose(hard, onehot, rtol=1e-6)


def test_fp16_logits_at_tau_0007_are_stable():
    """cos/0.007 logits (|z| up to 143) in fp16: exp overflows fp16, the loss must not."""
    rng = np.random.default_rng(2)
    cos = np.clip(rng.standard_normal((8, 50)) * 0.3, -1, 1)
    logits16 = (cos / 0.007).astype(np.float16)
    y = rng.integers(0, 50, 8).astype(np.int32)
    out = create_loss(0.1)(Tensor(logits16), Tensor(y)).asnumpy()
    assert np.isfinite(out)
    np.testing.assert_allclose(out, _ref_loss(logits16.astype(np.float32), y, 0.1).mean(), rtol=1e-4)


def test_graph_mode_and_gradient():
    rng = np.random.default_rng(3)
    logits = Tensor(rng.standard_normal((4, 6)).astype(np.float32))
    y = rng.integers(0, 6, 4).astype(np.int32)
    loss = create_loss(0.1)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        g = ms.grad(loss)(logits, Tensor(y)).asnumpy()
        val = loss(logits, Tensor(y)).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    z = logits.asnumpy().astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    t = np.eye(6)[y] * 0.9 + 0.1 / 6
    np.testing.assert_allclose(g, (p - t) / 4, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(val, _ref_loss(logits.asnumpy(), y, 0.1).mean(), rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="label_smoothing"):
        create_loss(1.0)
    with pytest.raises(ValueError, match="reduction"):
        EBVLoss(reduction="avg")

"""create_classifier: every head overfits a tiny batch (GRAPH and PYNATIVE), backbone wiring."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from ebv_ms.errors import ModelError
from ebv_ms.ebv import EBVSet
from ebv_ms.loss import create_loss
from ebv_ms.models import HEADS, create_backbone, create_classifier


def _ebv(n, d, seed=0):
    """n <= d orthonormal rows (coherence 0, an exact EBV set), else random unit rows."""
    a = np.random.default_rng(seed).standard_normal((max(n, d), d))
    w = np.linalg.qr(a)[0][:n] if n <= d else a
    return EBVSet(w.astype(np.float32))


def _overfit(net, steps, graph):
    rng = np.random.default_rng(0)
    # noise images whose per-channel means differ: separable after global pooling
    x_np = 0.5 * rng.standard_normal((8, 3, 8, 8)) + 2.0 * rng.standard_normal((8, 3, 1, 1))
    x = Tensor(x_np.astype(np.float32))
    y_np = np.arange(8, dtype=np.int32) % 5
    y = Tensor(y_np)
    loss_fn = create_loss(label_smoothing=0.0)
    opt = nn.Adam(net.trainable_params(), learning_rate=0.02)

    def forward(a, b):
        return loss_fn(net(a), b)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    def step(a, b):
        loss, grads = grad_fn(a, b)
        opt(grads)
        return loss

    if graph:
        step = ms.jit(step)
    net.set_train(True)
    losses = [float(step(x, y).asnumpy()) for _ in range(steps)]
    pred = net.predict(x).asnumpy()
    return losses, (pred == y_np).mean()


@pytest.fixture
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.slow
def test_every_head_overfits_tiny_batch_graph(head, graph_mode):
    ms.set_seed(0)
    ebv = _ebv(5, 16)
    net = create_classifier("small_cnn", head, 5, embed_dim=16, ebv=ebv, tau=0.07)
    frozen = net.head.matrix.asnumpy().copy() if head != "fc" else None
    losses, acc = _overfit(net, 40, graph=True)
    assert losses[-1] < 0.2 * losses[0], losses
    assert acc == 1.0, (acc, losses)
    if frozen is not None:
        assert net.head.matrix.asnumpy().tobytes() == frozen.tobytes()


@pytest.mark.slow
def test_ebv_head_overfits_pynative():
    ms.set_seed(0)
    ebv = _ebv(5, 16)
    net = create_classifier("small_cnn", "ebv", 5, ebv=ebv, tau=0.07)
    frozen = net.head.ebv.asnumpy().copy()
    losses, acc = _overfit(net, 30, graph=False)
    assert losses[-1] < 0.2 * losses[0] and acc == 1.0
    assert net.head.ebv.asnumpy().tobytes() == frozen.tobytes()


def test_resnet50_projection_is_its_last_linear_layer():
    """Paper setup: ResNet-50 built with num_classes=d; its fc layer is the projection to d."""
    net = create_classifier("resnet50", "ebv", 10, ebv=_ebv(10, 32))
    names = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert names["projection.weight"] == (32, 2048) and names["head.ebv"] == (10, 32)
    assert not any(n.startswith("backbone.classifier") for n in names)
    net.set_train(False)
    out = net(Tensor(np.zeros((1, 3, 32, 32), np.float32)))
    assert out.shape == (1, 10)
    fc = create_classifier("resnet50", "fc", 10)
    assert {p.name: tuple(p.shape) for p in fc.get_parameters()}["head.fc.weight"] == (10, 2048)


def test_swin_tiny_builds_with_ebv_head():
    net = create_classifier("swin_tiny", "ebv", 7, ebv=_ebv(7, 24))
    shapes = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert shapes["projection.weight"] == (24, 768) and shapes["head.ebv"] == (7, 24)


def test_from_config_and_backbone_checkpoint(tmp_path):
    from ebv_ms.config import load_config
    cfg = load_config(overrides=["model.backbone=small_cnn", "model.head=fixed_random_dot",
                                 "model.num_classes=6", "model.embed_dim=4"])
    from ebv_ms.engine.builders import build_network
    net = build_network(cfg)  # the model section is create_classifier's arguments
    assert net(Tensor(np.zeros((2, 3, 8, 8), np.float32))).shape == (2, 6)
    feats, f, _ = create_backbone("small_cnn", 3)
    path = str(tmp_path / "bb.ckpt")
    ms.save_checkpoint(feats, path)
    net2 = create_classifier("small_cnn", "fc", 6, backbone_checkpoint=path)
    w = dict(net2.parameters_and_names())["backbone.features.0.weight"].asnumpy()
    np.testing.assert_array_equal(w, dict(feats.parameters_and_names())["features.0.weight"].asnumpy())
    with pytest.raises(ModelError, match="file not found"):
        create_classifier("small_cnn", "fc", 6, backbone_checkpoint=str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_classifier("small_cnn", "fc", 6, pretrained=True)
    with pytest.raises(ValueError, match="unknown backbone"):
        create_classifier("resnet5O", "fc", 6)

"""mindcv interop: `import ebv_ms.models.mindcv_zoo` registers EBV models, and mindcv's own factories train one."""
import subprocess
import sys

import numpy as np
import pytest

import mindspore.dataset as ds
from mindspore.train import Callback


class _LossLog(Callback):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_train_step_end(self, run_context):
        loss = run_context.original_args().net_outputs
        loss = loss[0] if isinstance(loss, (tuple, list)) else loss
        self.out.append(float(loss.asnumpy()))


def test_import_is_light_and_mindcv_registration_happens_where_mindcv_is_used():
    """`import ebv_ms.errors, ebv_ms.config` loads no framework (it took 3.5 s and 525 MB when
    ebv_ms/__init__.py imported mindcv); building a mindcv backbone registers the EBV models."""
    code = ("import sys, ebv_ms.errors, ebv_ms.config\n"
            "print(sorted(m for m in ('mindspore', 'mindcv') if m in sys.modules))\n"
            "from ebv_ms.models import create_backbone\n"
            "create_backbone('resnet18', 4)\n"
            "from mindcv.models.registry import is_model\n"
            "print(is_model('ebv_resnet50'), is_model('ebv_swin_tiny'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["[]", "True True"], r.stdout
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-2000:]


def test_import_registers_ebv_models_with_mindcv():
    import ebv_ms.models.mindcv_zoo  # noqa: F401
    import mindcv
    from mindcv.models.registry import is_model
    assert {"ebv_resnet50", "ebv_swin_tiny"} <= set(mindcv.list_models("ebv_*"))
    assert is_model("ebv_resnet50")


@pytest.mark.slow
def test_mindcv_create_model_and_its_trainer_run_a_step():
    """mindcv.create_model / create_loss / create_optimizer / create_trainer (with EMA, so its
    own TrainStep) on an EBV ResNet-50 (N=10, d=16, 32x32 images): one step of Model.train
    moves the trainable weights, not the EBVs."""
    import ebv_ms.models.mindcv_zoo  # noqa: F401
    import mindcv
    from mindcv.loss import create_loss
    from mindcv.optim import create_optimizer
    from mindcv.utils.trainer_factory import create_trainer
    from ebv_ms.models import Classifier, EBVHead
    net = mindcv.create_model("ebv_resnet50", num_classes=10, embed_dim=16, tau=0.07)
    assert isinstance(net, Classifier) and isinstance(net.head, EBVHead)
    assert net.head.matrix.shape == (10, 16) and not net.head.matrix.requires_grad
    ebv = net.head.matrix.asnumpy().copy()
    np.testing.assert_allclose(ebv @ ebv.T, np.eye(10), atol=1e-6)  # auto: orthonormal, N <= d
    assert net.head.matrix.name not in [p.name for p in net.trainable_params()]
    loss = create_loss(name="CE", label_smoothing=0.1)
    opt = create_optimizer(net.trainable_params(), opt="momentum", lr=0.1, weight_decay=1e-4)
    model = create_trainer(net, loss, opt, metrics={"acc"}, amp_level="O0", amp_cast_list=None,
                           loss_scale_type="fixed", ema=True)
    rng = np.random.default_rng(0)
    data = ds.NumpySlicesDataset({"image": rng.standard_normal((4, 3, 32, 32)).astype(np.float32),
                                  "label": np.array([0, 3, 7, 9], np.int32)}, shuffle=False).batch(4)
    proj = net.projection.weight.asnumpy().copy()
    losses = []
    model.train(1, data, callbacks=[_LossLog(losses)], dataset_sink_mode=False)
    assert len(losses) == 1 and np.isfinite(losses[0]) and losses[0] > 0
    assert not np.array_equal(net.projection.weight.asnumpy(), proj)
    assert np.array_equal(net.head.matrix.asnumpy(), ebv)


def test_given_ebv_set_is_used_and_checked():
    import ebv_ms.models.mindcv_zoo  # noqa: F401
    import mindcv
    from ebv_ms.ebv import EBVError
    from ebv_ms.generation import create_ebv
    s = create_ebv(12, 16, seed=3, progress=False)
    net = mindcv.create_model("ebv_resnet50", num_classes=12, ebv=s)
    assert net.ebv_checksum == s.checksum()
    with pytest.raises(EBVError, match="12 vectors but num_classes=10"):
        mindcv.create_model("ebv_resnet50", num_classes=10, ebv=s)

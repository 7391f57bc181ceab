"""model.ebv_dtype=float16 does what its docstring and warning say (issue 16 §5): the logits
come out of the matmul rounded to fp16, within the bound the warning states, and fp32 ones
differ from them."""
import logging

import numpy as np

import mindspore as ms

from ebv_ms.generation import create_ebv
from ebv_ms.models import EBVHead


def test_fp16_storage_warns_at_small_tau_with_a_true_bound(caplog):
    ebv = create_ebv(1000, 128, method="kerdock_padded", progress=False)
    tau = 0.007
    with caplog.at_level(logging.WARNING, logger="ebv_ms.models.heads"):
        h16 = EBVHead(ebv, tau=tau, storage_dtype="float16")
    msgs = [r.getMessage() for r in caplog.records if "ebv_dtype=float16" in r.getMessage()]
    assert len(msgs) == 1 and "rounded to fp16" in msgs[0], msgs
    bound = float(msgs[0].split("off by up to ")[1].split()[0])
    h32 = EBVHead(ebv, tau=tau)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 1000, 64)
    v = ebv.vectors[labels] + 0.3 * rng.standard_normal((64, 128)).astype(np.float32)
    a = h32(ms.Tensor(v)).asnumpy()
    b = h16(ms.Tensor(v)).asnumpy()
    assert b.dtype == np.float32                           # cast back after the fp16 matmul
    diff = np.abs(a.astype(np.float64) - b)
    assert 0 < diff.max() <= bound, (diff.max(), bound)
    # the fp16 rounding is visible: the values sit on fp16's grid
    np.testing.assert_array_equal(b, b.astype(np.float16).astype(np.float32))


def test_no_warning_for_fp32_or_large_tau(caplog):
    ebv = np.linalg.qr(np.random.default_rng(0).standard_normal((32, 10)))[0].T.astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="ebv_ms.models.heads"):
        EBVHead(ebv, tau=0.007)
        EBVHead(ebv, tau=0.1, storage_dtype="float16")
    assert not [r for r in caplog.records if "ebv_dtype" in r.getMessage()]

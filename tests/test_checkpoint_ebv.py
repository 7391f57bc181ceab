"""How a checkpoint carries its EBV set: inline when small, else one file next to it, identified
by checksum, found again (or rebuilt from a closed-form recipe) and verified."""
import os
import shutil

import mindspore as ms
import numpy as np
import pytest

from ebv_ms.config import load_config
from ebv_ms.ebv import EBVSet, save_ebv
from ebv_ms.ebv.identity import ebv_file_name
from ebv_ms.engine.checkpoint import (CheckpointError, checkpoint_ebv, load_checkpoint,
                                      save_checkpoint)
from ebv_ms.engine.checkpoint import restore as restore_checkpoint
from ebv_ms.generation import create_ebv
from ebv_ms.models import create_classifier


def _random_set(n=12, d=8, seed=1):
    return EBVSet(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def _save(path, ebv, inline_max=0, **kw):
    net = create_classifier("small_cnn", "ebv", ebv.num_classes, ebv=ebv, tau=0.07, **kw)
    save_checkpoint(str(path), net, epoch=1, global_step=1, ebv=ebv,
                    ebv_inline_max_bytes=inline_max)
    return net


def test_large_set_written_once_next_to_checkpoints_not_inside(tmp_path):
    ebv = _random_set()                                    # method "unknown": no recipe
    _save(tmp_path / "last.ckpt", ebv)
    name = ebv_file_name(ebv)
    assert name == f"ebv_N12_d8_{ebv.checksum()}.npz"
    assert sorted(os.listdir(tmp_path)) == sorted(["last.ckpt", name])
    raw = ms.load_checkpoint(str(tmp_path / "last.ckpt"))
    assert "head.ebv" not in raw and "ebv_ms_ebv_vectors" not in raw  # the matrix is not inside
    mtime = os.stat(tmp_path / name).st_mtime_ns
    _save(tmp_path / "best.ckpt", ebv)                     # a second checkpoint: same file, kept
    assert os.stat(tmp_path / name).st_mtime_ns == mtime and len(os.listdir(tmp_path)) == 3

    st = load_checkpoint(str(tmp_path / "last.ckpt"))
    assert st.ebv is None and st.ebv_info["file"] == name
    assert {k: st.ebv_info[k] for k in ("checksum", "num_classes", "dim", "method", "seed")} == \
        {"checksum": ebv.checksum(), "num_classes": 12, "dim": 8, "method": "unknown", "seed": None}
    found = checkpoint_ebv(st)                             # next to the checkpoint
    assert found.checksum() == ebv.checksum()
    assert checkpoint_ebv(load_checkpoint(str(tmp_path / "last.ckpt"))).checksum() == ebv.checksum()
    net = create_classifier("small_cnn", "ebv", 12, ebv=found, tau=0.07)
    restore_checkpoint(st, net)                            # no head.ebv in the file: fine

    # the checkpoint alone, elsewhere: refused with the file it needs; --ebv FILE finds it
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "last.ckpt", alone / "last.ckpt")
    st2 = load_checkpoint(str(alone / "last.ckpt"))
    with pytest.raises(CheckpointError, match=f"needs its EBV set {ebv.checksum()}.*{name}.*--ebv"):
        checkpoint_ebv(st2)
    assert checkpoint_ebv(st2, ebv_file=str(tmp_path / name)).checksum() == ebv.checksum()
    other = tmp_path / "other.npz"
    save_ebv(_random_set(seed=2), other)
    with pytest.raises(CheckpointError, match=f"EBV mismatch.*{ebv.checksum()}.*{name}"):
        checkpoint_ebv(st2, ebv_file=str(other))
    with pytest.raises(CheckpointError, match="EBV mismatch"):
        restore_checkpoint(st2, create_classifier("small_cnn", "ebv", 12, ebv=_random_set(seed=2)))


def test_ebv_path_given_at_evaluation_must_be_the_checkpoints_set(tmp_path):
    ebv = _random_set()
    _save(tmp_path / "last.ckpt", ebv, inline_max=1 << 20)  # small: inline
    assert os.listdir(tmp_path) == ["last.ckpt"]
    st = load_checkpoint(str(tmp_path / "last.ckpt"))
    assert st.ebv.checksum() == ebv.checksum() and checkpoint_ebv(st) is st.ebv
    save_ebv(_random_set(seed=3), tmp_path / "other.npy")
    cfg = load_config(overrides=[f"ebv.path={tmp_path / 'other.npy'}", "model.num_classes=12",
                                 "model.embed_dim=8"])
    with pytest.raises(CheckpointError, match="EBV mismatch"):  # was silently ignored
        checkpoint_ebv(st, cfg)
    save_ebv(ebv, tmp_path / "same.npy")
    cfg = load_config(overrides=[f"ebv.path={tmp_path / 'same.npy'}", "model.num_classes=12",
                                 "model.embed_dim=8"])
    assert checkpoint_ebv(st, cfg).checksum() == ebv.checksum()


def test_closed_form_set_is_rebuilt_from_its_recipe(tmp_path):
    ebv = create_ebv(40, 16, method="kerdock_padded", seed=5, progress=False)  # as 10w_classes.yaml
    assert ebv.method == "closed_form:kerdock_padded"
    _save(tmp_path / "last.ckpt", ebv)
    os.remove(tmp_path / ebv_file_name(ebv))
    st = load_checkpoint(str(tmp_path / "last.ckpt"))
    rebuilt = checkpoint_ebv(st)
    assert rebuilt.checksum() == ebv.checksum()
    np.testing.assert_array_equal(rebuilt.vectors, ebv.vectors)


def test_fp16_storage_checkpoint_stores_no_extra_copy(tmp_path):
    """ebv_dtype=float16: neither the fp16 head parameter nor an fp32 copy goes into each
    checkpoint (before: both, 3 GB at 100k x 5000)."""
    ebv = _random_set()
    _save(tmp_path / "a.ckpt", ebv, ebv_dtype="float16")
    raw = ms.load_checkpoint(str(tmp_path / "a.ckpt"))
    assert not [k for k, v in raw.items() if tuple(getattr(v, "shape", ())) == (12, 8)]
    _save(tmp_path / "b.ckpt", ebv, inline_max=1 << 20, ebv_dtype="float16")
    raw = ms.load_checkpoint(str(tmp_path / "b.ckpt"))
    big = [k for k, v in raw.items() if tuple(getattr(v, "shape", ())) == (12, 8)]
    assert big == ["ebv_ms_ebv_vectors"] and raw[big[0]].dtype == ms.float32  # inline: one, exact
    st = load_checkpoint(str(tmp_path / "b.ckpt"))
    net = create_classifier("small_cnn", "ebv", 12, ebv=checkpoint_ebv(st), ebv_dtype="float16")
    restore_checkpoint(st, net)

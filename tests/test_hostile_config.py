"""Hostile configs (issue 17 sections 3 and 5): every one ends in one line naming the key or the
file, exit 2, fast and small. Each runs the real command line in a subprocess under an address-
space cap and a time limit, so the old behaviour (unbounded growth, a hang, a traceback) fails
the test instead of the machine."""
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo_cpu.yaml")
BOMB = "{" + ", ".join([f"a0: &a0 [{', '.join(['x'] * 9)}]"] + [
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]) + "}"  # 9^9 values


def _cap():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def _one_line(args, *needles, cwd=None):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                       preexec_fn=_cap, cwd=cwd,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = [ln for ln in r.stderr.splitlines() if "[WARNING]" not in ln]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert len(lines[0]) < 600, lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _train(cfg_text, tmp_path, *overrides):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(cfg_text if "output_dir" in cfg_text else f"output_dir: {tmp_path / 'run'}\n"
                   + cfg_text)
    return [str(ROOT / "train.py"), "--config", str(cfg), f"data.path={DEMO}", *overrides]


def test_alias_bomb_in_a_config_file_and_in_an_override(tmp_path):
    _one_line(_train(f"model:\n  backbone_kwargs: {BOMB}\n", tmp_path), "c.yaml",
              "aliases expand to")
    _one_line(_train("", tmp_path, f"model.backbone_kwargs={BOMB}"),
              "override 'model.backbone_kwargs={a0: &a0", "aliases expand to")
    assert not (tmp_path / "run").exists()


def test_alias_bomb_in_a_checkpoints_stored_config_is_refused_by_the_same_parser():
    from ebv_ms.config import ConfigError, parse_yaml
    with pytest.raises(ConfigError, match="aliases expand to 490,329,068 values"):
        parse_yaml(f"model:\n  backbone_kwargs: {BOMB}\n", "run/last.ckpt: stored config")
    with pytest.raises(ConfigError, match="refers to the value that contains it"):
        parse_yaml("a: &a [1, *a]", "x")


def test_config_that_is_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    _one_line([str(ROOT / "train.py"), "--config", str(fifo)], str(fifo), "not a regular file")


def test_deep_nesting_huge_numbers_and_nul_bytes_name_the_key(tmp_path):
    deep = "[" * 50_000 + "]" * 50_000
    _one_line(_train(f"model:\n  backbone_kwargs: {{a: {deep}}}\n", tmp_path),
              "'model.backbone_kwargs.a'", "levels deep")
    _one_line(_train("", tmp_path, "seed=" + "7" * 5000), "'seed'", "5,002 characters")
    _one_line(_train("train:\n  epochs: " + "9" * 5000 + "\n", tmp_path), "'train.epochs'")
    _one_line(_train('output_dir: "runs/a\\0b"\n', tmp_path), "'output_dir'", "NUL byte")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backbone,kwargs,needle", [
    ("small_cnn", {"foo": 1}, "foo"),
    ("resnet18", {"foo": 1}, "foo"),
    ("small_mlp", {"widths": [300000, 300000]}, "GiB of float32"),
    ("small_mlp", {"widths": ["abc"]}, "positive integers"),
])
def test_backbone_kwargs_a_network_cannot_take(backbone, kwargs, needle):
    """Refused before anything is allocated (widths [300000, 300000] asked for 339 GiB)."""
    from ebv_ms.errors import ModelError
    from ebv_ms.models import create_backbone
    with pytest.raises(ModelError, match=needle) as e:
        create_backbone(backbone, 4, **kwargs)
    assert "'model.backbone_kwargs'" in str(e.value)


@pytest.mark.slow
def test_backbone_kwargs_error_on_the_command_line():
    _one_line(["-m", "ebv_ms.tools.params", "--config", DEMO, "model.backbone=small_mlp",
               "model.backbone_kwargs={widths: [300000, 300000]}"], "'model.backbone_kwargs'",
              "GiB of float32")


def test_bad_backbone_checkpoints_are_user_errors(tmp_path):
    """A backbone_checkpoint of another network, or not a checkpoint at all, is an EBVMSError
    naming the key (it was ValueError / MindSpore's own error: a traceback)."""
    import mindspore as ms
    from ebv_ms.errors import EBVMSError
    from ebv_ms.models import create_backbone
    feats, _, _ = create_backbone("small_cnn", 4)
    ms.save_checkpoint(feats, str(tmp_path / "cnn.ckpt"))
    (tmp_path / "junk.ckpt").write_bytes(b"\x00not a checkpoint" * 64)
    for path, needle in (("cnn.ckpt", "does not fit backbone small_mlp"),
                         ("junk.ckpt", "not a readable MindSpore checkpoint")):
        with pytest.raises(EBVMSError, match=needle) as e:
            create_backbone("small_mlp", 4, checkpoint_path=str(tmp_path / path))
        assert "'model.backbone_checkpoint'" in str(e.value)


_CRAFTED_BACKBONES = """
import sys
from mindspore.train.checkpoint_pb2 import Checkpoint
from ebv_ms.errors import EBVMSError
from ebv_ms.models import create_backbone
good = open(sys.argv[1], "rb").read()
CRAFTED = ([0, 27], [0], [-1], [-5, 3], [3, 0, 4], [1], [1] * 201, [2 ** 40, 2 ** 40], [1 << 20] * 2)
for dims in CRAFTED:
    for entry in (0, 1):  # a conv weight, a BatchNorm statistic
        msg = Checkpoint.FromString(good)
        del msg.value[entry].tensor.dims[:]
        msg.value[entry].tensor.dims.extend(dims)
        open(sys.argv[2], "wb").write(msg.SerializeToString())
        try:
            create_backbone("small_cnn", 4, checkpoint_path=sys.argv[2])
            print("LOADED", dims, flush=True)
        except EBVMSError as exc:
            print(type(exc).__name__, "'model.backbone_checkpoint'" in str(exc), flush=True)
"""


def test_crafted_backbone_checkpoints_are_refused_not_crashes(tmp_path):
    """Tensor dims that disagree with the bytes (a file from the internet) once crashed train.py
    in MindSpore's loader (SIGSEGV, SIGABRT) or raised its ValueError; 18 crafted files, one
    process: each a ModelError naming the key (a crash fails the run)."""
    import mindspore as ms
    from ebv_ms.models import create_backbone
    ms.save_checkpoint(create_backbone("small_cnn", 4)[0], str(tmp_path / "good.ckpt"))
    r = subprocess.run([sys.executable, "-c", _CRAFTED_BACKBONES, str(tmp_path / "good.ckpt"),
                        str(tmp_path / "bad.ckpt")], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["ModelError True"] * 18, r.stdout

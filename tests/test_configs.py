"""Every shipped config loads (unknown keys and wrong types are errors) and says what it claims.

The values checked here are the paper's / authors' settings documented in docs/launch.md.
"""
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from ebv_ms.config import load_config
from ebv_ms.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
# the paper's settings; demo_cpu.yaml and configs/glyphs/ (the CPU fidelity benchmark) are ours
PAPER = [p for p in CONFIGS if p.parent.name in ("imagenet", "ablation_dim")
         or p.name == "10w_classes.yaml"]


def _rel(p):
    return str(p.relative_to(ROOT))


def test_the_expected_configs_exist():
    names = {_rel(p) for p in CONFIGS}
    expected = {"configs/10w_classes.yaml"}
    expected |= {f"configs/imagenet/r50_{h}_{s}.yaml" for h in ("fc", "ebv") for s in ("a0", "a1", "a2")}
    expected |= {"configs/imagenet/swin_t_fc_a2.yaml", "configs/imagenet/swin_t_ebv_a2.yaml"}
    expected |= {f"configs/ablation_dim/r50_ebv_d{d}.yaml" for d in (100, 200, 300, 400, 500, 1000, 2000)}
    assert expected <= names, sorted(expected - names)


def _same(got, want, where, diffs):
    """Every value the file sets is the value loaded (nothing dropped, renamed or replaced)."""
    if isinstance(want, dict) and isinstance(got, Mapping) and want:
        for k, v in want.items():
            if k not in got:
                diffs.append(f"{where}{k}: not in the loaded config")
            else:
                _same(got[k], v, f"{where}{k}.", diffs)
    elif isinstance(want, float) or isinstance(got, float):
        if not (isinstance(got, (int, float)) and got == pytest.approx(want)):
            diffs.append(f"{where[:-1]}: file {want!r}, loaded {got!r}")
    elif _plain(got) != want:
        diffs.append(f"{where[:-1]}: file {want!r}, loaded {got!r}")


def _plain(x):
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _first_leaf(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            return _first_leaf(v, prefix + (k,))
        if prefix:                      # a key inside a section, e.g. model.head
            return prefix + (k,)
    return None


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_config_loads_what_it_says_with_strict_keys(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    diffs = []
    _same(load_config(str(path)), raw, "", diffs)
    assert not diffs, f"{_rel(path)}: " + "; ".join(diffs)
    # strict: the same file with one key misspelt is refused, naming the key
    *section, key = _first_leaf(raw)
    node = raw
    for part in section:
        node = node[part]
    node[key + "x"] = node.pop(key)
    bad = tmp_path / path.name
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=re.escape(".".join([*section, key + "x"]))):
        load_config(str(bad))


@pytest.mark.parametrize("path", PAPER, ids=_rel)
def test_paper_config_states_its_hyperparameters(path):
    text = path.read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#")).lower()
    for word in ("batch", "lr", "epochs", "warm-up", "weight decay"):
        assert word in comments, f"{_rel(path)}: comments do not state the {word}"
    cfg = load_config(str(path))
    # the values stated in the comments are the values set
    assert cfg.train.epochs == 105 and cfg.scheduler.warmup_epochs == 5
    assert cfg.scheduler.warmup_factor == pytest.approx(0.01)
    assert cfg.train.batch_size * 8 == 1024 and "1024" in comments
    assert cfg.optim.weight_decay == pytest.approx(2e-5) and "2e-5" in comments
    assert cfg.seed == 42
    assert cfg.data.path.startswith("/path/to/"), "data.path must be an obvious placeholder"
    lr_text = "1e-3" if cfg.optim.opt == "adamw" else "0.5"
    assert f"lr {lr_text}" in comments
    assert cfg.optim.lr == pytest.approx(float(lr_text))


def test_10w_classes_is_the_supplementary_setting():
    cfg = load_config(str(ROOT / "configs" / "10w_classes.yaml"))
    assert (cfg.model.backbone, cfg.model.head) == ("resnet50", "ebv")
    assert cfg.model.num_classes == 100_000 and cfg.model.embed_dim == 5000
    assert cfg.model.tau == pytest.approx(0.007)
    assert cfg.data.recipe == "A1" and cfg.data.format == "zip"
    assert cfg.optim.opt == "sgd" and cfg.optim.momentum == pytest.approx(0.9)


@pytest.mark.parametrize("head", ["fc", "ebv"])
@pytest.mark.parametrize("setting", ["A0", "A1", "A2"])
def test_imagenet_resnet50_table1(head, setting):
    cfg = load_config(str(ROOT / "configs" / "imagenet" / f"r50_{head}_{setting.lower()}.yaml"))
    assert cfg.model.backbone == "resnet50" and cfg.model.head == head
    assert cfg.model.num_classes == 1000 and cfg.data.recipe == setting
    assert cfg.optim.opt == "sgd"
    if head == "ebv":
        assert cfg.model.embed_dim == 1000 and cfg.model.tau == pytest.approx(0.07)
        assert cfg.ebv.alpha == pytest.approx(0.004)


@pytest.mark.parametrize("head", ["fc", "ebv"])
def test_imagenet_swin_t(head):
    cfg = load_config(str(ROOT / "configs" / "imagenet" / f"swin_t_{head}_a2.yaml"))
    assert cfg.model.backbone == "swin_tiny" and cfg.model.head == head
    assert cfg.optim.opt == "adamw"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "ablation_dim").glob("*.yaml")), ids=_rel)
def test_dimension_ablation(path):
    d = int(re.search(r"_d(\d+)\.yaml$", path.name).group(1))
    cfg = load_config(str(path))
    assert cfg.model.embed_dim == d and cfg.model.num_classes == 1000
    assert cfg.model.head == "ebv" and cfg.model.tau == pytest.approx(0.07)
    assert 0 < cfg.ebv.alpha < 0.2
    assert f"d={d}" in path.read_text()


def test_overrides_apply_on_top_of_a_config():
    cfg = load_config(str(ROOT / "configs" / "10w_classes.yaml"),
                      ["device_target=CPU", "train.batch_size=4", "data.path=/tmp/x.zip"])
    assert (cfg.device_target, cfg.train.batch_size, cfg.data.path) == ("CPU", 4, "/tmp/x.zip")


def test_a_validated_config_can_be_the_base():
    """Was a TypeError: the retired-key pop ran on the read-only Config (deepcopy returns it)."""
    done = load_config(str(ROOT / "configs" / "demo_cpu.yaml"), ["train.epochs=3"])
    cfg = load_config(None, ["optim.lr=0.5"], base=done)
    assert cfg.to_dict() == {**done.to_dict(), "optim": {**done.optim, "lr": 0.5}}
    assert load_config(base=done) == done and done.optim.lr != 0.5  # the base is left as it was
    plain = {**done.to_dict(), "train": {**done.train, "debug_kill_at_step": 3}}
    assert load_config(base=plain) == done and "debug_kill_at_step" in plain["train"]

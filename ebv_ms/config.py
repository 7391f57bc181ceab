"""YAML configs: defaults, validation that names the bad key, and ``key.sub=value`` overrides.

A config file only needs the keys it changes; everything else comes from ``DEFAULTS``.
An unknown key, or a value of the wrong type, is an error that names the key and the file.
Sections mirror the factories' arguments (``model`` -> ``create_classifier``, ``data`` ->
``create_dataset``, ``optim`` -> ``create_optimizer``, ``scheduler`` -> ``create_scheduler``).
"""
from __future__ import annotations

import copy
import difflib
from typing import Any, Iterable, Mapping, Optional

import yaml

# A default of None accepts any value; otherwise the value's type must match the default's
# (an int is accepted where a float is expected). Each section is owned by the module that
# consumes it; add keys there, with a comment saying what they do.
DEFAULTS: dict = {
    "seed": 42,                 # one seed for every rank: init, shuffling, augmentation
    "device_target": "CPU",     # CPU | GPU | Ascend
    "mode": "graph",            # graph | pynative
    "output_dir": "runs/default",
    "ebv": {
        "path": None,           # an existing set (.npy/.npz/.pkl); else generated and cached
        "alpha": None,          # coherence target max|cos| when generating (None: as low as the
                                # method gets; must be >= the Welch bound; official needs it)
        "method": "auto",       # auto (closed form if one fits, else smoothmax) | smoothmax |
                                # official (Algorithm 1) | orthonormal | simplex | kerdock |
                                # kerdock_padded  -> ebv_ms.generation.create_ebv
        "seed": 0,              # init draw / closed-form subset
        "max_steps": None,      # step cap of iterative methods (None: 3000 smoothmax, 1e5 official)
        "cache_dir": "ebv_cache",
    },
    "model": {                  # -> ebv_ms.models.create_classifier(**model, ebv=...)
        "backbone": "resnet50",  # resnet50 | swin_tiny (mindcv) | small_cnn (CPU demo/tests)
        "head": "ebv",          # ebv | fc | fixed_random_dot | fixed_random_cos
        "num_classes": 1000,
        "embed_dim": 1000,      # d of the EBVs (and of the random class vectors); unused by fc
        "tau": 0.07,            # temperature of the EBV logits: cos(v, w_k) / tau
        "scale": None,          # S of the fixed-random heads (None: 1 for dot, 1/tau for cos)
        "ebv_dtype": "float32",  # storage dtype of the frozen EBV matrix: float32 | float16
        "pretrained": False,    # True: mindcv downloads ImageNet weights (needs internet)
        "backbone_checkpoint": None,  # local backbone .ckpt (mindcv layout) to start from
        "head_seed": 0,         # seed of the fixed random class vectors
        "in_channels": 3,
        "backbone_kwargs": {},  # extra mindcv create_model kwargs, e.g. {drop_rate: 0.1}
    },
    "loss": {                   # -> ebv_ms.loss.create_loss(**loss)
        "label_smoothing": 0.0,  # eps: target = (1 - eps) * t + eps / N (hard and soft targets)
        "reduction": "mean",    # mean | sum | none
    },
    "data": {                   # -> ebv_ms.data.create_dataset (docs/data.md)
        "path": None,           # .zip archive (read in place) or dataset folder (ImageNet layout / list root)
        "format": "auto",       # auto | zip | folder (ImageFolderDataset) | list (CSV/txt lists + root folder)
        "layout": "auto",       # zip only: auto | folders ([top/]split/class/img) | lists (list files inside)
        "root": None,           # zip only: top folder inside the archive ("" = none; None = detect)
        "split_dirs": {},       # {split: folder} overriding detection, e.g. {train: 10w/train, val: 10w/val}
        "split_lists": {},      # {split: list file}: a member of the archive, or a CSV on disk for folders
        "list_columns": None,   # [path column, label column] by index or header name (None: detect)
        "list_delimiter": None,  # list field separator (None: comma, tab or whitespace, detected)
        "list_strip_prefix": "",  # removed from listed paths before joining to data.path (e.g. "../")
        "index_cache_dir": None,  # zip index cache (None: next to the archive, else ~/.cache/ebv_ms)
        "image_size": 224,      # training crop size
        "eval_resize": None,    # eval: shorter side resized to this (None: image_size / 0.875)
        "eval_crop": None,      # eval: centre crop (None: image_size)
        "recipe": "A1",         # training augmentation: A0 | A1 | A2 (evaluation always uses 'eval')
        "scale": [0.08, 1.0],   # random resized crop area range
        "color_jitter": 0.4,    # A0 brightness/contrast/saturation jitter
        "random_erasing": 0.1,  # A1/A2 random erasing probability
        "mixup_alpha": 0.2,     # A2 mixup Beta(alpha, alpha)
        "cutmix_alpha": 1.0,    # A2 cutmix Beta(alpha, alpha)
        "mix_switch_prob": 0.5,  # A2: probability a batch uses cutmix instead of mixup
        "num_workers": 2,       # parallel workers for reading/decoding and for the per-image ops
        "python_multiprocessing": False,  # decode in worker processes instead of threads (see docs/data.md)
        "max_image_pixels": 89478485,  # larger images are bad samples (Pillow's MAX_IMAGE_PIXELS; 0: no cap)
    },
    "optim": {
        "opt": "sgd",           # sgd (momentum SGD, the paper's ResNet runs) | adamw (Swin/ViT)
        "lr": 0.1,              # peak learning rate, used as given (not scaled by world size)
        "momentum": 0.9,        # sgd only
        "nesterov": False,      # sgd only
        "weight_decay": 1e-4,
        "filter_bias_and_bn": True,  # no weight decay on biases and norm layers' gamma/beta
        "betas": [0.9, 0.999],  # adamw only
        "eps": 1e-8,            # adamw only
    },
    "scheduler": {
        "name": "warmup_cosine",  # warmup_cosine | constant (per-step values, one list per run)
        "warmup_epochs": 5.0,   # linear warm-up length (epochs; may be fractional)
        "warmup_factor": 0.01,  # the warm-up starts at lr x warmup_factor
        "min_lr": 0.0,          # where the cosine ends
    },
    "train": {
        "epochs": 100,
        "batch_size": 256,      # per device (global batch = batch_size x number of ranks)
        "amp_level": "auto",    # auto (O2 on GPU/Ascend, O0 on CPU) | O0 | O1 | O2 | O3
        "loss_scale": "auto",   # auto (dynamic under fp16 amp, none otherwise) | dynamic | static | none
        "loss_scale_value": 65536.0,  # initial (dynamic) or fixed (static) loss scale
        "clip_grad_norm": 0.0,  # clip gradients to this global norm; 0 disables
        "eval_interval": 1,     # evaluate every N epochs (and always after the last one)
        "log_interval": 50,     # steps between text-log lines inside an epoch
        "progress_bar": True,   # tqdm bar per epoch (rank 0 only) with loss, lr and images/s
        "keep_best": True,      # also keep best.ckpt (highest validation top-1)
        "debug_kill_at_step": None,  # testing only: SIGKILL this process at this global step
    },
    "eval": {
        "batch_size": 100,      # per device
        "split": "val",         # the split evaluated each epoch and by eval.py
        "test_size": None,      # eval.py --test-size: input side for evaluation (None: data default)
    },
}


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what to do."""


class Config(dict):
    """A dict with attribute access (``cfg.model.head``), nested."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def __setattr__(self, name, value):
        self[name] = value

    def to_dict(self) -> dict:
        return _plain(self)


def _plain(x):
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _wrap(x):
    if isinstance(x, Mapping):
        return Config({k: _wrap(v) for k, v in x.items()})
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _type_ok(default, value) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, dict):
        return isinstance(value, Mapping)
    return isinstance(value, type(default))


def _merge(base: dict, update: Mapping, where: str, prefix: str = "") -> None:
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(f"{where}: unknown config key '{path}'{hint} "
                              f"(known keys here: {', '.join(sorted(map(str, base))) or 'none'})")
        default = base[key]
        if isinstance(default, dict) and default:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: config key '{path}' must be a mapping, got {value!r}")
            _merge(default, value, where, path + ".")
            continue
        if not _type_ok(default, value):
            raise ConfigError(f"{where}: config key '{path}' expects {type(default).__name__} "
                              f"(default {default!r}), got {value!r} ({type(value).__name__})")
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        base[key] = copy.deepcopy(value)


def parse_override(text: str) -> dict:
    """``model.head=fc`` -> {"model": {"head": "fc"}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(path: Optional[str] = None, overrides: Iterable[str] = (),
                base: Optional[Mapping] = None) -> Config:
    """DEFAULTS <- base (e.g. a checkpoint's config) <- YAML file <- ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if base:
        _merge(cfg, base, "checkpoint config")
    if path:
        _merge(cfg, load_yaml(path), str(path))
    for text in overrides:
        _merge(cfg, parse_override(text), f"override '{text}'")
    return _wrap(cfg)


def save_config(cfg: Mapping, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(_plain(cfg), f, sort_keys=False)


def require(cfg: Mapping, dotted: str, what: str = "") -> Any:
    """Value at ``a.b.c``, or a ConfigError naming the key if it is missing or None."""
    node: Any = cfg
    for p in dotted.split("."):
        if not isinstance(node, Mapping) or node.get(p) is None:
            raise ConfigError(f"config key '{dotted}' must be set{': ' + what if what else ''}")
        node = node[p]
    return node

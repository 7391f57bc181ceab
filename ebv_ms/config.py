"""YAML configs: one schema, ``key.sub=value`` overrides, one validation pass reporting every bad
key with where it was set; ``check_run`` looks at the machine. Sections mirror the factories'
arguments (``model`` -> ``create_classifier``), which know nothing of YAML keys."""
from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import math
import multiprocessing
import operator
import os
import stat
import tempfile
from typing import Any, Dict, Iterable, Mapping, Optional

import yaml

from .errors import ConfigError


def _show(value) -> str:
    """``repr`` cut to one readable line (a 5,000-digit seed, a 100 KB string)."""
    try:
        text = repr(value) if not isinstance(value, (dict, list)) or len(value) < 20 else \
            f"<{type(value).__name__} of {len(value)} items>"
    except ValueError:  # Python refuses int -> str past 4,300 digits (a config built in code)
        text = f"<{type(value).__name__} too long to show>"
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


_TYPE_TEXT = {"map": "mapping", "splits": "mapping split name -> path",
              "columns": "[path column, label column] (index >= 0 or header name)",
              "bool|str": "bool or a local checkpoint path",
              "pair": "two numbers [a, b], a <= b, each {range}"}
_CMP = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class Key:
    """One config key: default, type, doc, ``allowed`` (a tuple of choices, or a range such as
    ">= 0 and < 1"), error ``hint``, ``empty`` (str: "" allowed); None is allowed when the
    default is None."""

    def __init__(self, default: Any, type: str, doc: str = "", allowed=None, *, hint: str = "",
                 empty: bool = False):
        self.default, self.type, self.doc, self.hint, self.empty = default, type, doc, hint, empty
        self.choices = allowed if isinstance(allowed, tuple) else None
        self.range = allowed if isinstance(allowed, str) else ""

    def describe(self) -> str:
        kind = _TYPE_TEXT.get(self.type)  # "{range}" by replace: str.format reads braces
        text = kind.replace("{range}", self.range) if kind else f"{self.type} {self.range}".strip()
        if self.choices is not None:
            text = "one of " + ", ".join(self.choices)
        return text + (" or null" if self.default is None else "")

    def _number(self, value, integer: bool):
        got = f"got {_show(value)} ({type(value).__name__})"
        if isinstance(value, str) and not integer:
            with contextlib.suppress(ValueError):  # PyYAML reads "1e-4" (no dot) as a string
                value = float(value)  # accept numbers written that way
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise ConfigError(f"expects {self.describe()}, {got}")
        if not integer:
            try:
                value = float(value)
            except OverflowError:  # an int past float's range (YAML keeps long ones as text)
                value = math.inf if value > 0 else -math.inf
            if not math.isfinite(value):
                raise ConfigError(f"expects a finite {self.describe()}, got {value}")
        if not all(_CMP[op](value, float(x)) for op, x in
                   (c.split() for c in self.range.split(" and ") if c)):
            raise ConfigError(f"must be {self.range}, got {_show(value)}")
        return value

    def check(self, value):
        """The value normalised (int -> float, choices' own spelling), or ConfigError saying what
        is allowed (``validate`` adds the key)."""
        t, got = self.type, f"got {_show(value)}"
        if value is None:
            if self.default is None:
                return None
            raise ConfigError(f"must be set ({self.describe()})")
        if t in ("int", "float"):
            return self._number(value, t == "int")
        if t == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"expects true or false, {got} ({type(value).__name__})")
            return value
        if t == "str":
            if not isinstance(value, str) or not (value or self.empty):
                raise ConfigError(f"expects a {'' if self.empty else 'non-empty '}string, {got} "
                           f"({type(value).__name__})")
            if "\0" in value:
                raise ConfigError("contains a NUL byte (\\0), which no path or name can hold: " + _show(value))
            canonical = {a.lower(): a for a in self.choices or ()}  # case-insensitive
            if self.choices is None or value.lower() in canonical:
                return canonical.get(value.lower(), value)
            close = difflib.get_close_matches(value, self.choices, n=1)
            raise ConfigError(f"must be one of {', '.join(self.choices)}, {got}"
                       + (f"; did you mean '{close[0]}'?" if close else ""))
        if t in ("map", "splits"):
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"expects a mapping with string keys, {got}")
            if t == "splits" and not all(isinstance(v, str) and v and "\0" not in v for v in value.values()):
                raise ConfigError(f"expects a mapping of split name -> path (strings), {got}")
            return dict(value)
        two = isinstance(value, (list, tuple)) and len(value) == 2
        if not {"bool|str": isinstance(value, (bool, str)) and value != "", "pair": two,
                "columns": two and all((isinstance(c, int) and not isinstance(c, bool) and c >= 0)
                                       or (isinstance(c, str) and c) for c in value)}[t]:
            raise ConfigError(f"expects {self.describe()}, {got}")
        if t == "pair":
            a, b = (self._number(v, False) for v in value)
            if a > b:
                raise ConfigError(f"expects [a, b] with a <= b, {got}")
            return [a, b]
        return list(value) if t == "columns" else value


# The allowed values of the keys that pick an implementation; their implementing modules import them.
METHODS = ("auto", "smoothmax", "official", "orthonormal", "simplex", "kerdock", "kerdock_padded")
HEADS = ("ebv", "fc", "fixed_random_dot", "fixed_random_cos")
STORAGE_DTYPES = ("float32", "float16")
RECIPES = ("eval", "A0", "A1", "A2")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("warmup_cosine", "constant")
AMP_LEVELS = ("auto", "O0", "O1", "O2", "O3")
# Documented backbones, ours (no pretrained weights) and aliases; other mindcv models work too.
BACKBONES = ("resnet50", "swin_tiny", "small_cnn", "small_mlp")
BACKBONE_ALIASES = {"tiny_cnn": "small_cnn"}
OWN_BACKBONES = ("small_cnn", "small_mlp", *BACKBONE_ALIASES)


def is_backbone(name: str) -> bool:
    """Ours (or an alias) or a model in mindcv's registry (imported on this call)."""
    if name in OWN_BACKBONES:
        return True
    if name.startswith("ebv_"):  # our own whole classifiers in mindcv's registry, not backbones
        return False
    from mindcv.models.registry import is_model
    return bool(is_model(name))


_k = Key


# Every key the project reads. Each section is consumed by one factory; add a key with a doc.
SCHEMA: Dict[str, Any] = {
    "seed": _k(42, "int", "one seed for every rank: init, shuffling, augmentation", ">= 0 and <= 4294967295"),
    "device_target": _k("CPU", "str", "where to run", ("CPU", "GPU", "Ascend")),
    "mode": _k("graph", "str", "MindSpore execution mode", ("graph", "pynative")),
    "output_dir": _k("runs/default", "str", "run folder: checkpoints, logs, config.yaml"),
    "ebv": {
        "path": _k(None, "str", "an existing set (.npy/.npz/.pkl); else generated and cached"),
        "alpha": _k(None, "float", "coherence target max|cos| when generating (null: as low as the "
                    "method gets; >= the Welch bound; official needs it)", ">= 0 and < 1"),
        "method": _k("auto", "str", "auto: a closed form if one fits, else smoothmax", METHODS),
        "seed": _k(0, "int", "init draw / closed-form subset", ">= 0"),
        "max_steps": _k(None, "int", "step cap of iterative methods (null: 3000 smoothmax, 1e5 "
                        "official)", ">= 1"),
        "cache_dir": _k("ebv_cache", "str", "folder of generated sets, keyed by (N, d, alpha, method, seed)"),
    },
    "model": {                  # -> ebv_ms.models.create_classifier(**model, ebv=...)
        "backbone": _k("resnet50", "str", "resnet50 | swin_tiny (mindcv) | small_cnn (CPU demo/"
                       "tests) | another mindcv model name"),
        "head": _k("ebv", "str", "the classifier head", HEADS),
        "num_classes": _k(1000, "int", "N", ">= 1"),
        "embed_dim": _k(1000, "int", "d of the EBVs (and of the random class vectors); unused by fc", ">= 1"),
        "tau": _k(0.07, "float", "temperature of the EBV logits: cos(v, w_k) / tau", "> 0"),
        "scale": _k(None, "float", "S of the fixed-random heads (null: 1 for dot, 1/tau for cos)",
                    "> 0"),
        "ebv_dtype": _k("float32", "str", "storage dtype of the frozen class-vector matrix",
                        STORAGE_DTYPES),
        "pretrained": _k(False, "bool|str", "true: mindcv downloads ImageNet weights (needs internet)"),
        "backbone_checkpoint": _k(None, "str", "local backbone .ckpt (mindcv layout) to start from"),
        "head_seed": _k(0, "int", "seed of the fixed random class vectors", ">= 0"),
        "in_channels": _k(3, "int", "image channels", ">= 1"),
        "backbone_kwargs": _k({}, "map", "extra mindcv create_model kwargs, e.g. {drop_rate: 0.1}"),
    },
    "loss": {                   # -> ebv_ms.loss.create_loss(**loss)
        "label_smoothing": _k(0.0, "float", "eps: target = (1 - eps) * t + eps / N",
                              ">= 0 and < 1"),
        "reduction": _k("mean", "str", "over the batch", ("mean", "sum"),
                        hint="'none' (one loss per sample) exists in the loss API (create_loss) but "
                             "training minimises one number per step"),
    },
    "data": {                   # -> ebv_ms.data.create_dataset (docs/data.md)
        "path": _k(None, "str", ".zip archive (read in place) or dataset folder"),
        "format": _k("auto", "str", "zip | folder (ImageFolderDataset) | list (CSV/txt lists + root)",
                     ("auto", "zip", "folder", "list")),
        "layout": _k("auto", "str", "zip only: folders ([top/]split/class/img) | lists (list files "
                     "inside)", ("auto", "folders", "lists")),
        "root": _k(None, "str", "zip only: top folder inside the archive (null: detect)"),
        "split_dirs": _k({}, "splits", "{split: folder} overriding detection"),
        "split_lists": _k({}, "splits", "{split: list file}: a member of the archive, or a CSV on disk"),
        "list_columns": _k(None, "columns", "list columns by index or header name (null: detect)"),
        "list_delimiter": _k(None, "str", "list field separator (null: comma, tab or whitespace)"),
        "list_strip_prefix": _k("", "str", "removed from listed paths before they are looked up",
                                empty=True),
        "index_cache_dir": _k(None, "str", "zip index cache (null: next to the archive, else "
                              "~/.cache/ebv_ms)"),
        "image_size": _k(224, "int", "training crop size", ">= 1"),
        "eval_resize": _k(None, "int", "eval: shorter side resized to this (null: image_size / 0.875)", ">= 1"),
        "eval_crop": _k(None, "int", "eval: centre crop (null: image_size)", ">= 1"),
        "recipe": _k("A1", "str", "training augmentation (evaluation always uses 'eval')", RECIPES),
        "scale": _k([0.08, 1.0], "pair", "random resized crop area range", "> 0 and <= 1"),
        "color_jitter": _k(0.4, "float", "A0 brightness/contrast/saturation jitter", ">= 0"),
        "random_erasing": _k(0.1, "float", "A1/A2 random erasing probability", ">= 0 and <= 1"),
        "mixup_alpha": _k(0.2, "float", "A2 mixup Beta(alpha, alpha); 0 disables", ">= 0"),
        "cutmix_alpha": _k(1.0, "float", "A2 cutmix Beta(alpha, alpha); 0 disables", ">= 0"),
        "mix_switch_prob": _k(0.5, "float", "A2: probability a batch uses cutmix instead of mixup",
                              ">= 0 and <= 1"),
        "num_workers": _k(2, "int", "parallel workers for decoding and per-image ops (lowered to "
                          "the machine's core count, with a warning)", ">= 1"),
        "python_multiprocessing": _k(False, "bool", "decode in worker processes instead of threads"),
        "max_image_pixels": _k(89478485, "int", "larger images are bad samples (Pillow's MAX_IMAGE_PIXELS); 0: no cap", ">= 0"),
        "max_image_bytes": _k(67108864, "int", "larger image files or zip members (stored or inflated) are bad samples, refused before they are read; 0: no cap", ">= 0"),
    },
    "optim": {
        "opt": _k("sgd", "str", "sgd (momentum SGD, the paper's ResNet runs) | adamw (Swin/ViT)",
                  OPTIMIZERS),
        "lr": _k(0.1, "float", "peak learning rate, used as given (not scaled by world size)",
                 "> 0"),
        "momentum": _k(0.9, "float", "sgd only", ">= 0 and < 1"),
        "nesterov": _k(False, "bool", "sgd only"),
        "weight_decay": _k(1e-4, "float", "L2 weight decay", ">= 0"),
        "filter_bias_and_bn": _k(True, "bool", "no weight decay on biases and norm layers"),
        "betas": _k([0.9, 0.999], "pair", "adamw only", ">= 0 and < 1"),
        "eps": _k(1e-8, "float", "adamw only", "> 0"),
    },
    "scheduler": {
        "name": _k("warmup_cosine", "str", "per-step values, one list per run", SCHEDULERS),
        "warmup_epochs": _k(5.0, "float", "linear warm-up length (epochs; may be fractional)", ">= 0"),
        "warmup_factor": _k(0.01, "float", "the warm-up starts at lr x warmup_factor", ">= 0 and <= 1"),
        "min_lr": _k(0.0, "float", "where the cosine ends (<= optim.lr)", ">= 0"),
    },
    "train": {
        "epochs": _k(100, "int", "epochs to train", ">= 1"),
        "batch_size": _k(256, "int", "per device (global batch = batch_size x number of ranks)", ">= 1"),
        "amp_level": _k("auto", "str", "auto: O2 on GPU/Ascend, O0 on CPU", AMP_LEVELS),
        "loss_scale": _k("auto", "str", "auto: dynamic under fp16 amp, none otherwise",
                         ("auto", "dynamic", "static", "none")),
        "loss_scale_value": _k(65536.0, "float", "initial (dynamic) or fixed (static) loss scale",
                               "> 0"),
        "clip_grad_norm": _k(0.0, "float", "clip gradients to this global norm; 0 disables", ">= 0"),
        "eval_interval": _k(1, "int", "evaluate every N epochs (and always after the last one)", ">= 1"),
        "log_interval": _k(50, "int", "steps between text-log lines inside an epoch; 0: none", ">= 0"),
        "progress_bar": _k(True, "bool", "progress per epoch, rank 0 only (a bar on a terminal, "
                                         "else a line every 30 s)"),
        "max_skipped_steps": _k(200, "int", "stop after this many consecutive overflowed steps at the lowest loss scale (fp16 overflow in the forward); 0: never", ">= 0"),
        "keep_best": _k(True, "bool", "also keep best.ckpt (highest validation top-1)"),
        "ckpt_inline_ebv_mb": _k(64.0, "float", "EBV sets up to this size (MB of float32) go inside every checkpoint; larger ones once, next to them", ">= 0"),
    },
    "eval": {
        "batch_size": _k(100, "int", "per device", ">= 1"),
        "split": _k("val", "str", "the split evaluated each epoch and by eval.py"),
        "test_size": _k(None, "int", "eval.py --test-size: input side (null: data default)", ">= 1"),
    },
}


class Config(dict):
    """A validated, read-only config with attribute access; change ``cfg.to_dict()`` and validate."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def _read_only(self, *args, **kwargs):
        raise TypeError("a validated config is read-only: change cfg.to_dict() and validate it")

    __setattr__ = __setitem__ = __delitem__ = __delattr__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __copy__(self, memo=None):  # read-only: copies may share it
        return self

    __deepcopy__ = __copy__

    def __reduce__(self):  # pickling (worker processes) rebuilds it without __setitem__
        return _plain, (self.to_dict(), Config)

    def to_dict(self) -> dict:
        return _plain(self)


def _plain(x, kind=dict):
    """Plain dicts and lists all the way down (``kind=Config``: read-only; a Key: its default)."""
    if isinstance(x, Mapping):
        return kind({k: _plain(v, kind) for k, v in x.items()})
    if isinstance(x, Key):
        return _plain(x.default)
    return [_plain(v, kind) for v in x] if isinstance(x, list) else x


DEFAULTS: dict = _plain(SCHEMA)  # the default config (plain dict)


def _merge(base: dict, update: Any, schema: Mapping, where: str, origins: Dict[str, str],
           prefix: str = "") -> None:
    if not isinstance(update, Mapping):
        what = f"config section '{prefix[:-1]}'" if prefix else "the config"
        raise ConfigError(f"{where}: {what} must be a mapping of keys, got {_show(update)}")
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in schema:  # a close key in this section, else in another (train.epochs)
            known = sorted(map(str, schema))
            others = {d.rsplit(".", 1)[-1]: d for d, _ in _walk(SCHEMA)
                      if not prefix or not d.startswith(prefix)}
            close = [prefix + k for k in difflib.get_close_matches(str(key), known, n=1)] or \
                [others[k] for k in difflib.get_close_matches(str(key), list(others), n=1)]
            raise ConfigError(f"{where}: unknown config key '{path}'"
                              + (f"; did you mean '{close[0]}'?" if close else "")
                              + f" (known keys here: {', '.join(known) or 'none'})")
        if isinstance(schema[key], Mapping):
            _merge(base[key], value, schema[key], where, origins, path + ".")
        else:
            base[key] = copy.deepcopy(value)
            origins[path] = where


def parse_override(text: str, where: str) -> dict:
    """``model.head=fc`` -> {"model": {"head": "fc"}}, value as YAML; errors name ``where``."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}': the key must look like key.sub (no empty parts)")
    try:
        value = parse_yaml(raw, where, "the value is ") if raw.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"{exc}; quote the value, e.g. {key}='...'") from None
    for p in reversed(parts):
        value = {p: value}
    return value


MAX_YAML_BYTES = 1 << 20   # a config is a few KB (the largest in configs/ is 3.1 KB)
MAX_YAML_VALUES = 100_000  # after alias expansion: a 9x9 alias bomb is 387 million
MAX_YAML_DEPTH = 32        # a config is 3 levels deep; 50,000 levels overflowed the parser's stack
MAX_INT_DIGITS = 100       # longer integers stay text, refused by the key's check (no int())


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        self._keys.append(index.value if isinstance(index, yaml.ScalarNode) else "[]")
        if len(self._keys) > MAX_YAML_DEPTH:
            keys = ".".join(k for k in self._keys[1:4] if k != "[]")
            raise ConfigError(f"{self._where}: {'config key ' + repr(keys) + ' ' if keys else ''}"
                              f"nests more than {MAX_YAML_DEPTH} levels deep (line "
                              f"{self.get_mark().line + 1}); a config is a few levels of keys")
        try:
            return super().compose_node(parent, index)
        finally:
            self._keys.pop()

    def construct_yaml_int(self, node):
        return node.value if len(node.value) > MAX_INT_DIGITS else super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _expanded_size(node, memo: dict, where: str) -> int:
    """Values in ``node`` with every alias expanded (what a walk of the result visits)."""
    if id(node) not in memo:
        memo[id(node)] = None
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode) else []
        memo[id(node)] = 1 + sum(_expanded_size(c, memo, where) for c in children)
    elif memo[id(node)] is None:
        raise ConfigError(f"{where}: an alias refers to the value that contains it")
    return memo[id(node)]


def parse_yaml(text: str, where: str, what: str = "") -> Any:
    """YAML text -> plain data, bounded in bytes, depth and values after alias expansion."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters of YAML, more than a config's "
                          f"{MAX_YAML_BYTES:,}")
    loader = _Loader(text)
    loader._where, loader._keys = where, []
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, where)
        if size > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: YAML aliases expand to {size:,} values (more than "
                              f"{MAX_YAML_VALUES:,}); write the values out instead of aliasing them")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {what}not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def load_yaml(path: str) -> dict:
    """The mapping in a YAML config file: regular (a FIFO or device would block), UTF-8, bounded."""
    what = "config file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ConfigError(f"{what} {path} is a folder; give a YAML file (e.g. configs/demo_cpu"
                          ".yaml)" if stat.S_ISDIR(mode) else f"{what} {path} is not a regular "
                          "file (a pipe or device); give a YAML file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_YAML_BYTES + 1)
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path}: larger than {MAX_YAML_BYTES:,} bytes; a config is a few KB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save "
                          "it as UTF-8") from None
    data = parse_yaml(text, str(path))
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data or {}


def load_config(path: Optional[str] = None, overrides: Iterable[str] = (),
                base: Optional[Mapping] = None) -> Config:
    """DEFAULTS <- base (a checkpoint's config) <- YAML file <- overrides, then ``validate``."""
    cfg = copy.deepcopy(DEFAULTS)
    origins: Dict[str, str] = {}
    if base is not None:
        base = _plain(base)  # fresh dicts (a validated Config is read-only); _merge copies values
        # a retired key older checkpoints record (now a test callback, tests/probes.py)
        if isinstance(base.get("train"), dict):
            base["train"].pop("debug_kill_at_step", None)
        _merge(cfg, base, SCHEMA, "checkpoint config", origins)
    if path:
        _merge(cfg, load_yaml(path), SCHEMA, str(path), origins)
    for text in overrides:
        where = f"override '{text if len(text) <= 80 else text[:60] + '...'}'"
        _merge(cfg, parse_override(text, where), SCHEMA, where, origins)
    return validate(cfg, origins)


def _walk(schema: Mapping, prefix: str = ""):
    for k, v in schema.items():
        if isinstance(v, Mapping):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _cross_checks(c: Mapping, bad) -> None:
    d, m, e = c["data"], c["model"], c["ebv"]
    if d["recipe"] == "A2" and d["mixup_alpha"] == 0 and d["cutmix_alpha"] == 0:
        bad("data.recipe", "A2 mixes images: set data.mixup_alpha or data.cutmix_alpha > 0, or use "
                           "recipe A1")
    if c["scheduler"]["min_lr"] > c["optim"]["lr"]:
        bad("scheduler.min_lr", f"must be <= optim.lr ({c['optim']['lr']}), got "
                                f"{c['scheduler']['min_lr']}")
    if not is_backbone(m["backbone"]):
        bad("model.backbone", f"{m['backbone']!r} is neither one of {', '.join(BACKBONES)} nor a "
                              "mindcv model name (mindcv.models.list_models())")
    if m["pretrained"] is True and m["backbone"] in OWN_BACKBONES:
        bad("model.pretrained", f"{m['backbone']} has no pretrained weights; set it to false")
    if m["head"] == "ebv" and not e["path"]:
        if e["method"] == "official" and e["alpha"] is None:
            bad("ebv.alpha", "ebv.method official (Algorithm 1) needs ebv.alpha, its stopping "
                             "threshold (e.g. 0.135 for N=1000, d=100)")
        elif e["alpha"] is not None:
            from .ebv.metrics import welch_bound
            wb = welch_bound(m["num_classes"], m["embed_dim"])
            if e["alpha"] < wb:
                bad("ebv.alpha", f"{e['alpha']} is below the Welch bound {wb:.5f} for "
                                 f"N={m['num_classes']}, d={m['embed_dim']}: no such set exists; "
                                 f"use ebv.alpha >= {wb:.5f} or a larger model.embed_dim")


def validate(cfg: Mapping, origins: Optional[Mapping[str, str]] = None) -> Config:
    """The config normalised, or one ConfigError listing every problem with its key and origin."""
    origins = origins or {}
    out = copy.deepcopy(_plain(cfg))
    problems = []

    def bad(key: str, msg: str, hint: str = "") -> None:
        src = f" (set in {origins[key]})" if key in origins else ""
        problems.append(f"config key '{key}' {msg}{src}" + (f"; {hint}" if hint else ""))

    for k, v in out.items():  # a config built in code (not read by _merge) may have unknown keys
        if k not in SCHEMA:
            bad(k, "is unknown")
        elif isinstance(SCHEMA[k], Mapping) and isinstance(v, Mapping):
            for sub in [s for s in v if s not in SCHEMA[k]]:
                bad(f"{k}.{sub}", "is unknown")
    broken = [k for k, v in SCHEMA.items() if isinstance(v, Mapping)
              and not isinstance(out.get(k), Mapping)]
    for k in broken:
        bad(k, f"must be a mapping (a config section), got {_show(out.get(k))}")
    for key, spec in _walk(SCHEMA):
        *head, last = key.split(".")
        if head and head[0] in broken:
            continue
        node = out[head[0]] if head else out  # SCHEMA is two levels deep
        if last not in node:
            bad(key, "is missing")
            continue
        try:
            node[last] = spec.check(node[last])
        except ConfigError as exc:
            bad(key, str(exc), spec.hint)
    if not problems:
        _cross_checks(out, bad)
    if problems:
        raise ConfigError("; ".join(problems))
    return _plain(out, Config)


def ebv_path_missing(path: str) -> ConfigError:
    return ConfigError(f"config key 'ebv.path': file not found: {path} (leave it unset to "
                       "generate a set and cache it under 'ebv.cache_dir')")


def check_run(cfg: Config, training: bool = True, ebv_needed: bool = True) -> Config:
    """Checks of this machine (``ebv.path`` only if ``ebv_needed``: a checkpoint may hold the set);
    returns the config with ``data.num_workers`` lowered to the cores MindSpore allows."""
    ebv = cfg.ebv if cfg.model.head == "ebv" and ebv_needed else None
    folders = {"output_dir": cfg.output_dir, "data.index_cache_dir": cfg.data.index_cache_dir,
               "ebv.cache_dir": ebv and not ebv.path and ebv.cache_dir}
    for key, path in folders.items():
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"config key {key!r}: {path} is a file, not a folder; choose a "
                              "folder")
    if ebv and ebv.path and not os.path.isfile(ebv.path):
        raise ebv_path_missing(ebv.path)
    ckpt = cfg.model.backbone_checkpoint or cfg.model.pretrained  # True: a download, not a file
    if isinstance(ckpt, str) and not os.path.isfile(ckpt):
        raise ConfigError(f"config key 'model.backbone_checkpoint': file not found: {ckpt}")
    if not cfg.data.path:
        raise ConfigError("config key 'data.path' must be set: the .zip archive or the dataset "
                          "folder, in the --config file (e.g. --config configs/demo_cpu.yaml) or "
                          "as data.path=PATH (demo data: python -m ebv_ms.tools.make_demo --out DIR)")
    if not os.path.exists(cfg.data.path):
        raise ConfigError(f"config key 'data.path': {cfg.data.path} not found; point it at the "
                          ".zip archive or the dataset folder")
    if training:  # last: the only check that creates something (the folder, if all else passed)
        try:  # root ignores mode bits: only a real write shows a read-only file system
            os.makedirs(cfg.output_dir, exist_ok=True)
            tempfile.TemporaryFile(dir=cfg.output_dir).close()
        except OSError as exc:
            raise ConfigError(f"config key 'output_dir': cannot write into {cfg.output_dir} "
                              f"({exc.strerror or exc}); choose a writable folder") from None
    cores = multiprocessing.cpu_count()  # MindSpore's own bound (dataset validator_helpers)
    if cfg.data.num_workers <= cores:
        return cfg
    logging.getLogger("ebv_ms").warning("data.num_workers=%d is more than this machine's %d "
                                        "cores; using %d", cfg.data.num_workers, cores, cores)
    return _plain({**cfg, "data": {**cfg.data, "num_workers": cores}}, Config)


def save_config(cfg: Mapping, path: str) -> None:
    from .atomic import atomic_path
    with atomic_path(path, fsync=False) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(_plain(cfg), f, sort_keys=False)


def schema_table() -> str:
    """The schema as a markdown table (docs/training.md)."""
    rows = ["| key | default | allowed | what |", "|---|---|---|---|"]
    for key, spec in _walk(SCHEMA):
        value = yaml.safe_dump(spec.default, default_flow_style=True).removesuffix("...\n").strip()
        allowed = (spec.describe() + (f" ({spec.hint})" if spec.hint else "")).replace("|", "\\|")
        doc = spec.doc.replace("|", "\\|")
        rows.append(f"| `{key}` | `{value}` | {allowed} | {doc} |")
    return "\n".join(rows)

"""Export a classifier (images (B, 3, S, S) float32 -> logits (B, N) float32) to MindIR / ONNX
(/ AIR on Ascend), with the preprocessing in a JSON sidecar ``<file>.json``: the serving side's
decoder needs the same numbers, and MindSpore serialises dataset ops only into MindIR. A MindIR
over 1 GiB of parameters is split (``<name>_graph.mindir`` + ``<name>_variables/``); an ONNX over
2 GiB (protobuf's limit) has one file per weight: a folder ``<name>_onnx/`` (docs/deploy.md)."""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import mindspore as ms
from mindcv.models.resnet import BasicBlock, Bottleneck
from mindspore import Tensor, nn, ops
from mindspore.onnx import onnx_export

from ebv_ms.atomic import atomic_path
from ebv_ms.data.presets import IMAGENET_MEAN, IMAGENET_STD
from ebv_ms.engine.builders import eval_sizes
from ebv_ms.errors import EBVMSError
from ebv_ms.models.heads import ScaledL2Normalize

_EXT = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
SIDECAR_FORMAT = "ebv-ms-export/1"


class ExportError(EBVMSError):
    """An export that cannot be made here; the message says what to do instead."""


def input_spec(cfg, batch: int) -> dict:
    """What the exported graph expects as input (written beside every export)."""
    resize, crop = eval_sizes(cfg)
    return {
        "name": "image", "shape": [int(batch), int(cfg.model.in_channels), crop, crop],
        "dtype": "float32", "layout": "NCHW", "color": "RGB",
        "preprocessing": [
            "decode to RGB uint8 (H, W, 3)", f"resize the shorter side to {resize} (bilinear)",
            f"centre-crop {crop} x {crop}", "x = (pixel - mean) / std per channel, with pixel in 0..255",
            "HWC -> CHW, stack to (batch, 3, H, W)"],
        "resize": resize, "crop": crop, "interpolation": "bilinear",
        "mean": [round(m * 255.0, 4) for m in IMAGENET_MEAN],
        "std": [round(s * 255.0, 4) for s in IMAGENET_STD],
        "same_as": "ebv_ms.data.presets.create_transforms('eval', ...) as used by eval.py",
    }


def sidecar_path(model_file: str) -> str:
    """``x.mindir.json`` for ``x.mindir`` and for its split form ``x_graph.mindir``;
    ``x.onnx.json`` for ``x.onnx`` and for ``x_onnx/x.onnx`` (ONNX with external data)."""
    if os.path.isfile(model_file + ".json"):
        return model_file + ".json"
    if model_file.endswith("_graph.mindir"):
        return model_file[: -len("_graph.mindir")] + ".mindir.json"
    folder = os.path.dirname(os.path.abspath(model_file))
    if model_file.endswith(".onnx") and folder.endswith("_onnx"):
        return folder[: -len("_onnx")] + ".onnx.json"
    return model_file + ".json"


def read_sidecar(model_file: str) -> dict:
    """The export description beside ``model_file``, checked: ``model`` a path inside its folder,
    input shape and sizes, one class name per output class."""
    path = sidecar_path(model_file)
    if not os.path.isfile(path):
        raise ExportError(f"{path} not found: predictions from an exported model need the JSON "
                          "export.py writes beside it (input size, normalisation, class names)")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
            raise ExportError(f"{path}: not an ebv-ms export description (expected format "
                              f"{SIDECAR_FORMAT!r})")
        model, spec, names = meta["model"], meta["input"], meta["class_names"]
        shape, n = spec["shape"], meta["output"]["shape"][1]
        if not (isinstance(model, str) and model and not os.path.isabs(model)
                and ".." not in model.replace("\\", "/").split("/") and "\0" not in model):
            raise ExportError(f"{path}: 'model' {str(model)[:80]!r} is not a file inside its "
                              "folder; pass the model file itself")
        if not (isinstance(shape, list) and len(shape) == 4 and
                all(type(x) is int and 0 < x <= 1 << 16 for x in shape + [spec["resize"], spec["crop"]])):
            raise ValueError("input shape / resize / crop are not positive whole numbers")
        if type(n) is not int or not isinstance(names, list) or len(names) != n \
                or not all(isinstance(c, str) for c in names):
            raise ValueError(f"the class names are not {n} strings")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ExportError(f"{path}: damaged export description ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]}); export the model again") from None
    return meta


# ONNX: MindSpore 2.10's exporter cannot convert Rsqrt (ScaledL2Normalize) nor InplaceAddExt
# (`out += identity` in mindcv 0.3.0's ResNet blocks): make_onnx_exportable swaps in the same
# functions with ops it has, for export only (training keeps rsqrt and the hand-written backward).
class PortableL2Normalize(nn.Cell):
    """A ``ScaledL2Normalize``'s class for ONNX (its scale, fp32 kept): Sqrt, RealDiv, not Rsqrt."""

    def construct(self, v):
        return v / ops.sqrt(ops.sum(v * v, -1, keepdim=True) + 1e-24) * self.scale


class _AddBasicBlock(BasicBlock):
    def construct(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.down_sample is None else self.down_sample(x)))


class _AddBottleneck(Bottleneck):
    def construct(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.down_sample is None else self.down_sample(x)))


def make_onnx_exportable(network: nn.Cell) -> List[str]:
    """Apply the ONNX rewrites to ``network`` in place (same parameters); returns what changed."""
    blocks, done, n_blocks = {BasicBlock: _AddBasicBlock, Bottleneck: _AddBottleneck}, [], 0
    for name, cell in list(network.cells_and_names()):
        if type(cell) in blocks:
            cell.__class__ = blocks[type(cell)]
            n_blocks += 1
        elif type(cell) is ScaledL2Normalize:
            cell.__class__ = PortableL2Normalize
            done.append(f"{name}: Rsqrt -> Sqrt, RealDiv")
    if n_blocks:
        done.append(f"{n_blocks} mindcv residual blocks: InplaceAddExt -> Add")
    return done


def _parameter_bytes(network, each: int = 0) -> int:
    return int(sum(int(np.prod(p.shape)) * p.data.itemsize + each for p in network.get_parameters()))


def _written(base: str, fmt: str) -> List[str]:
    found = [base + _EXT[fmt]]
    if fmt == "MINDIR":  # split save: <base>_graph.mindir + <base>_variables/data_K
        found += [base + "_graph.mindir"] + glob.glob(base + "_variables/*")
    if fmt == "ONNX" and os.path.isdir(base + "_onnx"):  # the model and its external data
        found = glob.glob(os.path.join(base + "_onnx", "*"))
    return [f for f in found if os.path.isfile(f)]


def export_network(network, cfg, class_names, file_format: str, out: str, batch: int = 1,
                   checkpoint: Optional[str] = None) -> Tuple[Dict, str]:
    """Export ``network`` in inference mode; returns (the sidecar written beside it, its path)."""
    fmt = str(file_format).upper()  # export.py's --format choices: one of _EXT's keys
    if int(batch) < 1:
        raise ExportError(f"--batch must be >= 1, got {batch}")
    if fmt == "AIR" and str(cfg.device_target) != "Ascend":
        raise ExportError("AIR export needs an Ascend device: MindSpore 2.10 builds AIR with the "
                          "Ascend graph engine (CANN). Run export.py on an Ascend machine with "
                          "--device Ascend, or export MINDIR (MindSpore Lite converts it for "
                          "Ascend) or ONNX here")
    spec = input_spec(cfg, batch)
    base, ext = os.path.splitext(os.path.abspath(out))
    base = base if ext.lower() == _EXT[fmt] else base + ext  # MindSpore appends _EXT[fmt] itself
    os.makedirs(os.path.dirname(base), exist_ok=True)
    for f in _written(base, fmt):  # MindSpore marks its outputs read-only; a re-export replaces them
        os.chmod(f, 0o644)
    x = ms.Tensor(np.zeros(spec["shape"], np.float32))
    network.set_train(False)
    swapped, output_name = [], None
    if fmt == "ONNX":
        swapped = make_onnx_exportable(network)
        # MindSpore 2.10 writes an invalid graph when the output is renamed and the last op is a
        # Cast (fp16-stored heads end in one): those keep MindSpore's own name for it
        output_name = "logits" if getattr(network.head, "keep_fp32", True) else None
        onnx_file = base + ".onnx"
        # MindSpore's own test (onnx_export.py): parameters over PROTO_LIMIT_SIZE KiB, each as
        # sys.getsizeof(bytes), with a 1% margin; then each goes to a file beside the .onnx
        if _parameter_bytes(network, 33) / 1024 > 0.99 * onnx_export.PROTO_LIMIT_SIZE:
            os.makedirs(base + "_onnx", exist_ok=True)
            onnx_file = os.path.join(base + "_onnx", os.path.basename(base) + ".onnx")
        ms.onnx.export(network, x, file_name=onnx_file, input_names=["image"],
                       output_names=[output_name] if output_name else None)
    else:
        ms.export(network, x, file_name=base, file_format=fmt)
    files = sorted(_written(base, fmt))
    if not files:
        raise ExportError(f"MindSpore wrote no {fmt} file for {base}; see its log above")
    model = next(f for f in files if f.endswith(_EXT[fmt]) and "_variables" not in f)
    head, folder = str(cfg.model.head), os.path.dirname(base)
    meaning = {"ebv": f"cos(embedding, EBV_k) / tau, tau={float(cfg.model.tau)}",
               "fc": "learned FC logits"}.get(head, f"fixed random class vectors ({head})")
    meta = {
        "format": SIDECAR_FORMAT, "file_format": fmt, "model": os.path.relpath(model, folder),
        "files": {os.path.relpath(f, folder): os.path.getsize(f) for f in files}, "input": spec,
        "output": {"name": output_name or "(the only output)",
                   "shape": [int(batch), int(cfg.model.num_classes)], "dtype": "float32",
                   "meaning": meaning, "prediction": "argmax; softmax gives probabilities"},
        "backbone": str(cfg.model.backbone), "head": head, "num_classes": int(cfg.model.num_classes),
        "embed_dim": int(getattr(network.head, "dim", 0) or 0) or None,
        "tau": float(cfg.model.tau) if head == "ebv" else None,
        "ebv_dtype": str(cfg.model.ebv_dtype), "ebv_checksum": network.ebv_checksum,
        "parameter_bytes": _parameter_bytes(network), "onnx_rewrites": swapped,
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "mindspore": ms.__version__, "class_names": list(class_names),
    }
    side = sidecar_path(base + _EXT[fmt])
    with atomic_path(side, fsync=False) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    return meta, side

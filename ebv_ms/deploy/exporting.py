"""Export a trained classifier to MindIR / ONNX (/ AIR on Ascend), with a JSON sidecar.

The exported graph is ``images (B, 3, S, S) float32 -> logits (B, N) float32``: backbone,
projection and head (EBV: cos(v, w_k) / tau; FC; fixed random), as in eval.py. The input's
preprocessing is NOT in the graph: it is written beside the file (``<file>.json``, e.g.
``best.mindir.json``: layout, mean/std, resize/crop, class names, the EBV set's checksum), because the same numbers must
drive whatever decodes images on the serving side, and MindSpore can serialise dataset ops only
into MindIR (for MindSpore Lite), not into ONNX.

Sizes (MindSpore 2.10, read from ``mindspore/train/serialization.py`` and
``mindspore/onnx/onnx_export.py``, and measured: docs/deploy.md):

- MindIR: parameters over 1 GiB in total are written as ``<name>_graph.mindir`` plus
  ``<name>_variables/data_0``; ``mindspore.load`` of ``<name>_graph.mindir`` reads both.
  ResNet-50 + the 100k x 5000 fp32 EBVs (2,135 MB) goes this way.
- ONNX (``mindspore.onnx.export``): a network over 2 GiB (protobuf's limit) has every weight
  written as its own external data file beside the ``.onnx``; those exports go into a folder
  ``<name>_onnx/`` of their own. ResNet-50 + 100k x 5000 is 12 MB under the limit: one file.
  ``model.ebv_dtype=float16`` halves the EBV matrix.
- AIR: needs Ascend (MindSpore compiles it with the Ascend graph engine); deprecated in 2.10.

MindSpore 2.10's ONNX exporter lacks ``Rsqrt`` and ``InplaceAddExt``: ONNX exports go
through the rewrites in ``onnx_compat.py`` (same function, ops it has).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import mindspore as ms

from ebv_ms.atomic import atomic_path
from ebv_ms.errors import EBVMSError

__all__ = ["FORMATS", "export_network",
           "sidecar_path", "read_sidecar", "ExportError", "SIDECAR_FORMAT"]

FORMATS = ("MINDIR", "ONNX", "AIR")
_EXT = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
SIDECAR_FORMAT = "ebv-ms-export/1"


class ExportError(EBVMSError):
    """An export that cannot be made here; the message says what to do instead."""


def _network_bytes(network) -> int:
    return int(sum(int(np.prod(p.shape)) * p.data.itemsize for p in network.get_parameters()))


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
    """The export description beside ``model_file``, checked: its ``model`` (a path inside the
    sidecar's folder), input shape and sizes, and one class name per output class."""
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
        ok = (isinstance(model, str) and model and not os.path.isabs(model)
              and ".." not in model.replace("\\", "/").split("/") and "\0" not in model)
        if not ok:
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


def export_network(network, cfg, class_names, file_format: str, out: str, batch: int = 1,
                   checkpoint: Optional[str] = None) -> Tuple[Dict, str]:
    """Export ``network`` (in inference mode) and write the sidecar; returns (the sidecar's
    content, its path). ``model``: the file to load; ``files``: everything written, with sizes."""
    from .loading import input_spec

    fmt = str(file_format).upper()
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {file_format!r}")
    if int(batch) < 1:
        raise ExportError(f"--batch must be >= 1, got {batch}")
    if fmt == "AIR" and str(cfg.device_target) != "Ascend":
        raise ExportError("AIR export needs an Ascend device: MindSpore 2.10 builds AIR with the "
                          "Ascend graph engine (CANN). Run export.py on an Ascend machine with "
                          "--device Ascend, or export MINDIR (MindSpore Lite converts it for "
                          "Ascend) or ONNX here")
    spec = input_spec(cfg, batch)
    out = os.path.abspath(out)
    base, ext = os.path.splitext(out)
    if ext.lower() != _EXT[fmt]:
        base = out  # MindSpore appends the extension itself; keep "x.v1" as a name
    os.makedirs(os.path.dirname(base), exist_ok=True)
    before = set(_written(base, fmt))
    for f in before:  # MindSpore marks its outputs read-only; a re-export replaces them
        os.chmod(f, 0o644)
    x = ms.Tensor(np.zeros(spec["shape"], np.float32))
    network.set_train(False)
    if fmt == "ONNX":
        from .onnx_compat import make_onnx_exportable
        swapped = make_onnx_exportable(network)
        # MindSpore 2.10 writes an invalid graph ("Graph output (logits) does not exist")
        # when the output is renamed and the last op is a Cast (fp16-stored heads end in one):
        # those keep MindSpore's own output name; it is the graph's only output either way.
        low = bool(getattr(network.head, "low_precision_storage", False))
        output_name = None if low else "logits"
        onnx_file = base + ".onnx"
        if _onnx_needs_external_data(network):
            # MindSpore then writes one file per parameter (named after it) beside the .onnx:
            # give them a folder of their own instead of spraying them into the run folder
            os.makedirs(base + "_onnx", exist_ok=True)
            onnx_file = os.path.join(base + "_onnx", os.path.basename(base) + ".onnx")
        ms.onnx.export(network, x, file_name=onnx_file, input_names=["image"],
                       output_names=[output_name] if output_name else None)
    else:
        swapped, output_name = [], None
        ms.export(network, x, file_name=base, file_format=fmt)
    files = sorted(_written(base, fmt))
    if not files:
        raise ExportError(f"MindSpore wrote no {fmt} file for {base}; see its log above")
    model = next(f for f in files if f.endswith(_EXT[fmt]) and "_variables" not in f)
    head = network.head
    meta = {
        "format": SIDECAR_FORMAT, "file_format": fmt, "model": os.path.relpath(model, os.path.dirname(base)),
        "files": {os.path.relpath(f, os.path.dirname(base)): os.path.getsize(f) for f in files},
        "input": spec,
        "output": {"name": output_name or "(the only output)", "shape": [int(batch), int(cfg.model.num_classes)],
                   "dtype": "float32",
                   "meaning": _meaning(cfg), "prediction": "argmax; softmax gives probabilities"},
        "backbone": str(cfg.model.backbone), "head": str(cfg.model.head),
        "num_classes": int(cfg.model.num_classes),
        "embed_dim": int(getattr(head, "dim", 0) or 0) or None,
        "tau": float(cfg.model.tau) if str(cfg.model.head) == "ebv" else None,
        "ebv_dtype": str(cfg.model.ebv_dtype), "ebv_checksum": network.ebv_checksum,
        "parameter_bytes": _network_bytes(network), "onnx_rewrites": swapped,
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "mindspore": ms.__version__, "class_names": list(class_names),
    }
    side = sidecar_path(base + _EXT[fmt])
    with atomic_path(side, fsync=False) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    return meta, side


def _meaning(cfg) -> str:
    head = str(cfg.model.head)
    if head == "ebv":
        return f"cos(embedding, EBV_k) / tau, tau={float(cfg.model.tau)}"
    if head == "fc":
        return "learned FC logits"
    return f"fixed random class vectors ({head})"


def _onnx_needs_external_data(network) -> bool:
    """MindSpore's own test (mindspore/onnx/onnx_export.py): parameters over PROTO_LIMIT_SIZE
    KiB (2 GiB) counted as ``sys.getsizeof(bytes)``; a 1% margin keeps us on its side."""
    from mindspore.onnx import onnx_export
    kib = sum(int(np.prod(p.shape)) * p.data.itemsize + 33 for p in network.get_parameters()) / 1024
    return kib > 0.99 * onnx_export.PROTO_LIMIT_SIZE


def _written(base: str, fmt: str) -> List[str]:
    ext = _EXT[fmt]
    found = [base + ext]
    if fmt == "MINDIR":  # split save: <base>_graph.mindir + <base>_variables/data_K
        found += [base + "_graph.mindir"] + glob.glob(base + "_variables/*")
    if fmt == "ONNX" and os.path.isdir(base + "_onnx"):  # the model and its external data
        found = glob.glob(os.path.join(base + "_onnx", "*"))
    return [f for f in found if os.path.isfile(f)]

"""Top-k predictions on image files, folders and zips, from a checkpoint or an exported model.

Images are read and checked by the data package's readers and ``ImageSource`` (its
``precheck`` keeps a malformed JPEG from crashing MindSpore's decoder) and transformed by eval.py's
``create_transforms("eval", ...)``, so a checkpoint predicts what eval.py scores. A bad image is
reported and skipped. Runners map a float32 (B, 3, S, S) batch to logits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ebv_ms.data.layouts import is_image
from ebv_ms.data.readers import BadMember, FileReader, printable
from ebv_ms.data.source import ImageSource
from ebv_ms.errors import EBVMSError

__all__ = ["ImageList", "collect_images", "EvalTransform", "NetworkRunner", "ONNXRunner",
           "open_model", "predict", "text_line", "topk", "PredictError"]


class PredictError(EBVMSError):
    """Nothing to predict on, or a model that cannot be used; the message says what to do."""


@dataclass
class ImageList:
    """Images of one PATH argument: ``source.load(i, decode=False)`` gives checked bytes."""

    source: ImageSource
    names: List[str]     # shown in the output: the path, or "archive.zip:member"

    def __len__(self) -> int:
        return len(self.names)


def _image_list(reader, members, names) -> ImageList:
    members = np.asarray(members, np.int64)
    return ImageList(ImageSource(reader, members, np.zeros(len(members), np.int32)), list(names))


def collect_images(paths: Sequence[str]) -> List[ImageList]:
    """One ``ImageList`` per PATH: an image file (taken as given, even with an odd suffix, so a
    non-image is reported, not silently dropped), a folder (its images, recursively, sorted),
    or a .zip (its image members, read in place)."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            rel = sorted(os.path.relpath(os.path.join(d, f), path)
                         for d, _, files in os.walk(path) for f in files if is_image(f))
            if not rel:
                raise PredictError(f"{path}: a folder with no images in it (or below it)")
            out.append(_image_list(FileReader(path, rel), range(len(rel)),
                                   [os.path.join(path, r) for r in rel]))
        elif os.path.isfile(path) and path.lower().endswith(".zip"):
            from ebv_ms.data.readers import ZipMemberReader
            from ebv_ms.data.zip_index import load_zip_index
            index = load_zip_index(path, progress=False)
            names = index.all_names()
            members = sorted((i for i, n in enumerate(names) if is_image(n)), key=names.__getitem__)
            if not members:
                raise PredictError(f"{path}: no image members (extensions .jpg .png .bmp .webp "
                                   ".tif ...)")
            out.append(_image_list(ZipMemberReader(index), members,
                                   [f"{path}:{names[i]}" for i in members]))
        elif os.path.isfile(path):
            reader = FileReader(os.path.dirname(os.path.abspath(path)), [os.path.basename(path)])
            out.append(_image_list(reader, [0], [path]))
        else:
            what = "not a regular file" if os.path.exists(path) else "no such file or folder"
            raise PredictError(f"{printable(path)}: {what} (give image files, folders or .zip "
                               "archives)")
    return out


class EvalTransform:
    """Encoded image bytes -> float32 (3, crop, crop): the evaluation recipe, eagerly."""

    def __init__(self, resize: int, crop: int):
        import mindspore.dataset.transforms as T
        from ebv_ms.data.presets import create_transforms
        self._ops = T.Compose(create_transforms("eval", int(crop), int(resize), int(crop),
                                                encoded=True))

    def __call__(self, encoded: np.ndarray) -> np.ndarray:
        return np.asarray(self._ops(encoded), dtype=np.float32)


class NetworkRunner:
    """A MindSpore Cell: the network from ``load_network``, or a MindIR's ``nn.GraphCell``.
    ``batch``: batches are padded to it, so graph mode compiles one shape."""

    def __init__(self, network, batch: int):
        self.network, self.batch = network, int(batch)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import mindspore as ms
        return self.network(ms.Tensor(x)).asnumpy()


class ONNXRunner:
    """An exported ONNX model, run by onnxruntime (CPU)."""

    def __init__(self, path: str, batch: int):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise PredictError("predicting from .onnx needs onnxruntime: pip install "
                               "onnxruntime (or export MINDIR and use that)") from exc
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.batch = int(batch)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


def open_model(path: str, device: str = "CPU"):
    """(runner, class names, EvalTransform) for an exported model, from its sidecar JSON."""
    from .exporting import read_sidecar, sidecar_path
    if not os.path.isfile(path) and not os.path.isfile(sidecar_path(path)):
        raise PredictError(f"--model {path}: file not found")
    meta = read_sidecar(path)
    spec = meta["input"]
    batch = int(spec["shape"][0])
    # the file to load: a large MindIR is split into <name>_graph.mindir + <name>_variables/
    model_file = os.path.join(os.path.dirname(os.path.abspath(path)), meta["model"])
    if not os.path.isfile(model_file):
        raise PredictError(f"--model {path}: {model_file} (named in {sidecar_path(path)}) not found")
    if path.endswith(".onnx"):
        runner = ONNXRunner(model_file, batch)
    elif path.endswith(".mindir"):
        import mindspore as ms
        from ebv_ms.device import set_device
        set_device(device)
        ms.set_context(mode=ms.GRAPH_MODE)
        runner = NetworkRunner(ms.nn.GraphCell(ms.load(model_file)), batch)
    else:
        raise PredictError(f"--model {path}: expected a .mindir or .onnx file written by export.py")
    return runner, list(meta["class_names"]), EvalTransform(spec["resize"], spec["crop"])


def text_line(rec: dict) -> str:
    """A record as one line of text: names escaped (`printable`), so a file or class name with
    a newline or an escape sequence cannot forge a line; ``--json`` output keeps them exact."""
    if "error" in rec:
        return f"skipped {printable(rec['image'])}: {printable(rec['error'])}"
    best = ", ".join(f"{printable(t['class'])} {100 * t['prob']:.1f}%" for t in rec["topk"])
    return f"{printable(rec['image'])}: {best}"


def topk(logits: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(indices (B, k), softmax probabilities (B, k)), best first; float64 softmax."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    k = min(int(k), p.shape[1])
    idx = np.argpartition(-p, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(p, idx, 1), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, 1)
    return idx, np.take_along_axis(p, idx, 1)


def _images(lists: Sequence[ImageList], transform: EvalTransform):
    """(name, float32 image or None, reason) for every image, in order."""
    for il in lists:
        for i, name in enumerate(il.names):
            try:
                yield name, transform(il.source.load(i, decode=False)), ""
            except BadMember as exc:
                yield name, None, str(exc)
            except (RuntimeError, ValueError) as exc:  # the decoder refused what precheck let by
                yield name, None, f"cannot be decoded ({str(exc).splitlines()[0][:200]})"


def predict(runner, transform: EvalTransform, class_names: Sequence[str],
            lists: Sequence[ImageList], k: int = 5, progress: bool = True) -> Iterator[dict]:
    """One record per image, in input order: ``{"image", "topk": [{"class", "index", "prob"}]}``
    or ``{"image", "error"}`` for one that was skipped."""
    from ebv_ms.progress import progress_bar
    total = sum(len(il) for il in lists)
    bar = progress_bar(total=total, desc="predict", unit="img", disable=not progress or total < 64,
                       dynamic_ncols=True, mininterval=1.0)
    pending: List[Tuple[str, Optional[np.ndarray], str]] = []  # in input order, bad ones too
    n_img = 0

    def flush():
        good = [img for _, img, _ in pending if img is not None]
        if good:
            x = np.stack(good)
            n = x.shape[0]
            if n < runner.batch:  # fixed-batch graphs: pad with zeros, drop their rows
                x = np.concatenate([x, np.zeros((runner.batch - n,) + x.shape[1:], x.dtype)])
            idx, prob = topk(runner(x)[:n], k)
        j = 0
        for name, img, why in pending:
            if img is None:
                yield {"image": name, "error": why}
                continue
            yield {"image": name, "topk": [{"class": class_names[int(c)], "index": int(c),
                                            "prob": float(q)} for c, q in zip(idx[j], prob[j])]}
            j += 1
        bar.update(len(pending))
        pending.clear()

    for name, img, why in _images(lists, transform):
        pending.append((name, img, why))
        n_img += img is not None
        if n_img == runner.batch:
            yield from flush()
            n_img = 0
    if pending:
        yield from flush()
    bar.close()

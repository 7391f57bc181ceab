"""Top-k predictions on image files, folders and zips, from a checkpoint or an exported model.
Images are checked by ``ImageSource`` (a malformed JPEG cannot crash MindSpore's decoder; a bad
image is reported and skipped) and transformed as eval.py does, so a checkpoint predicts what
eval.py scores."""
from __future__ import annotations

import os
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ebv_ms.data.layouts import is_image
from ebv_ms.data.readers import BadMember, FileReader, ZipMemberReader, printable
from ebv_ms.data.source import ImageSource
from ebv_ms.data.zip_index import load_zip_index
from ebv_ms.errors import EBVMSError


class PredictError(EBVMSError):
    """Nothing to predict on, or a model that cannot be used; the message says what to do."""


class ImageList(NamedTuple):
    """Images of one PATH argument: ``source.load(i, decode=False)`` gives checked bytes; the
    ``names`` shown are the paths, or "archive.zip:member"."""
    source: ImageSource
    names: List[str]


def _image_list(reader, members, names) -> ImageList:
    members = np.asarray(members, np.int64)
    return ImageList(ImageSource(reader, members, np.zeros(len(members), np.int32)), list(names))


def collect_images(paths: Sequence[str]) -> List[ImageList]:
    """One ``ImageList`` per PATH: an image file (even with an odd suffix: a non-image is
    reported, not dropped), a folder (its images, recursively, sorted), or a .zip's images."""
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
            index = load_zip_index(path, progress=False)
            names = index.all_names()
            members = sorted((i for i, n in enumerate(names) if is_image(n)), key=names.__getitem__)
            if not members:
                raise PredictError(f"{path}: no image members (extensions .jpg .png .bmp .webp .tif ...)")
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


def eval_transform(resize: int, crop: int) -> Callable[[np.ndarray], np.ndarray]:
    """Encoded image bytes -> float32 (3, crop, crop): the evaluation recipe, eagerly."""
    import mindspore.dataset.transforms as T
    from ebv_ms.data.presets import create_transforms
    ops = T.Compose(create_transforms("eval", int(crop), int(resize), int(crop)))
    return lambda encoded: np.asarray(ops(encoded), dtype=np.float32)


class NetworkRunner(NamedTuple):
    """``run``: float32 (B, 3, S, S) -> logits; batches padded to ``batch``: one graph shape."""
    run: Callable[[np.ndarray], np.ndarray]
    batch: int


def cell_runner(cell, batch: int) -> NetworkRunner:
    """By a Cell: ``load_network``'s, or a MindIR's ``GraphCell``."""
    import mindspore as ms
    return NetworkRunner(lambda x: cell(ms.Tensor(x)).asnumpy(), int(batch))


def open_model(path: str, device: str = "CPU"):
    """(runner, class names, eval_transform) for an exported model, from its sidecar JSON."""
    from .exporting import read_sidecar, sidecar_path
    if not os.path.isfile(path) and not os.path.isfile(sidecar_path(path)):
        raise PredictError(f"--model {path}: file not found")
    meta = read_sidecar(path)
    spec, batch = meta["input"], int(meta["input"]["shape"][0])
    # named from the sidecar's folder: <name>_graph.mindir (split MindIR), <name>_onnx/<name>.onnx
    model_file = os.path.join(os.path.dirname(os.path.abspath(sidecar_path(path))), meta["model"])
    if not os.path.isfile(model_file):
        raise PredictError(f"--model {path}: {model_file} (named in {sidecar_path(path)}) not found")
    if path.endswith(".onnx"):  # run by onnxruntime (CPU)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise PredictError("predicting from .onnx needs onnxruntime: pip install "
                               "onnxruntime (or export MINDIR and use that)") from exc
        session = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
        runner = NetworkRunner(lambda x: session.run(None, {session.get_inputs()[0].name: x})[0],
                               batch)
    elif path.endswith(".mindir"):
        import mindspore as ms
        from ebv_ms.device import set_device
        set_device(device)
        ms.set_context(mode=ms.GRAPH_MODE)
        runner = cell_runner(ms.nn.GraphCell(ms.load(model_file)), batch)
    else:
        raise PredictError(f"--model {path}: expected a .mindir or .onnx file written by export.py")
    return runner, list(meta["class_names"]), eval_transform(spec["resize"], spec["crop"])


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


def predict(runner, transform: Callable, class_names: Sequence[str],
            lists: Sequence[ImageList], k: int = 5, progress: bool = True) -> Iterator[dict]:
    """One record per image, in input order: ``{"image", "topk": [{"class", "index", "prob"}]}``
    or ``{"image", "error"}`` for one that was skipped."""
    from ebv_ms.progress import progress_bar
    total = sum(len(il.names) for il in lists)
    bar = progress_bar(total=total, desc="predict", unit="img", disable=not progress or total < 64,
                       dynamic_ncols=True, mininterval=1.0)
    pending: List[Tuple[str, Optional[np.ndarray], str]] = []  # in input order, bad ones too

    def flush():
        good = [img for _, img, _ in pending if img is not None]
        if good:  # fixed-batch graphs: padded with zeros, whose rows are dropped
            x = np.stack(good + [np.zeros_like(good[0])] * (runner.batch - len(good)))
            top = zip(*topk(runner.run(x)[:len(good)], k))
        for name, img, why in pending:
            if img is None:
                yield {"image": name, "error": why}
            else:
                idx, prob = next(top)
                yield {"image": name, "topk": [{"class": class_names[int(c)], "index": int(c),
                                                "prob": float(q)} for c, q in zip(idx, prob)]}
        bar.update(len(pending))
        pending.clear()

    for il in lists:
        for i, name in enumerate(il.names):
            try:
                pending.append((name, transform(il.source.load(i, decode=False)), ""))
            except BadMember as exc:
                pending.append((name, None, str(exc)))
            except (RuntimeError, ValueError) as exc:  # the decoder refused what precheck let by
                pending.append((name, None, f"cannot be decoded ({str(exc).splitlines()[0][:200]})"))
            if sum(img is not None for _, img, _ in pending) == runner.batch:
                yield from flush()
    if pending:
        yield from flush()
    bar.close()

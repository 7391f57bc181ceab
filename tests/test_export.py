"""export.py and predict.py against independent runtimes, on real demo images: the MindIR run
by ``mindspore.load`` + ``nn.GraphCell`` and the ONNX run by onnxruntime give the checkpointed
network's logits; predict.py from a checkpoint scores what eval.py scored."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script

import mindspore as ms

pytestmark = pytest.mark.slow  # see README 'Tests and CI'

ROOT = Path(__file__).resolve().parents[1]
PYNATIVE = ["mode=pynative"]  # keep the test session's context; export compiles a graph anyway


def _val_images(demo_zip, out: Path, per_class=None):
    """The demo archive's validation images as files: [(path, label)]."""
    items = []
    with zipfile.ZipFile(demo_zip) as z:
        names = sorted(n for n in z.namelist() if "/val/" in n and n.endswith(".jpg"))
        seen = {}
        for n in names:
            label = int(n.split("/")[-2])
            if per_class is not None and seen.get(label, 0) >= per_class:
                continue
            seen[label] = seen.get(label, 0) + 1
            p = out / "val" / str(label) / n.rsplit("/", 1)[1]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(z.read(n))
            items.append((p, label))
    return items


def _batch(transform, paths):
    return np.stack([transform(np.frombuffer(Path(p).read_bytes(), np.uint8)) for p in paths])


def _logits_in_batches(fn, x, batch):
    out = []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        n = len(part)
        if n < batch:
            part = np.concatenate([part, np.zeros((batch - n,) + part.shape[1:], part.dtype)])
        out.append(fn(part)[:n])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def demo_export(demo_run, demo_zip, tmp_path_factory):
    """The demo checkpoint exported as MindIR and ONNX (batch 64), its network, and the
    validation images preprocessed by predict's transform (== eval's)."""
    from ebv_ms.deploy import eval_sizes, load_network
    from ebv_ms.deploy.predicting import eval_transform
    _, run = demo_run
    tmp = tmp_path_factory.mktemp("export")
    ckpt = run / "last.ckpt"
    for fmt in ("MINDIR", "ONNX"):
        r = run_script("export.py", ["--ckpt", ckpt, "--format", fmt, "--batch", 64,
                                     "--out", tmp / "demo", *PYNATIVE], tmp)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    cfg, network, names = load_network(str(ckpt), PYNATIVE)
    items = _val_images(demo_zip, tmp)
    x = _batch(eval_transform(*eval_sizes(cfg)), [p for p, _ in items])
    ref = _logits_in_batches(lambda b: network(ms.Tensor(b)).asnumpy(), x, 64)
    return tmp, x, ref, np.array([y for _, y in items]), names


def test_mindir_gives_the_checkpoints_logits(demo_export):
    tmp, x, ref, labels, _ = demo_export
    assert len(x) == 359  # every demo validation image
    graph = ms.nn.GraphCell(ms.load(str(tmp / "demo.mindir")))
    got = _logits_in_batches(lambda b: graph(ms.Tensor(b)).asnumpy(), x, 64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert (ref.argmax(1) == labels).mean() > 0.5  # a trained network, not noise


def test_onnxruntime_gives_the_same_top1_and_logits(demo_export):
    ort = pytest.importorskip("onnxruntime", reason="pip install -r requirements-dev.txt")
    tmp, x, ref, _, names = demo_export
    sess = ort.InferenceSession(str(tmp / "demo.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    got = _logits_in_batches(lambda b: sess.run(None, {"image": b})[0], x, 64)
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    meta = json.loads((tmp / "demo.onnx.json").read_text())
    assert meta["input"]["shape"] == [64, 3, 8, 8] and meta["input"]["layout"] == "NCHW"
    assert meta["input"]["mean"] == [123.675, 116.28, 103.53]
    assert meta["output"]["shape"] == [64, 10] and meta["class_names"] == names
    assert any("Rsqrt" in w for w in meta["onnx_rewrites"])


def test_resnet50_224_ebv_head_onnx_matches(tmp_path, demo_zip):
    """ResNet-50 (mindcv) at 224 with an EBV head, randomly initialised, saved as a train.py
    checkpoint, loaded and exported to ONNX (residual adds and the L2 norm rewritten), run by
    onnxruntime on a demo image. In-process and one image: a ResNet-50 forward at 224 takes
    ~30 s on this 2-core CPU."""
    ort = pytest.importorskip("onnxruntime", reason="pip install -r requirements-dev.txt")
    from ebv_ms.config import load_config
    from ebv_ms.deploy import eval_sizes, load_network
    from ebv_ms.deploy.exporting import export_network
    from ebv_ms.deploy.predicting import eval_transform
    from ebv_ms.engine.checkpoint import save_checkpoint
    from ebv_ms.engine.builders import build_network
    from ebv_ms.generation import create_ebv
    cfg = load_config(None, ["model.backbone=resnet50", "model.head=ebv", "model.num_classes=10",
                             "model.embed_dim=64", "model.tau=0.07", "data.image_size=224",
                             *PYNATIVE])
    ebv = create_ebv(10, 64, seed=0, progress=False)
    ckpt = tmp_path / "r50.ckpt"
    save_checkpoint(str(ckpt), build_network(cfg, ebv), epoch=0, global_step=0, config=cfg, ebv=ebv)
    cfg, net, names = load_network(str(ckpt), PYNATIVE)
    items = _val_images(demo_zip, tmp_path, per_class=1)[3:4]
    x = _batch(eval_transform(*eval_sizes(cfg)), [p for p, _ in items])
    assert x.shape == (1, 3, 224, 224)
    ref = net(ms.Tensor(x)).asnumpy()
    meta, _ = export_network(net, cfg, names, "ONNX", str(tmp_path / "r50"), batch=1)
    assert "16 mindcv residual blocks: InplaceAddExt -> Add" in meta["onnx_rewrites"]
    sess = ort.InferenceSession(str(tmp_path / "r50.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    assert np.array_equal(got.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_air_is_refused_off_ascend(demo_run, tmp_path):
    _, run = demo_run
    r = run_script("export.py", ["--ckpt", run / "last.ckpt", "--format", "AIR",
                                 "--out", tmp_path / "m"], tmp_path)
    assert r.returncode == 2 and "AIR export needs an Ascend device" in r.stderr
    assert not list(tmp_path.iterdir())


def _records(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_predict_from_checkpoint_scores_what_eval_scored(demo_run, demo_export, demo_zip, tmp_path):
    """predict.py on the validation images (a folder), plus a zip with a corrupt member and a
    file that is no image: the same top-1 as eval.py logged, bad ones reported and skipped."""
    _, run = demo_run
    tmp = demo_export[0]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    small = tmp_path / "few.zip"
    with zipfile.ZipFile(demo_zip) as zin, zipfile.ZipFile(small, "w") as zout:
        good = sorted(n for n in zin.namelist() if "/val/" in n)[:3]
        for n in good:
            zout.writestr(n, zin.read(n))
        zout.writestr("digits/val/0/zz_cut.jpg", zin.read(good[0])[:200])
    r = run_script("predict.py", ["--ckpt", run / "last.ckpt", tmp / "val", small, bad,
                                  "--topk", 3, "--json"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = _records(r.stdout)
    assert len(recs) == 359 + 4 + 1
    folder = [x for x in recs if x["image"].startswith(str(tmp / "val"))]
    assert len(folder) == 359 and all(len(x["topk"]) == 3 for x in folder)
    correct = sum(x["topk"][0]["class"] == Path(x["image"]).parent.name for x in folder)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 100.0 * correct / 359 == pytest.approx(last["top1"], abs=1e-9)
    p = [t["prob"] for t in folder[0]["topk"]]
    assert p == sorted(p, reverse=True) and 0 < sum(p) <= 1 + 1e-9
    errors = {x["image"]: x["error"] for x in recs if "error" in x}
    assert errors == {f"{small}:digits/val/0/zz_cut.jpg": "truncated JPEG (no end-of-image marker)",
                      str(bad): "not an image (no JPEG/PNG/BMP/TIFF/WebP/GIF signature)"}
    assert f"skipped {bad}" in r.stderr and "2 skipped" in r.stderr


def test_predict_from_the_exports_agrees_with_the_checkpoint(demo_run, demo_export):
    _, run = demo_run
    tmp = demo_export[0]
    imgs = sorted((tmp / "val").rglob("*.jpg"))[::40]  # 9 images, one partial batch of 64
    ck = run_script("predict.py", ["--ckpt", run / "last.ckpt", *imgs, "--json"], tmp)
    assert ck.returncode == 0, ck.stderr[-3000:]
    for model in ("demo.mindir", "demo.onnx"):
        ex = run_script("predict.py", ["--model", tmp / model, *imgs, "--json"], tmp)
        assert ex.returncode == 0, ex.stderr[-3000:]
        a, b = _records(ck.stdout), _records(ex.stdout)
        assert [x["topk"][0]["class"] for x in a] == [x["topk"][0]["class"] for x in b]
        for x, y in zip(a, b):
            assert [t["prob"] for t in x["topk"]] == pytest.approx([t["prob"] for t in y["topk"]],
                                                                   abs=1e-4)
    text = run_script("predict.py", ["--model", tmp / "demo.mindir", imgs[0], "--topk", 2], tmp)
    assert text.stdout.startswith(f"{imgs[0]}: ") and text.stdout.count("%") == 2
    missing = run_script("predict.py", ["--model", tmp / "nope.mindir", imgs[0]], tmp)
    assert missing.returncode == 2 and "nope.mindir: file not found" in missing.stderr


def test_onnx_over_the_protobuf_limit_gets_its_own_folder(demo_run, demo_export, monkeypatch):
    """Above 2 GiB MindSpore writes the weights as external data, one file per parameter: the
    export puts the model and those files in <name>_onnx/, the sidecar points there, and
    onnxruntime and predict.py load it. The limit is lowered here (MindSpore's own constant),
    so the small CNN takes that path."""
    ort = pytest.importorskip("onnxruntime", reason="pip install -r requirements-dev.txt")
    from mindspore.onnx import onnx_export
    from ebv_ms.deploy import load_network
    from ebv_ms.deploy.exporting import export_network
    _, run = demo_run
    tmp, x, ref, _, _ = demo_export
    monkeypatch.setattr(onnx_export, "PROTO_LIMIT_SIZE", 1)  # KiB
    cfg, net, names = load_network(str(run / "last.ckpt"), PYNATIVE)
    meta, side = export_network(net, cfg, names, "ONNX", str(tmp / "big"), batch=64)
    assert meta["model"] == "big_onnx/big.onnx" and side == str(tmp / "big.onnx.json")
    assert "big_onnx/head.ebv" in meta["files"]  # the EBV matrix as external data
    assert not (tmp / "head.ebv").exists()
    sess = ort.InferenceSession(str(tmp / "big_onnx" / "big.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"image": x[:64]})[0], ref[:64], rtol=0, atol=1e-4)
    img = sorted((tmp / "val").rglob("*.jpg"))[0]
    r = run_script("predict.py", ["--model", tmp / "big.onnx", img], tmp)
    assert r.returncode == 0 and r.stdout.startswith(f"{img}: "), r.stderr[-2000:]


def test_onnx_rewrite_keeps_the_normalisations_fp32_under_amp():
    """make_onnx_exportable swaps the same function in: under O2 with an fp16-stored head the
    normalisation stays pinned to fp32, so the rewritten network's logits are the original's."""
    from ebv_ms.deploy.exporting import make_onnx_exportable
    from ebv_ms.models import create_classifier
    from ebv_ms.models.amp import apply_mixed_precision
    x = ms.Tensor(np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32))
    logits = []
    for rewrite in (False, True):
        ms.set_seed(3)
        net = apply_mixed_precision(create_classifier(
            "small_mlp", "fixed_random_cos", 5, embed_dim=6, tau=0.1, ebv_dtype="float16",
            backbone_kwargs={"image_size": 8, "widths": [4]}, head_seed=3), "O2")
        net.set_train(False)
        if rewrite:
            assert make_onnx_exportable(net) == ["_backbone.head.normalize: Rsqrt -> Sqrt, RealDiv"]
        logits.append(net(x).asnumpy())
    np.testing.assert_array_equal(logits[1], logits[0])


def test_predict_takes_the_onnx_file_inside_its_folder(tmp_path, monkeypatch):
    """An ONNX over the protobuf limit is <name>_onnx/<name>.onnx, its sidecar <name>.onnx.json
    beside the folder: --model may name that file (the sidecar's 'model' is relative to it)."""
    pytest.importorskip("onnxruntime", reason="pip install -r requirements-dev.txt")
    from mindspore.onnx import onnx_export
    from ebv_ms.config import load_config
    from ebv_ms.deploy.exporting import export_network
    from ebv_ms.deploy.predicting import open_model
    from ebv_ms.engine.builders import build_network
    cfg = load_config(None, ["model.backbone=small_cnn", "model.head=fc", "model.num_classes=3",
                             "data.image_size=16", *PYNATIVE])
    net = build_network(cfg)
    monkeypatch.setattr(onnx_export, "PROTO_LIMIT_SIZE", 1)  # KiB
    meta, _ = export_network(net, cfg, ["a", "b", "c"], "ONNX", str(tmp_path / "big"), batch=2)
    assert meta["model"] == "big_onnx/big.onnx"
    x = np.zeros(meta["input"]["shape"], np.float32)
    for model in (tmp_path / "big.onnx", tmp_path / "big_onnx" / "big.onnx"):
        runner, names, _ = open_model(str(model))
        assert names == ["a", "b", "c"] and runner.run(x).shape == (2, 3)

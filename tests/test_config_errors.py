"""Bad values, files and machine states end in one line naming the key and exit 2, never a
traceback; the checks run before any data or model work, so each case is fast.

The tables call each command line's ``main()`` in this process (what ``python train.py`` runs);
a few cases also run as real subprocesses, and the full disk is a real (tmpfs) full disk.
"""
import errno
import json
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import eval as eval_cli  # noqa: E402  (the repo's eval.py, not the builtin)
import train as train_cli  # noqa: E402
from ebv_ms.config import (DEFAULTS, SCHEMA, ConfigError, check_run, load_config,  # noqa: E402
                           schema_table)
from ebv_ms.errors import EBVMSError, WriteError  # noqa: E402

DEMO = str(ROOT / "configs" / "demo_cpu.yaml")


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _fails(capsys, main, argv, *needles):
    """main(argv) exits 2 with one message containing every needle and no traceback."""
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, f"{argv}: exit {rc}\n{err}"
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, f"{argv}: {n!r} not in\n{err}"
    return err


# --------------------------------------------------------------------------- values
BAD_VALUES = [  # override -> text the message must contain (the key, and what is allowed)
    ("model.tau=0", "'model.tau' must be > 0"),
    ("model.tau=fast", "'model.tau' expects float"),
    ("model.head=bogus", "'model.head' must be one of ebv, fc"),
    ("model.backbone=bogus", "'model.backbone' 'bogus' is neither"),
    ("model.backbone=ebv_resnet50", "'model.backbone' 'ebv_resnet50' is neither"),
    ("model.ebv_dtype=int8", "'model.ebv_dtype' must be one of float32, float16"),
    ("model.num_classes=0", "'model.num_classes' must be >= 1"),
    ("model.backbone_kwargs=3", "'model.backbone_kwargs' expects a mapping"),
    ("model.pretrained=[1]", "'model.pretrained' expects bool"),
    ("data.recipe=A9", "'data.recipe' must be one of eval, A0, A1, A2"),
    ("data.scale=[]", "'data.scale' expects two numbers"),
    ("data.scale=[0.9, 0.1]", "'data.scale' expects [a, b] with a <= b"),
    ("data.image_size=0", "'data.image_size' must be >= 1"),
    ("data.num_workers=0", "'data.num_workers' must be >= 1"),
    ("data.split_dirs=[train]", "'data.split_dirs' expects a mapping"),
    ("data.list_columns=[a]", "'data.list_columns' expects [path column, label column]"),
    ("data.format=tar", "'data.format' must be one of"),
    ("loss.label_smoothing=2", "'loss.label_smoothing' must be >= 0 and < 1"),
    ("loss.reduction=bogus", "'loss.reduction' must be one of mean, sum"),
    ("train.max_skipped_steps=-1", "'train.max_skipped_steps' must be >= 0"),
    ("loss.reduction=none", "training minimises one number"),
    ("seed=-1", "'seed' must be >= 0"),
    ("device_target=TPU", "'device_target' must be one of CPU, GPU, Ascend"),
    ("mode=eager", "'mode' must be one of graph, pynative"),
    ("ebv.alpha=abc", "'ebv.alpha' expects float"),
    ("ebv.alpha=0.1", "below the Welch bound 0.4"),           # demo: N=10, d=32 -> fine; see argv
    ("ebv.max_steps=abc", "'ebv.max_steps' expects int"),
    ("ebv.method=official", "'ebv.alpha' ebv.method official (Algorithm 1) needs ebv.alpha"),
    ("ebv.method=magic", "'ebv.method' must be one of auto, smoothmax"),
    ("eval.test_size=abc", "'eval.test_size' expects int"),
    ("eval.batch_size=0", "'eval.batch_size' must be >= 1"),
    ("optim.lr=.nan", "'optim.lr' expects a finite float"),
    ("optim.lr=-1", "'optim.lr' must be > 0"),
    ("optim.opt=lbfgs", "'optim.opt' must be one of sgd, adamw"),
    ("optim.momentum=1", "'optim.momentum' must be >= 0 and < 1"),
    ("optim.betas=[0.9]", "'optim.betas' expects two numbers"),
    ("scheduler.name=step", "'scheduler.name' must be one of warmup_cosine, constant"),
    ("scheduler.min_lr=1", "'scheduler.min_lr' must be <= optim.lr"),
    ("train.epochs=0", "'train.epochs' must be >= 1"),
    ("train.batch_size=-4", "'train.batch_size' must be >= 1"),
    ("train.amp_level=O9", "'train.amp_level' must be one of auto, O0"),
    ("train.loss_scale=huge", "'train.loss_scale' must be one of"),
    ("train.progress_bar=3", "'train.progress_bar' expects true or false"),
    ("model.tau=[1,", "override 'model.tau=[1,': the value is not valid YAML"),
    ("model.tau", "must look like key.sub=value"),
    ("model.hed=ebv", "did you mean 'model.head'"),
    ("model=3", "config section 'model' must be a mapping"),
    ("seed=!!python/name:os.system", "not valid YAML"),
]


@pytest.mark.parametrize("override,needle", BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_key(capsys, tmp_path, override, needle):
    argv = ["--config", DEMO, f"output_dir={tmp_path / 'run'}", override]
    if override == "ebv.alpha=0.1":
        argv.append("model.embed_dim=4")  # Welch bound for N=10, d=4: sqrt(6/36) = 0.408
    err = _fails(capsys, train_cli.main, argv, needle)
    assert err.count("\n") == 1 and err.startswith("train.py: error: ")
    assert not (tmp_path / "run").exists()  # refused before anything was made


def test_all_problems_are_reported_together_with_their_source(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  tau: 0\n")
    _fails(capsys, train_cli.main, ["--config", str(cfg), "seed=-1", "data.image_size=0"],
           f"'model.tau' must be > 0, got 0.0 (set in {cfg})",
           "'seed' must be >= 0 and <= 4294967295, got -1 (set in override 'seed=-1')",
           "'data.image_size'")


def test_values_are_normalised():
    cfg = load_config(overrides=["optim.lr=1e-4", "mode=GRAPH", "data.recipe=a2", "model.tau=1"])
    assert cfg.optim.lr == 1e-4 and cfg.mode == "graph" and cfg.data.recipe == "A2"
    assert cfg.model.tau == 1.0 and isinstance(cfg.model.tau, float)


def test_schema_covers_every_key_and_the_docs_table_is_current():
    from ebv_ms.config import _walk
    keys = dict(_walk(SCHEMA))
    assert "eval.test_size" in keys and keys["eval.test_size"].type == "int"   # default None
    for key, spec in keys.items():
        spec.check(spec.default)  # every default is valid, every owner's choices import
    assert DEFAULTS["data"]["scale"] == [0.08, 1.0]
    doc = (ROOT / "docs" / "training.md").read_text()
    assert schema_table() in doc, "docs/training.md: paste `python -m ebv_ms.tools.schema` output"


def test_describe_shows_a_range_with_braces_as_written():
    """The range is put into the type text as is (str.format read its braces: KeyError for
    "{x}", "int >= >= {0}" for "{0}")."""
    from ebv_ms.config import Key
    for rng in (">= {0}", "> 0 and < {x}", "{}", "{", "}", "a{range}b"):
        assert Key(0, "int", allowed=rng).describe() == f"int {rng}"
        assert Key(0.0, "float", allowed=rng).describe() == f"float {rng}"
        pair = Key([0, 1], "pair", allowed=rng).describe()
        assert pair == f"two numbers [a, b], a <= b, each {rng}"
        assert Key(None, "int", allowed=rng).describe() == f"int {rng} or null"


# --------------------------------------------------------------------------- files
def test_bad_config_files(capsys, tmp_path):
    bad_utf8 = tmp_path / "bad.yaml"
    bad_utf8.write_bytes(b"seed: 1\nmodel:\n  head: \xff\xfe\n")
    _fails(capsys, train_cli.main, ["--config", str(bad_utf8)], str(bad_utf8), "not UTF-8")
    _fails(capsys, train_cli.main, ["--config", str(tmp_path)], "is a folder")
    _fails(capsys, train_cli.main, ["--config", str(tmp_path / "nope.yaml")], "not found")
    tagged = tmp_path / "tag.yaml"
    tagged.write_text("seed: !!python/object/apply:os.system ['echo owned']\n")
    _fails(capsys, train_cli.main, ["--config", str(tagged)], "not valid YAML")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    _fails(capsys, train_cli.main, ["--config", str(listy)], "top level must be a mapping")


def test_folders_that_are_files_and_missing_files(capsys, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    base = ["--config", DEMO, f"data.path={DEMO}"]
    _fails(capsys, train_cli.main, base + [f"output_dir={a_file}"], "'output_dir'", "is a file")
    run = f"output_dir={tmp_path / 'run'}"
    _fails(capsys, train_cli.main, base + [run, f"ebv.cache_dir={a_file}"], "'ebv.cache_dir'")
    _fails(capsys, train_cli.main, base + [run, f"data.index_cache_dir={a_file}"],
           "'data.index_cache_dir'")
    _fails(capsys, train_cli.main, base + [run, f"ebv.path={tmp_path / 'no.npz'}"],
           "'ebv.path': file not found")
    _fails(capsys, train_cli.main, ["--config", DEMO, run, f"data.path={tmp_path / 'no.zip'}"],
           "'data.path'", "not found")
    assert not (tmp_path / "run").exists()  # a refused run creates no folder
    _fails(capsys, train_cli.main, base + [run, f"model.backbone_checkpoint={tmp_path / 'b'}"],
           "'model.backbone_checkpoint': file not found")


def _mount_tmpfs(path, options):
    """Mount a small tmpfs (root only); skip where mounting is not permitted."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); needs root")


def _umount(path):
    subprocess.run(["umount", str(path)], check=False)


def test_read_only_output_dir(capsys, tmp_path):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes through mode bits: only a read-only mount refuses it
        _mount_tmpfs(ro, "ro,size=64k")
    else:
        ro.mkdir()
        ro.chmod(0o500)
    try:
        _fails(capsys, train_cli.main, ["--config", DEMO, f"data.path={DEMO}",
                                        f"output_dir={ro / 'run'}"],
               "'output_dir': cannot write into", str(ro / "run"))
    finally:
        if os.geteuid() == 0:
            _umount(ro)
        else:
            ro.chmod(0o700)


def test_num_workers_above_the_core_count_is_lowered_with_a_warning(tmp_path, caplog):
    """The 100k config's 8 workers on this machine: MindSpore refuses > cpu_count() workers."""
    from ebv_ms.data import create_dataset
    from ebv_ms.tools.make_synthetic import encode, write_zip
    from tagged_images import tagged_image
    members = {f"top/{s}/c{c}/{i}.png": encode(tagged_image(i, c), ".png")
               for s in ("train", "val") for c in range(2) for i in range(4)}
    z = write_zip(str(tmp_path / "d.zip"), members)
    cores = multiprocessing.cpu_count()
    cfg = load_config(DEMO, [f"data.path={z}", f"data.num_workers={cores + 6}",
                             f"data.index_cache_dir={tmp_path / 'idx'}"])
    with pytest.raises(Exception, match="num_parallel_workers exceeds the boundary"):
        create_dataset(dict(cfg.data), "train", 4, True)  # what happened before the clamp
    with caplog.at_level(logging.WARNING, logger="ebv_ms"):
        cfg = check_run(cfg, training=False)  # the config to run with
    assert cfg.data.num_workers == cores
    assert f"data.num_workers={cores + 6} is more than this machine's {cores} cores" in caplog.text
    ds, _ = create_dataset(dict(cfg.data), "train", 4, True)
    assert next(ds.create_dict_iterator(num_epochs=1))["image"].shape[0] == 4


# --------------------------------------------------------------------------- eval.py
def _ckpt(path, meta=None, config=None):
    """A checkpoint with a valid checksum (so the metadata itself is what is checked)."""
    from ebv_ms.engine.checkpoint import write_entries
    extra = {"w": np.ones(1, np.float32)}
    if meta is not None:
        extra["ebv_ms_meta"] = meta
    if config is not None:
        extra["ebv_ms_config"] = config
    return write_entries(str(path), extra)


GOOD_META = {"format": "ebv-ms/3", "epoch": 1, "global_step": 1, "best_top1": 1.0,
             "best_epoch": 1, "metrics": {}}
CRAFTED = [  # (meta, config) -> text in the message
    ("{not json", None, "damaged checkpoint metadata (JSONDecodeError"),
    (json.dumps({"format": "ebv-ms/3"}), None, "damaged checkpoint metadata (KeyError"),
    ("[1, 2]", None, "the record is a list, not a mapping"),
    (json.dumps({**GOOD_META, "epoch": "abc"}), None, "damaged checkpoint metadata (ValueError"),
    (json.dumps({**GOOD_META, "metrics": [1]}), None, "metrics is a list, not a mapping"),
    (json.dumps(GOOD_META), "- a\n- b\n", "the recorded config is a list, not a mapping"),
    (json.dumps(GOOD_META), "seed: !!python/object/apply:os.system ['echo owned']\n",
     "damaged checkpoint metadata (ConfigError: stored config: not valid YAML: could not "
     "determine a constructor"),
    (json.dumps(GOOD_META), "model: {a: &a [x, x, x, x], b: &b [*a, *a, *a, *a], c: &c [*b, *b, *b, *b],"
     " d: &d [*c, *c, *c, *c], e: &e [*d, *d, *d, *d], f: &f [*e, *e, *e, *e], g: [*f, *f, *f, *f, *f, *f,"
     " *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f]}\n",
     "stored config: YAML aliases expand to"),
    (json.dumps(GOOD_META), "model:\n  tau: 0\n", "'model.tau' must be > 0, got 0.0 (set in "
                                                  "checkpoint config)"),
    (json.dumps(GOOD_META), "model:\n  hed: 0\n", "unknown config key 'model.hed'"),
]


def test_eval_bad_arguments(capsys, tmp_path):
    ck = str(tmp_path / "x.ckpt")
    _fails(capsys, eval_cli.main, ["--ckpt", ck, "--test-size", "-8"], "--test-size", ">= 1")
    _fails(capsys, eval_cli.main, ["--ckpt", ck, "--batch-size", "-1"], "--batch-size", ">= 1")
    _fails(capsys, eval_cli.main, ["--ckpt", ck, "--json", str(tmp_path)], "--json", "is a folder")
    _fails(capsys, eval_cli.main, ["--ckpt", ck, "--json", str(tmp_path / "no" / "e.json")],
           "does not exist")
    _fails(capsys, eval_cli.main, ["--ckpt", ck], "checkpoint not found")


def test_predict_on_plain_weights_takes_the_config_its_error_names(capsys, tmp_path):
    """A plain ``ms.save_checkpoint(net)`` records no config: predict.py says "pass --config" (as
    eval.py and export.py do), and with --config it predicts what the network computes."""
    import mindspore as ms
    import predict as predict_cli
    from PIL import Image
    from ebv_ms.deploy.predicting import eval_transform
    from ebv_ms.ebv import EBVSet
    from ebv_ms.models import create_classifier
    ebv = EBVSet(np.eye(4, 8, dtype=np.float32))
    net = create_classifier("small_cnn", "ebv", 4, ebv=ebv, tau=0.1)
    ms.save_checkpoint(net, str(tmp_path / "plain.ckpt"))
    rng = np.random.default_rng(0)
    imgs = [str(tmp_path / f"{i}.png") for i in range(3)]
    for p in imgs:
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(p)
    (tmp_path / "model.yaml").write_text(
        "model: {backbone: small_cnn, num_classes: 4, embed_dim: 8, tau: 0.1}\n"
        "data: {image_size: 16}\n")
    argv = ["--ckpt", str(tmp_path / "plain.ckpt"), *imgs, "--set", "mode=pynative",
            "--no-progress", "--json", "--topk", "1"]
    _fails(capsys, predict_cli.main, argv, "predict.py: error:", "records no config",
           "pass --config")
    assert predict_cli.main(argv + ["--config", str(tmp_path / "model.yaml")]) == 0
    out = capsys.readouterr().out
    got = [json.loads(line)["topk"][0]["index"] for line in out.splitlines()]
    transform = eval_transform(int(16 / 0.875), 16)
    x = np.stack([transform(np.fromfile(p, np.uint8)) for p in imgs])
    net.set_train(False)
    assert got == net(ms.Tensor(x)).asnumpy().argmax(1).tolist()


@pytest.mark.parametrize("meta,config,needle", CRAFTED, ids=[c[2][:40] for c in CRAFTED])
def test_eval_on_damaged_or_crafted_metadata(capsys, tmp_path, meta, config, needle):
    ck = _ckpt(tmp_path / "c.ckpt", meta, config)
    _fails(capsys, eval_cli.main, ["--ckpt", ck, "--no-progress"], needle)


@pytest.mark.parametrize("meta,config,needle", CRAFTED[:7], ids=[c[2][:40] for c in CRAFTED[:7]])
def test_resume_from_damaged_or_crafted_metadata(capsys, tmp_path, demo_zip, meta, config,
                                                 needle):
    """load_checkpoint itself refuses them, so train.py --resume-from does too."""
    ck = _ckpt(tmp_path / "c.ckpt", meta, config)
    _fails(capsys, train_cli.main, ["--config", DEMO, f"output_dir={tmp_path / 'run'}",
                                    f"data.path={demo_zip}", "--resume-from", ck], needle)


# --------------------------------------------------------------------------- other CLIs, --debug
def test_every_command_line_reports_one_line(capsys, tmp_path):
    from ebv_ms.tools import generate, inspect, params
    from ebv_ms.tools import inspect_data as data_inspect
    from ebv_ms.tools import make_ebv
    _fails(capsys, generate.main, ["-n", "10", "-d", "4", "--alpha", "0.1", "--out",
                                   str(tmp_path / "e.npy")], "generate: error:", "Welch bound")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    _fails(capsys, inspect.main, [str(tmp_path / "bad.npy")], "inspect: error:", "bad.npy")
    _fails(capsys, data_inspect.main, [str(tmp_path / "none.zip")], "data.inspect: error:")
    _fails(capsys, data_inspect.main, [str(tmp_path), "--set", "recipe=A9"], "'data.recipe'")
    _fails(capsys, make_ebv.main, ["--config", str(tmp_path)], "make_ebv: error:", "folder")
    _fails(capsys, params.main, ["--config", DEMO, "model.backbone=bogus"], "params: error:",
           "'model.backbone'")


def test_debug_prints_the_traceback(capsys):
    assert train_cli.main(["--config", DEMO, "--debug", "model.tau=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in validate" in err
    assert err.splitlines()[-1].startswith("train.py: error: config key 'model.tau'")


@pytest.mark.slow
def test_real_command_lines(tmp_path):
    """The same, as the user runs them: separate processes, stderr as printed."""
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", DEMO, "model.tau=0",
                        "seed=abc"], env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "'model.tau'" in r.stderr and "'seed'" in r.stderr
    ck = _ckpt(tmp_path / "c.ckpt", "{not json")
    r = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--ckpt", ck], env=_env(),
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "damaged checkpoint metadata" in r.stderr


# --------------------------------------------------------------------------- full disk
@pytest.mark.slow
def test_full_disk_names_the_file_and_keeps_last_ckpt(tmp_path):
    """A real full disk: a tmpfs that holds one checkpoint and a half, so epoch 2's atomic write
    of last.ckpt cannot complete. Exit 2, one line naming the file; epoch 1's last.ckpt loads."""
    from ebv_ms.tools.make_synthetic import encode, write_zip
    from tagged_images import tagged_image
    from ebv_ms.engine.checkpoint import load_checkpoint
    members = {f"top/{s}/c{c}/{i}.png": encode(tagged_image(i, c), ".png")
               for s in ("train", "val") for c in range(4) for i in range(8)}
    z = write_zip(str(tmp_path / "d.zip"), members)
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=8m")
    try:
        out = disk / "run"
        common = [sys.executable, str(ROOT / "train.py"), "--config", DEMO, f"data.path={z}",
                  f"output_dir={out}", f"ebv.cache_dir={tmp_path / 'ebv'}", "model.num_classes=4",
                  "mode=pynative", "train.batch_size=8", "train.progress_bar=false",
                  "train.keep_best=false"]
        r = subprocess.run(common + ["train.epochs=1"], env=_env(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        size = (out / "last.ckpt").stat().st_size
        st = os.statvfs(disk)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        # room for the logs of one more epoch, not for a second checkpoint beside the first
        subprocess.run(["mount", "-o", f"remount,size={used + size // 2 + 64 * 1024}", str(disk)],
                       check=True)
        r = subprocess.run(common + ["train.epochs=2", "--resume"], env=_env(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
        assert "Traceback" not in r.stderr, r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith("train.py: error: could not write ") and str(out / "last.ckpt") in line
        assert "No space left on device" in line and "last.ckpt is intact" in line
        assert load_checkpoint(str(out / "last.ckpt")).epoch == 1
        assert not [p for p in os.listdir(out) if ".tmp" in p]  # the space was given back
        assert "Traceback" in (out / "train.log").read_text()   # kept for the post-mortem
    finally:
        _umount(disk)


@pytest.mark.parametrize("ext", ["npz", "npy", "pkl"])
def test_full_disk_ebv_write_is_one_line_and_nothing_after_it(tmp_path, ext):
    """An EBV set (the cache of train.py, or generate's --out) on a full disk: one line, exit 2,
    no "Exception ignored ... seek of closed file" traceback from np.savez's open ZipFile."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=32k")
    try:
        r = subprocess.run([sys.executable, "-m", "ebv_ms.tools.generate", "-n", "100", "-d", "200",
                            "--no-progress", "--out", str(disk / f"x.{ext}")], env=_env(),
                           capture_output=True, text=True, timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if "[WARNING]" not in ln]
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith(f"generate: error: could not write {disk / f'x.{ext}'}")
        assert os.listdir(disk) == []
    finally:
        _umount(disk)


# --------------------------------------------------------------------------- the error types
def test_one_base_class():
    from ebv_ms.data.layouts import LayoutError
    from ebv_ms.data.source import DataError
    from ebv_ms.data.zip_index import ArchiveError
    from ebv_ms.ebv import EBVError
    from ebv_ms.engine.checkpoint import CheckpointError
    from ebv_ms.engine.distributed import DistributedError
    from ebv_ms.generation import GenerationError
    from ebv_ms.deploy.exporting import ExportError
    from ebv_ms.deploy.predicting import PredictError
    from ebv_ms.errors import ModelError
    for cls in (ConfigError, EBVError, CheckpointError, DataError, ArchiveError, LayoutError,
                GenerationError, DistributedError, WriteError, ExportError, PredictError,
                ModelError):
        assert issubclass(cls, EBVMSError), cls
    assert issubclass(WriteError, OSError) and issubclass(ConfigError, ValueError)


def test_factories_raise_plain_value_errors_without_yaml_keys():
    from ebv_ms.loss import create_loss
    from ebv_ms.optim import create_optimizer
    from mindspore import nn
    for call in (lambda: create_loss(reduction="avg"), lambda: create_optimizer(nn.Dense(2, 2), "x"),
                 lambda: create_optimizer(nn.Dense(2, 2), momentum=1.5)):
        with pytest.raises(ValueError) as e:
            call()
        assert not isinstance(e.value, EBVMSError) and "optim." not in str(e.value)
    assert create_loss(reduction="none").reduction == "none"  # kept for the loss API


def test_write_error_keeps_the_old_file(tmp_path):
    from ebv_ms.atomic import atomic_path
    target = tmp_path / "last.ckpt"
    target.write_text("epoch 1")
    with pytest.raises(WriteError) as e:
        with atomic_path(target, suffix=".ckpt") as tmp:
            Path(tmp[:-len(".ckpt")] + ".tmp").write_text("half")  # ms.save_checkpoint's own temp
            raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.errno == errno.ENOSPC
    assert str(target) in str(e.value) and "last.ckpt is intact" in str(e.value)
    assert target.read_text() == "epoch 1" and os.listdir(tmp_path) == ["last.ckpt"]


def test_train_api_validates_a_config_built_in_code():
    from ebv_ms.engine.trainer import train
    cfg = load_config().to_dict()  # a validated Config is read-only: edit a plain copy
    cfg["model"]["tau"] = 0.0
    cfg["model"]["hed"] = 1
    with pytest.raises(ConfigError, match=r"'model.hed' is unknown.*'model.tau' must be > 0"):
        train(cfg)


def test_huge_integers_in_a_config_built_in_code_name_the_key():
    """YAML keeps integers past 100 digits as text; code can pass any int. One past float's range
    was an OverflowError, one past 4,300 digits a ValueError from repr(), neither naming the key."""
    from ebv_ms.config import validate
    cfg = load_config().to_dict()
    cfg["optim"]["lr"], cfg["seed"], cfg["data"]["scale"] = 10 ** 400, 10 ** 5000, [0.5, -10 ** 400]
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    for needle in ("'seed' must be >= 0 and <= 4294967295, got <int too long to show>",
                   "'optim.lr' expects a finite float > 0, got inf", "'data.scale' expects a finite"):
        assert needle in str(e.value)
    cfg = load_config().to_dict()
    cfg["model"]["num_classes"] = 10 ** 5000  # valid: a factory refuses what it cannot build
    assert validate(cfg).model.num_classes == 10 ** 5000


def test_a_checkpoint_config_with_a_retired_key_still_loads():
    """Checkpoints of the previous version record train.debug_kill_at_step (now a test callback):
    their config loads without it, while a file or override naming it is an unknown key."""
    from ebv_ms.config import ConfigError, load_config
    cfg = load_config(None, [], base={"train": {"debug_kill_at_step": None, "epochs": 3}})
    assert cfg.train.epochs == 3 and "debug_kill_at_step" not in cfg.train
    with pytest.raises(ConfigError, match="unknown config key 'train.debug_kill_at_step'"):
        load_config(None, ["train.debug_kill_at_step=3"])



def test_newcomer_messages(capsys):
    """train.py without --config names --config; a section's key given at the top level gets
    "did you mean" with its section (issue 20)."""
    err = _fails(capsys, train_cli.main, [], "'data.path' must be set", "--config")
    assert len(err.strip().splitlines()) == 1
    _fails(capsys, train_cli.main, ["--config", DEMO, "epochs=3"], "did you mean 'train.epochs'")
    _fails(capsys, train_cli.main, ["--config", DEMO, "model.lr=3"], "did you mean 'optim.lr'")


def test_validated_config_is_read_only_and_check_run_leaves_it_alone():
    cfg = load_config(None, ["data.num_workers=64", f"data.path={DEMO}", "output_dir=/tmp"])
    with pytest.raises(TypeError, match="read-only"):
        cfg.model.tau = 1.0
    with pytest.raises(TypeError, match="read-only"):
        cfg["seed"] = 1
    ran = check_run(cfg, training=False)
    assert cfg.data.num_workers == 64 and ran.data.num_workers == multiprocessing.cpu_count()


def test_make_demo_into_a_read_only_folder_is_one_line(capsys, tmp_path):
    """The demo writer reports through run_cli like every command line (it ended in a traceback)."""
    from ebv_ms.tools.make_demo import main
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "ro,size=64k")
    try:
        _fails(capsys, main, ["--out", str(ro / "d")], "make_demo: error:", "Read-only file system")
    finally:
        _umount(ro)


def test_own_mindcv_classifiers_are_not_backbones():
    """ebv_resnet50 is in mindcv's registry once ebv_ms.models is imported, but it is a whole
    classifier: refused as model.backbone whatever was imported before (not later, after an EBV
    set was made for nothing)."""
    import ebv_ms.models  # noqa: F401  (registers ebv_resnet50 / ebv_swin_tiny with mindcv)
    import mindcv
    assert "ebv_resnet50" in mindcv.list_models()
    with pytest.raises(ConfigError, match="'model.backbone' 'ebv_resnet50' is neither"):
        load_config(DEMO, ["model.backbone=ebv_resnet50"])

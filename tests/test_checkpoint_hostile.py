"""Checkpoints from the internet: crafted structure, damaged bytes, wrong weights, crafted
metadata and recipes, paths out of the run folder, damaged run files. Every tool (eval, predict,
export, train --resume) ends with a result or one line and exit 2: never a signal, never a
traceback. A real 1-epoch train.py run on a small demo archive gives the checkpoint."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mindspore.train.checkpoint_pb2 import Checkpoint

from conftest import run_script
from memstat import reset_peak, status_mb
from demo_data import small_demo_zip

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo_cpu.yaml"
SMALL = ["train.batch_size=16", "eval.batch_size=40", "data.num_workers=1",
         "train.progress_bar=false", "model.backbone_kwargs={widths: [4, 4, 8]}"]


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    """train.py run in-process leaves the 'ebv_ms' logger writing to this test's captured
    stderr; the next test would log into a closed stream."""
    yield
    import logging
    log = logging.getLogger("ebv_ms")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory, demo_zip):
    """A finished 1-epoch run (its EBV set in a file next to the checkpoints, as at 100k), a
    work folder holding a copy of its classes.json and EBV file, and one image."""
    import zipfile
    tmp = tmp_path_factory.mktemp("hostile")
    data = small_demo_zip(demo_zip, tmp)
    out = tmp / "run"
    common = ["--config", str(DEMO), f"data.path={data}", f"ebv.cache_dir={tmp / 'ebv'}", *SMALL]
    r = run_script("train.py", common + [f"output_dir={out}", "train.epochs=1",
                                         "train.ckpt_inline_ebv_mb=0"], tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    work = tmp / "work"
    work.mkdir()
    for f in out.iterdir():
        if f.name == "classes.json" or f.suffix == ".npz":
            shutil.copy(f, work / f.name)
    with zipfile.ZipFile(data) as z:
        name = next(n for n in z.namelist() if n.endswith(".jpg"))
        (tmp / "img.jpg").write_bytes(z.read(name))
    return {"tmp": tmp, "out": out, "work": work, "data": data, "common": common,
            "ckpt": out / "last.ckpt", "img": tmp / "img.jpg"}


def _edit_first_weight(src: Path, dst: Path, dims=None, label=None, content=None) -> str:
    """The checkpoint with its first tensor's dims / dtype label / bytes replaced (protobuf level)."""
    msg = Checkpoint()
    msg.ParseFromString(src.read_bytes())
    t = msg.value[0].tensor
    if dims is not None:
        del t.dims[:]
        t.dims.extend(dims)
    if label is not None:
        t.tensor_type = label
    if content is not None:
        t.tensor_content = content
    dst.write_bytes(msg.SerializeToString())
    return str(dst)


def _crafted(base) -> list:
    w, ck = base["work"], base["ckpt"]
    first = Checkpoint()
    first.ParseFromString(ck.read_bytes())
    dims = list(first.value[0].tensor.dims)  # [4, 3, 3, 3]
    return [
        _edit_first_weight(ck, w / "more.ckpt", dims=[dims[0] * 64] + dims[1:]),  # > its bytes
        _edit_first_weight(ck, w / "zero.ckpt", dims=[0, 27]),
        _edit_first_weight(ck, w / "neg.ckpt", dims=[-1, 27]),
        _edit_first_weight(ck, w / "label.ckpt", label="Float33"),
        _edit_first_weight(ck, w / "str.ckpt", label="str"),
        _edit_first_weight(ck, w / "dims201.ckpt", dims=[1] * 201),
        _edit_first_weight(ck, w / "huge.ckpt", dims=[2 ** 31, 2 ** 31, 2 ** 31]),
        _edit_first_weight(ck, w / "short.ckpt", content=b"\0" * 7),
    ]


TOOLS = {
    "eval": lambda b: ["--ckpt", "{ckpt}", "--no-progress", "mode=pynative"],
    "predict": lambda b: ["--ckpt", "{ckpt}", str(b["img"]), "--no-progress",
                          "--set", "mode=pynative"],
    "export": lambda b: ["--ckpt", "{ckpt}", "--out", str(b["work"] / "exp"), "mode=pynative"],
    "train": lambda b: [*b["common"], f"output_dir={b['work'] / 'resumed'}", "train.epochs=1",
                        "mode=pynative", "--resume-from", "{ckpt}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("tool,mutants", [("eval", 900), ("predict", 400), ("export", 300),
                                          ("train", 400)])
def test_crafted_and_mutated_checkpoints_never_crash_a_tool(base, tool, mutants):
    """The crafted tensors that made MindSpore's loader copy past its buffer (SIGSEGV in eval.py,
    malloc aborts in predict/export, train --resume) are refused with one line naming the file;
    then thousands of mutants (bit flips, byte runs, truncations, insertions, dims / dtype edits,
    and re-checksummed files with wrong shapes, dtypes, NaN, names, metadata and config values)
    end in exit 0 or 2, never a signal or a traceback. Many mutants per process (CI budget)."""
    crafted = _crafted(base)
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3")
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "ckpt_fuzz.py"), tool,
                        str(base["ckpt"]), str(base["work"]), str(mutants), "17", *crafted, "--",
                        *map(str, TOOLS[tool](base))], cwd=base["tmp"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode} (a signal if < 0)\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    for rec in (x for x in lines if "file" in x):
        err = rec["stderr"].strip().splitlines()
        assert rec["rc"] == 2 and "Traceback" not in rec["stderr"], rec
        assert err[-1].startswith(f"{tool}.py: error: {rec['file']}: not a usable checkpoint"), rec
    assert len([x for x in lines if "file" in x]) == len(crafted)
    summary = lines[-1]
    assert summary.get("summary") and summary["bad"] == 0, [x for x in lines if "n" in x][:5]
    assert summary["count"] == mutants and summary["codes"].get("2", 0) > 0.8 * mutants


def _entries(path):
    from ebv_ms.ckpt_file import read_entries
    e = read_entries(str(path))
    e.pop("ebv_ms_sha256")
    return e


def _signed(dst, entries, meta=None, config=None):
    """A consistent (re-checksummed) checkpoint with edited contents."""
    from ebv_ms.engine.checkpoint import write_entries
    e = dict(entries)
    if meta is not None:
        m = json.loads(e["ebv_ms_meta"])
        meta(m)
        e["ebv_ms_meta"] = json.dumps(m)
    if config is not None:
        e["ebv_ms_config"] = config(e["ebv_ms_config"])
    return write_entries(str(dst), e)


def test_a_checksum_entry_of_numbers_is_refused(tmp_path):
    """Was a numpy ValueError (an array compared with text), a traceback in every tool."""
    from ebv_ms.engine.checkpoint import CheckpointError, load_checkpoint
    w = dict(tensor_type="Float32", dims=[3], tensor_content=np.zeros(3, np.float32).tobytes())
    path = tmp_path / "c.ckpt"
    path.write_bytes(Checkpoint(value=[dict(tag=t, tensor=w) for t in ("w", "ebv_ms_sha256")]
                                ).SerializeToString())
    with pytest.raises(CheckpointError, match=f"{path}: checksum mismatch"):
        load_checkpoint(str(path))


def test_the_checksum_is_of_the_entries_as_written(tmp_path):
    """write_entries signs its entries in their order; load_checkpoint re-sorted them (the record
    and config last), so a file written with a weight after the record was 'damaged'."""
    from ebv_ms.engine.checkpoint import load_checkpoint, write_entries
    meta = {"format": "ebv-ms/3", "epoch": 1, "global_step": 1, "best_top1": 1.0,
            "best_epoch": 1, "metrics": {}}
    path = write_entries(str(tmp_path / "c.ckpt"), {"a": np.ones(2, np.float32),
                                                    "ebv_ms_meta": json.dumps(meta),
                                                    "b": np.zeros(3, np.int32)})
    state = load_checkpoint(path)
    assert (state.epoch, sorted(state.params)) == (1, ["a", "b"])


def test_random_bit_flips_in_the_weights_are_all_refused(base, tmp_path):
    """Before: 6 of 48 random flips loaded silently and scored 10-66% instead of 65%."""
    from ebv_ms.engine.checkpoint import CheckpointError, load_checkpoint
    data = base["ckpt"].read_bytes()
    weights = [v for k, v in _entries(base["ckpt"]).items() if isinstance(v, np.ndarray)]
    spans = [(data.find(w.tobytes()), w.nbytes) for w in weights if w.nbytes >= 16]
    assert spans and all(s >= 0 for s, _ in spans)
    rng = np.random.default_rng(3)
    for i in range(200):
        start, size = spans[rng.integers(len(spans))]
        bit = int(rng.integers(size * 8))
        b = bytearray(data)
        b[start + bit // 8] ^= 1 << (bit % 8)
        p = tmp_path / f"f{i % 4}.ckpt"
        p.write_bytes(bytes(b))
        with pytest.raises(CheckpointError, match=f"{p}: checksum mismatch"):
            load_checkpoint(str(p))
    load_checkpoint(str(base["ckpt"]))  # the undamaged file loads


def test_non_finite_weights_are_refused_on_load_and_resume(base, tmp_path, capsys):
    import eval as eval_cli
    import train as train_cli
    e = _entries(base["ckpt"])
    name = next(k for k, v in e.items() if isinstance(v, np.ndarray) and v.ndim == 4)
    e[name] = np.full_like(e[name], np.nan)  # an all-NaN first layer, checksum made to fit
    ck = _signed(tmp_path / "nan.ckpt", e)
    assert eval_cli.main(["--ckpt", ck, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"eval.py: error: {ck}: tensor '{name}' holds NaN or inf; these weights "
                           "are unusable (a diverged or damaged run): use an earlier checkpoint")
    assert train_cli.main([*base["common"], f"output_dir={tmp_path / 'r'}", "--resume-from",
                           ck]) == 2
    assert f"{ck}: tensor '{name}' holds NaN" in capsys.readouterr().err
    e[name] = np.where(np.arange(e[name].size).reshape(e[name].shape) == 5, np.inf, 0.0
                       ).astype(np.float32)
    ck = _signed(tmp_path / "inf.ckpt", e)
    assert eval_cli.main(["--ckpt", ck, "--no-progress"]) == 2
    assert "holds NaN or inf" in capsys.readouterr().err


def test_an_empty_checkpoint_is_named_empty_by_every_tool(base, tmp_path, capsys):
    """Was "records no config (not written by train.py); pass --config" (eval, predict, export)
    and "a plain weights file" (train.py --resume-from) for a file that holds nothing."""
    import eval as eval_cli
    import export as export_cli
    import predict as predict_cli
    import train as train_cli
    tools = {"eval": eval_cli, "predict": predict_cli, "export": export_cli, "train": train_cli}
    meta_only = Checkpoint(value=[dict(tag="ebv_ms_meta", tensor=dict(
        tensor_type="str", dims=[0], tensor_content=np.array("{}").tobytes()))])
    bodies = {"zero": b"", "no_values": Checkpoint().SerializeToString(),
              "crc_only": b"crc_num" + b"0" * 10,
              "strings_only": meta_only.SerializeToString()}
    for kind, body in bodies.items():
        ck = tmp_path / f"{kind}.ckpt"
        ck.write_bytes(body)
        for tool, cli in tools.items():
            argv = [a.replace("{ckpt}", str(ck)) for a in TOOLS[tool](base)]
            assert cli.main(argv) == 2, (kind, tool)
            err = capsys.readouterr().err
            assert "Traceback" not in err and "config" not in err, (kind, tool, err)
            assert err.strip().splitlines()[-1] == (
                f"{tool}.py: error: {ck}: not a usable checkpoint (empty: it holds no weight "
                "tensors); use another checkpoint (last.ckpt / best.ckpt of the run)"), err
    run = tmp_path / "run"  # train.py --resume finding an empty last.ckpt
    run.mkdir()
    (run / "last.ckpt").write_bytes(b"")
    assert train_cli.main([*base["common"], f"output_dir={run}", "--resume"]) == 2
    assert "last.ckpt: not a usable checkpoint (empty" in capsys.readouterr().err


def test_a_replaced_or_permuted_classes_json_is_refused(base, tmp_path):
    """The class names travel in the checkpoint: a classes.json beside it must repeat them."""
    from ebv_ms.deploy import load_network
    from ebv_ms.engine.checkpoint import CheckpointError
    run = tmp_path / "run"
    shutil.copytree(base["out"], run)
    cfg, net, names = load_network(str(run / "last.ckpt"), ["mode=pynative"])
    assert names == [str(i) for i in range(10)]
    doc = json.loads((run / "classes.json").read_text())
    for edit in (lambda n: n[::-1], lambda n: n[1:] + n[:1], lambda n: [f"c{x}" for x in n]):
        (run / "classes.json").write_text(json.dumps({**doc, "class_names": edit(names)}))
        with pytest.raises(CheckpointError, match="classes.json does not list the 10 classes"):
            load_network(str(run / "last.ckpt"), ["mode=pynative"])
    (run / "classes.json").unlink()  # none beside it: the checkpoint's own names
    assert load_network(str(run / "last.ckpt"), ["mode=pynative"])[2] == names


def test_eval_refuses_data_whose_classes_are_not_the_checkpoints(base, tmp_path, capsys):
    import eval as eval_cli
    other = small_demo_zip(Path(base["data"]), tmp_path, rename={"3": "3x"}, per_class_train=1,
                           per_class_val=4)
    assert eval_cli.main(["--ckpt", str(base["ckpt"]), "--no-progress", "mode=pynative",
                          f"data.path={other}"]) == 2
    err = capsys.readouterr().err
    assert "class 3 is '3' there and '3x' in the data" in err and str(base["ckpt"]) in err


def _meta_edit(path, value):
    def edit(m):
        node = m
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


CRAFTED_META = [  # (edit of the JSON record, text in the one-line message)
    (_meta_edit(["ebv", "file"], 5), "is not a plain file name"),
    (_meta_edit(["ebv", "file"], ["a"]), "is not a plain file name"),
    (_meta_edit(["ebv", "file"], "../../x.npz"), "is not a plain file name"),
    (_meta_edit(["ebv", "file"], "/etc/passwd"), "is not a plain file name"),
    (_meta_edit(["ebv", "num_classes"], "abc"), "'abc' is not a whole number"),
    (_meta_edit(["ebv", "num_classes"], 10 ** 9), "10 class names recorded for an EBV set of "
                                                   "N=1000000000"),
    (_meta_edit(["ebv", "checksum"], 7), "the EBV record is not a mapping with a checksum"),
    (_meta_edit(["class_names"], "0123456789"), "class_names is not a list of strings"),
    (_meta_edit(["metrics"], {"top1": "high"}), "metrics.top1 is not a number"),
    (_meta_edit(["epoch"], 2 ** 70), "is not a whole number"),
]


@pytest.mark.parametrize("edit,needle", CRAFTED_META, ids=[n[:30] for _, n in CRAFTED_META])
def test_crafted_metadata_is_one_line(base, tmp_path, capsys, edit, needle):
    import eval as eval_cli
    ck = _signed(tmp_path / "c.ckpt", _entries(base["ckpt"]), meta=edit)
    assert eval_cli.main(["--ckpt", ck, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"eval.py: error: {ck}: damaged checkpoint metadata") and needle in err, err


@pytest.mark.parametrize("ebv", ["[path, seed]", "seed", "'alpha path'"])
def test_a_crafted_ebv_section_is_one_line_on_resume(base, tmp_path, capsys, ebv):
    """Was a TypeError traceback: 'seed' in a list or string, then recorded['seed']."""
    import yaml
    import train as train_cli
    ck = _signed(tmp_path / "c.ckpt", _entries(base["ckpt"]), config=lambda text: yaml.safe_dump(
        {**yaml.safe_load(text), "ebv": yaml.safe_load(ebv)}, sort_keys=False))
    assert train_cli.main([*base["common"], f"output_dir={tmp_path / 'r'}", "--resume-from",
                           ck]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1] == (
        f"train.py: error: {ck}: damaged checkpoint metadata (its config's 'ebv' is a "
        f"{'list' if ebv.startswith('[') else 'str'}, not a mapping)"), err


@pytest.mark.parametrize("n,d,method,cfg_nd,needle", [
    (20000, 20000, "closed_form:orthonormal", (20000, 20000),  # the 9.8 GB case
     "its EBV recipe (N=20000, d=20000) does not fit the network it holds (no weight in it "
     "projects to d=20000)"),
    (20000, 20000, "closed_form:orthonormal", None,
     "records 20000 class names but model.num_classes=10"),
    (10, 32 * 4 ** 8, "closed_form:kerdock", (10, 32),
     "its EBV recipe (N=10, d=2097152) does not fit the network it holds (the config's"),
])
def test_a_recipe_must_fit_the_network_it_comes_with(base, tmp_path, capsys, n, d, method,
                                                    cfg_nd, needle, monkeypatch):
    """A recorded recipe is rebuilt only when N and d are the network's (its config, and d the
    out-dim of its own projection weight): refused before anything is built."""
    import eval as eval_cli
    monkeypatch.chdir(tmp_path)  # eval's default ebv_cache/ is the cwd's, not the repo's (the quick start fills that)
    folder = tmp_path / "alone"  # no EBV file next to it: the recipe would be used
    folder.mkdir()

    def meta(m):
        m["ebv"].update(num_classes=n, dim=d, method=method, seed=0, file=None)
        m["class_names"] = [str(i) for i in range(n)]

    def config(text):
        if cfg_nd is None:
            return text
        return text.replace("num_classes: 10", f"num_classes: {cfg_nd[0]}").replace(
            "embed_dim: 32", f"embed_dim: {cfg_nd[1]}")
    ck = _signed(folder / "c.ckpt", _entries(base["ckpt"]), meta=meta, config=config)
    before = reset_peak()
    assert eval_cli.main(["--ckpt", ck, "--no-progress", "mode=pynative"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"eval.py: error: {ck}") and needle in err, err
    grown_mb = status_mb("VmHWM") - before
    assert grown_mb < 200, grown_mb


def test_recorded_paths_never_lead_out_of_the_checkpoints_folder(base, tmp_path, capsys, monkeypatch):
    """The run's EBV file outside the checkpoint's folder: a recorded '../' name or the recorded
    config's ebv.path are not followed; the user's --ebv is."""
    import eval as eval_cli
    monkeypatch.chdir(tmp_path)  # eval's default ebv_cache/ is the cwd's, not the repo's (the quick start fills that)
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    npz = next(base["out"].glob("ebv_*.npz"))
    shutil.copy(npz, tmp_path / npz.name)                    # ../../ebv_...npz from the ckpt
    e = _entries(base["ckpt"])
    ck = _signed(folder / "c.ckpt", e, meta=_meta_edit(["ebv", "file"], f"../../{npz.name}"))
    assert eval_cli.main(["--ckpt", ck, "--no-progress"]) == 2
    assert "is not a plain file name" in capsys.readouterr().err
    # the recorded config names the file by an absolute path: not followed either
    ck = _signed(folder / "d.ckpt", e, meta=_meta_edit(["ebv", "method"], "unknown"),
                 config=lambda t: t.replace("path: null", f"path: {tmp_path / npz.name}"))
    assert eval_cli.main(["--ckpt", ck, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was not found" in err and "--ebv" in err, err
    assert eval_cli.main(["--ckpt", ck, "--no-progress", "mode=pynative",
                          "--ebv", str(tmp_path / npz.name)]) == 0
    capsys.readouterr()


def test_an_export_sidecar_cannot_point_elsewhere_and_damage_is_one_line(base, tmp_path, capsys):
    import predict as predict_cli
    import export as export_cli
    assert export_cli.main(["--ckpt", str(base["ckpt"]), "--out", str(tmp_path / "m")]) == 0
    side = tmp_path / "m.mindir.json"
    good = json.loads(side.read_text())
    secret = tmp_path.parent / "elsewhere.mindir"
    shutil.copy(tmp_path / "m.mindir", secret)
    cases = [
        ({**good, "model": "../elsewhere.mindir"}, "is not a file inside its folder"),
        ({**good, "model": str(secret)}, "is not a file inside its folder"),
        ([good], "not an ebv-ms export description"),
        ({**good, "class_names": good["class_names"][:-1]}, "the class names are not 10 strings"),
        ({**good, "input": {**good["input"], "shape": [1, 3, "8", 8]}}, "positive whole numbers"),
        ({**good, "input": {**good["input"], "crop": None}}, "positive whole numbers"),
    ]
    for doc, needle in cases:
        side.write_text(json.dumps(doc))
        assert predict_cli.main(["--model", str(tmp_path / "m.mindir"), str(base["img"])]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and str(side) in err, err
    side.write_text(json.dumps(good)[:100])  # truncated
    assert predict_cli.main(["--model", str(tmp_path / "m.mindir"), str(base["img"])]) == 2
    assert "damaged export description (JSONDecodeError" in capsys.readouterr().err


def test_damaged_run_files_are_one_line(base, tmp_path, capsys):
    import predict as predict_cli
    import train as train_cli
    run = tmp_path / "run"
    cases = [
        ("metrics.jsonl", '[1, 2]\n', "metrics.jsonl line 1 is not an epoch record"),
        ("metrics.jsonl", '{"epoch": "one"}\n', "metrics.jsonl line 1 is not an epoch record"),
        ("classes.json", '["0", "1"]', "classes.json is unreadable (TypeError"),
        ("classes.json", '{"class_names": ["0", "1"', "classes.json is unreadable (JSONDecodeError"),
    ]
    for name, text, needle in cases:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base["out"], run)
        (run / name).write_text(text)
        rc = train_cli.main([*base["common"], f"output_dir={run}", "train.epochs=1",
                             "mode=pynative", "--resume"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
        if name == "classes.json":
            assert predict_cli.main(["--ckpt", str(run / "last.ckpt"), str(base["img"])]) == 2
            assert needle in capsys.readouterr().err


def test_a_deleted_lock_file_does_not_release_the_run_folder(tmp_path):
    """Two processes: the first holds the folder; deleting .run.lock lets no second one in."""
    code = ("import sys, time; sys.path.insert(0, {root!r})\n"
            "from ebv_ms.engine.run_folder import RunLock, RunFolderError\n"
            "try:\n    lock = RunLock({folder!r}).acquire()\n"
            "except RunFolderError as e:\n    print('REFUSED', e, flush=True); sys.exit(3)\n"
            "print('HELD', flush=True); time.sleep(float(sys.argv[1]))\n")
    prog = code.format(root=str(ROOT), folder=str(tmp_path / "run"))
    first = subprocess.Popen([sys.executable, "-c", prog, "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "HELD"
        (tmp_path / "run" / ".run.lock").unlink()
        second = subprocess.run([sys.executable, "-c", prog, "0"], capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 3 and "in use by another run" in second.stdout, second.stdout
    finally:
        first.kill()
        first.wait()
    third = subprocess.run([sys.executable, "-c", prog, "0"], capture_output=True, text=True,
                           timeout=60)
    assert third.returncode == 0 and "HELD" in third.stdout  # freed when the holder is gone


@pytest.mark.slow
def test_resume_prints_no_mindspore_not_loaded_warning(base, tmp_path):
    """Before: every --resume printed "For 'load_param_into_net', 12 parameters in the 'net'
    are not loaded" although the resume was right."""
    run = tmp_path / "run"
    shutil.copytree(base["out"], run)
    r = run_script("train.py", [*base["common"], f"output_dir={run}", "train.epochs=2",
                                "--resume"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "resumed from" in out and "not loaded" not in out and "load_param_into_net" not in out
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2]

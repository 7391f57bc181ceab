"""Mutated checkpoints through a real command line, many per process (tests/test_checkpoint_hostile.py).

    python tests/ckpt_fuzz.py MODE BASE.ckpt WORKDIR COUNT SEED [FILE ...] -- CLI ARGUMENTS (with {ckpt})

Runs MODE's ``main`` on each FILE (printing one JSON line each: exit status and stderr), then writes COUNT mutants of BASE.ckpt, one at a time, to WORKDIR/m.ckpt (beside it: whatever the
caller put there, e.g. classes.json and the EBV file) and runs MODE's ``main`` (eval, predict,
export, train) on each, in this process. Prints one JSON line per mutant whose outcome is not
"exit 0 or 2 without a traceback", then a summary line. A crash (a signal) ends the process:
the caller sees its exit status.
"""
import contextlib
import io
import json
import os
import sys
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from mindspore.train.checkpoint_pb2 import Checkpoint  # noqa: E402

from ebv_ms.ckpt_file import read_entries  # noqa: E402
from ebv_ms.engine.checkpoint import write_entries  # noqa: E402

LABELS = ["Float32", "Float16", "Float64", "Int8", "Int32", "Int64", "UInt8", "Bool", "str",
          "BFloat16", "Int4", "Float33", "", "float32", "U" * 300]
DIMS = [[0, 27], [0], [-1], [-5, 3], [2 ** 40, 2 ** 40], [1] * 201, [2 ** 62], [3, 0, 4],
        [1 << 31, 1 << 31, 1 << 31]]
JUNK = ["abc", -1, 10 ** 9, 4 ** 9, 2 ** 70, 1.5, None, [], ["a"], {"x": 1}, True, "../../x.npz",
        "/etc/passwd", "", "nan", float("inf"), [1] * 50, "\n\x1b[31m"]


def raw_mutant(data: bytes, rng) -> bytes:
    """Bit flips, byte runs, truncation, insertion, or a protobuf-level dims / dtype edit."""
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(len(b) * 8)
            b[i // 8] ^= 1 << (i % 8)
    elif kind == 1:
        n = int(rng.integers(1, 65))
        i = int(rng.integers(len(b)))
        fill = rng.choice([0, 255, -1])
        run = rng.integers(0, 256, n, dtype=np.uint8).tobytes() if fill < 0 else bytes([fill]) * n
        b[i:i + n] = run[: len(b) - i]
    elif kind == 2:
        return bytes(b[: rng.integers(len(b))])
    elif kind == 3:
        i = int(rng.integers(len(b)))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 33)), dtype=np.uint8).tobytes()
    else:
        msg = Checkpoint()
        msg.ParseFromString(data)
        v = msg.value[int(rng.integers(len(msg.value)))]
        if kind == 4:
            del v.tensor.dims[:]
            v.tensor.dims.extend(DIMS[rng.integers(len(DIMS))] if rng.random() < 0.7 else
                                 [int(x) for x in rng.integers(-3, 70, rng.integers(1, 5))])
        else:
            v.tensor.tensor_type = LABELS[rng.integers(len(LABELS))]
        return msg.SerializeToString()
    return bytes(b)


def _junk(rng):
    return JUNK[rng.integers(len(JUNK))]


def signed_mutant(entries: dict, rng) -> dict:
    """A consistent file (valid checksum) whose content is wrong: shapes, dtypes, NaN, names,
    metadata values, config values."""
    import yaml
    e = dict(entries)
    names = [k for k, v in e.items() if not isinstance(v, str)]
    kind = rng.integers(7)
    k = names[rng.integers(len(names))]
    if kind == 0:
        a = e[k]
        e[k] = a.reshape(-1)[: max(1, a.size // 2)] if rng.random() < 0.5 else np.concatenate(
            [a.reshape(-1), a.reshape(-1)])
    elif kind == 1:
        e[k] = e[k].astype([np.float16, np.float64, np.int32, np.uint8, np.bool_][rng.integers(5)])
    elif kind == 2:
        a = e[k].astype(np.float32).copy()
        a.reshape(-1)[rng.integers(a.size)] = [np.nan, np.inf, -np.inf][rng.integers(3)]
        e[k] = a
    elif kind == 3:
        e[k + ("_x" if rng.random() < 0.5 else "")] = e.pop(k)
    elif kind == 4:
        meta = json.loads(e["ebv_ms_meta"])
        target = meta.get("ebv") if rng.random() < 0.6 and meta.get("ebv") else meta
        keys = list(target)
        target[keys[rng.integers(len(keys))]] = _junk(rng)
        e["ebv_ms_meta"] = json.dumps(meta)
    elif kind == 5:
        meta = json.loads(e["ebv_ms_meta"])
        cls = meta.get("class_names") or []
        if cls:
            i, j = rng.integers(len(cls), size=2)
            cls[i], cls[j] = cls[j], _junk(rng) if rng.random() < 0.3 else cls[i]
            meta["class_names"] = cls if rng.random() < 0.8 else cls[:-1]
        e["ebv_ms_meta"] = json.dumps(meta)
    else:
        cfg = yaml.safe_load(e["ebv_ms_config"])
        sec = list(cfg)[rng.integers(len(cfg))]
        if isinstance(cfg[sec], dict) and cfg[sec]:
            keys = list(cfg[sec])
            cfg[sec][keys[rng.integers(len(keys))]] = _junk(rng)
        else:
            cfg[sec] = _junk(rng)
        e["ebv_ms_config"] = yaml.safe_dump(cfg) if rng.random() < 0.9 else (
            "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
                f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
                for p, c in zip("abcdefgh", "bcdefghi")))
    e.pop("ebv_ms_sha256", None)
    return e


def main(argv):
    mode, base, work, count, seed = argv[:5]
    files, cli_args = argv[5:argv.index("--")], argv[argv.index("--") + 1:]
    import eval as eval_cli
    import export as export_cli
    import predict as predict_cli
    import train as train_cli
    entry = {"eval": eval_cli.main, "predict": predict_cli.main, "export": export_cli.main,
             "train": train_cli.main}[mode]
    import gc
    gc.collect()
    gc.freeze()  # the CLIs' own gc.collect() then skips MindSpore's many module objects
    rng = np.random.default_rng(int(seed))
    data = open(base, "rb").read()
    entries = read_entries(base)
    target = os.path.join(work, "m.ckpt")
    out = sys.stdout
    bad, codes = [], {}

    def run(path: str):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = entry([a.replace("{ckpt}", path) for a in cli_args])
            except SystemExit as exc:
                rc = exc.code
            except BaseException:  # noqa: BLE001 - what the test is looking for
                rc, _ = "exception", traceback.print_exc(file=err)
        return rc, err.getvalue()

    for path in files:
        rc, text = run(path)
        print(json.dumps({"file": path, "rc": rc, "stderr": text[-3000:]}), file=out, flush=True)
    for n in range(int(count)):
        if os.path.exists(target):
            os.chmod(target, 0o644)
            os.remove(target)
        signed = n % 8 == 7  # one in eight: consistent files with wrong content
        if signed:
            write_entries(target, signed_mutant(entries, rng))
        else:
            with open(target, "wb") as f:
                f.write(raw_mutant(data, rng))
        rc, text = run(target)
        codes[str(rc)] = codes.get(str(rc), 0) + 1
        if rc not in (0, 2) or "Traceback" in text:
            bad.append({"n": n, "signed": signed, "rc": rc, "stderr": text[-1500:]})
            print(json.dumps(bad[-1]), file=out, flush=True)
    print(json.dumps({"summary": True, "count": int(count), "codes": codes, "bad": len(bad)}),
          file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

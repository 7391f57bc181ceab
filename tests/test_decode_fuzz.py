"""Fuzz: mutated JPEGs and PNGs through the training decode path must never kill the process.

MindSpore 2.10's C++ JPEG decoder dies with SIGSEGV on JPEGs libjpeg refuses (e.g. a scan that
selects an undefined Huffman table: one byte from a valid file). The pipeline runs in a
subprocess, so a crash fails the test instead of taking pytest down; every mutant OpenCV
cannot decode must be reported as a bad sample, and no clean image may be.
"""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ebv_ms.tools.make_synthetic import write_zip

pytestmark = pytest.mark.slow  # see README 'Tests and CI'

REPO = Path(__file__).resolve().parents[1]

_RUN = """
import json, sys
from ebv_ms.data import create_dataset
out = {}
for recipe, training in (("A0", True), ("eval", False)):
    ds, info = create_dataset({"path": sys.argv[1], "image_size": 16, "eval_resize": 16},
                              "train", 50, training, recipe=recipe, num_workers=2,
                              drop_remainder=False)
    rows = sum(b["label"].shape[0] for b in ds.create_dict_iterator(num_epochs=1, output_numpy=True))
    out[recipe] = {"rows": rows, "n": info.num_samples,
                   "bad": [info.source.name(i) for i in info.bad.indices(0)],
                   "report": info.bad_report(0, limit=10 ** 6)}
print(json.dumps(out))
"""


def _bases():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:24, :32]
    img = np.stack([(x * 7 + y * 3) % 256, (y * 9) % 256, (x * y) % 256], -1).astype(np.uint8)
    img = cv2.add(img, (rng.random(img.shape) * 60).astype(np.uint8))
    q = cv2.IMWRITE_JPEG_QUALITY
    return [(".jpg", cv2.imencode(".jpg", img, [q, 90])[1].tobytes()),
            (".jpg", cv2.imencode(".jpg", img, [q, 80, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()),
            (".jpg", cv2.imencode(".jpg", img[..., 0], [q, 85])[1].tobytes()),
            (".png", cv2.imencode(".png", img)[1].tobytes())]


def _undefined_huffman_table(jpeg: bytes) -> bytes:
    """The issue's example: one byte changed so a scan selects DC/AC tables 2/3 (never defined)."""
    b = bytearray(jpeg)
    sos = b.find(b"\xff\xda")
    b[sos + 6] = 0x23
    return bytes(b)


def test_mutated_images_never_crash_training_and_are_reported(tmp_path):
    rng = np.random.default_rng(2024)
    bases = _bases()
    members, mutants, clean = {}, set(), set()
    for i in range(2500):
        ext, data = bases[i % len(bases)]
        name = f"f/train/c{i % 2}/{i:05d}{ext}"
        if i % 5 == 0:
            clean.add(name)
        else:
            b = bytearray(data)
            for _ in range(1 + int(rng.integers(0, 3))):
                hi = min(len(b), 640) if rng.random() < 0.6 else len(b)
                b[int(rng.integers(0, hi))] = int(rng.integers(0, 256))
            data = bytes(b)
            mutants.add(name)
        members[name] = data
    members["f/train/c0/99999.jpg"] = _undefined_huffman_table(bases[0][1])
    mutants.add("f/train/c0/99999.jpg")
    undecodable = {n for n, d in members.items()
                   if cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) is None}
    assert "f/train/c0/99999.jpg" in undecodable and len(undecodable) > 300
    path = write_zip(str(tmp_path / "fuzz.zip"), members)

    res = subprocess.run([sys.executable, "-c", _RUN, path], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr[-3000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for recipe, r in out.items():
        bad = set(r["bad"])
        assert r["rows"] == r["n"] == len(members), recipe
        assert undecodable <= bad, (recipe, sorted(undecodable - bad)[:10])
        assert not bad & clean, (recipe, sorted(bad & clean)[:10])
        assert bad <= mutants
        for name in bad:
            assert f"  {name}: " in r["report"], name

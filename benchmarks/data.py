"""Data pipeline benchmark: the zip read in place vs the same images extracted, and the index at 1.8M.

Part 1 (throughput): images/s through the A1 recipe (random resized crop 224, flip,
TrivialAugmentWide, random erasing), batches of 64, for (a) the archive read in place
(``create_dataset`` on the .zip: ``GeneratorDataset`` reading and validating members, C++
decode), (b) the same images extracted to a folder, through ``create_dataset`` (the same
validated source over files) and (c) the folder read by MindSpore's own ``ImageFolderDataset``
straight into its C++ decode, nothing checked: the reference (and what a corrupt JPEG can
crash); 1 and 2 workers. Each child process runs two epochs: the first includes pipeline
start-up and, for (a) and (b), the trial decode of every image (``source.validate``); in the
second the validated images are known by CRC. Images: scikit-learn digits upscaled to 224x224
on a coloured, noisy background, JPEG quality 90 (~18 KB each, like ImageNet resized to 224).
Each setting runs ``--repeats`` times, kinds alternating; the median is reported.

Part 2 (index): an archive of ``--members`` (default 1.8M) tiny JPEG members in the
``10w_classes/train|val/<class>/`` layout is written to ``--tmp`` and deleted afterwards. Then,
each in a fresh process: building the index; parsing the same central directory with
``zipfile.ZipFile`` (what a worker would pay without the index); loading the cached index; and
the resident memory of 2 real ``GeneratorDataset`` worker processes after reading 100 batches.

Run under the shared lock (it takes a few minutes of CPU and ~1.5 GB of disk):
    flock /tmp/ebv_heavy.lock python benchmarks/data.py
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# ------------------------------------------------------------------------------------ helpers
def _status(pid="self") -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0  # MB
    return out


def _pss(pid="self") -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Pss", "Pss_Anon", "Pss_File"):
                    out[k] = int(v.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and all its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    todo = _children(os.getpid())
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
        todo += _children(p)
    return total


def _children(pid: int):
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(p))
            except OSError:
                pass
    return kids


def _run_child(code: str, root: str = ROOT) -> dict:
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def photo_like_archive(path: str, n: int, size: int = 224, seed: int = 0) -> str:
    import cv2
    from sklearn.datasets import load_digits
    from ebv_ms.tools.make_synthetic import encode, write_zip
    d = load_digits()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / float(size)
    members = {}
    for i in range(n):
        k = i % len(d.images)
        g = cv2.resize((d.images[k] / 16.0).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)[..., None]
        bg = np.stack([rng.uniform(0, 150) + rng.uniform(-60, 60) * xx + rng.uniform(-60, 60) * yy
                       for _ in range(3)], -1)
        img = bg * (1 - g) + rng.uniform(100, 255, 3) * g + rng.normal(0, 10, (size, size, 3))
        members[f"bench/train/{d.target[k]}/{i:06d}.jpg"] = encode(
            np.clip(img, 0, 255).astype(np.uint8), ".jpg", 90)
    return write_zip(path, members)


# --------------------------------------------------------------------------------- throughput
def _reference_folder(root: str, workers: int, batch: int):
    """MindSpore's ImageFolderDataset + the same A1 ops: no validation (the reference)."""
    import mindspore as ms
    import mindspore.dataset.transforms as T
    import mindspore.dataset as mds
    from ebv_ms.data.layouts import IMAGE_EXTENSIONS
    from ebv_ms.data.presets import create_batch_transform, create_transforms
    from ebv_ms.data.sampler import ShardSampler
    train = os.path.join(root, "train")
    n = sum(len(files) for _, _, files in os.walk(train))
    classes = sorted(e.name for e in os.scandir(train) if e.is_dir())
    dataset = mds.ImageFolderDataset(
        train, extensions=sorted({e for x in IMAGE_EXTENSIONS for e in (x, x.upper())}),
        class_indexing={c: i for i, c in enumerate(classes)}, decode=False,
        sampler=ShardSampler(n, shuffle=True), num_parallel_workers=workers)
    dataset = dataset.map(T.TypeCast(ms.int32), input_columns="label")
    dataset = dataset.map(create_transforms("A1", 224), input_columns="image",
                          num_parallel_workers=workers)
    aug = create_batch_transform("A1", len(classes))

    def per_batch(image, label, info):
        return aug(np.stack(image), np.stack(label))
    return dataset.batch(batch, drop_remainder=True, per_batch_map=per_batch,
                         input_columns=["image", "label"], num_parallel_workers=1)


def _epoch_rate(cfg: dict, workers: int, batch: int):
    """(first-epoch images/s, second-epoch images/s, second-epoch CPU ms per image)."""
    if cfg.get("reference"):
        ds = _reference_folder(cfg["path"], workers, batch)
    else:
        from ebv_ms.data import create_dataset
        ds, _ = create_dataset(cfg, "train", batch, True, recipe="A1", num_workers=workers, seed=0)
    t0 = time.perf_counter()
    it = ds.create_tuple_iterator(num_epochs=2, output_numpy=True)
    n0 = 0
    for img, _ in it:  # first epoch: start-up, page cache, trial decodes
        n0 += img.shape[0]
    first = n0 / (time.perf_counter() - t0)
    c0, t0 = _cpu_seconds(), time.perf_counter()
    n = 0
    for img, _ in it:
        n += img.shape[0]
    dt, dc = time.perf_counter() - t0, _cpu_seconds() - c0
    return first, n / dt, 1000.0 * dc / n


_STAGES = """
import json, os, time
from ebv_ms.data.dataset import archive_layout
from ebv_ms.data.readers import FileReader, ZipMemberReader
from ebv_ms.data.source import decode_image, precheck, validate, _one_cv2_thread
_one_cv2_thread()
ix, lay = archive_layout({p!r}, {{}})
r = ZipMemberReader(ix)
members = lay.split("train").members.tolist()
files = FileReader({folder!r}, [ix.name(m) for m in members])
for m in members: r.read(m)  # warm the page cache
t = time.process_time(); blobs = [r.read(m) for m in members]; zip_read = time.process_time() - t
t = time.process_time()
for i in range(len(members)): files.read(i)
file_read = time.process_time() - t
t = time.process_time()
for b in blobs: precheck(b)
pre = time.process_time() - t
t = time.process_time()
for b in blobs: validate(b)
val = time.process_time() - t
t = time.process_time()
for b in blobs: decode_image(b)
dec = time.process_time() - t
n = len(members)
print(json.dumps({{"zip_read_us": 1e6 * zip_read / n, "file_read_us": 1e6 * file_read / n,
                  "precheck_us": 1e6 * pre / n, "validate_us": 1e6 * val / n,
                  "decode_us": 1e6 * dec / n}}))
"""


def throughput(tmp: str, n: int, batch: int, workers_list, repeats: int, baseline=None):
    archive = photo_like_archive(os.path.join(tmp, "bench.zip"), n)
    folder = os.path.join(tmp, "extracted")
    shutil.unpack_archive(archive, folder)
    mb = os.path.getsize(archive) / 2 ** 20
    print(f"throughput set: {n} JPEGs 224x224, {mb:.0f} MB, batch {batch}", flush=True)
    kinds = {"archive": {"path": archive, "image_size": 224},
             "folder": {"path": os.path.join(folder, "bench"), "format": "folder", "image_size": 224},
             "reference": {"path": os.path.join(folder, "bench"), "reference": True}}
    roots = {k: ROOT for k in kinds}
    if baseline:  # the same sources from another checkout, alternating with this one's
        for k in ("archive", "folder"):
            kinds[k + "@baseline"], roots[k + "@baseline"] = kinds[k], os.path.abspath(baseline)
    rows = []
    for w in workers_list:
        res = {k: [] for k in kinds}
        for r in range(repeats):
            for kind, cfg in kinds.items():
                code = (f"import json; from benchmarks.data import _epoch_rate; "
                        f"print(json.dumps(_epoch_rate({cfg!r}, {w}, {batch})))")
                first, rate, ms = _run_child(code, roots[kind])
                res[kind].append((first, rate, ms))
                print(f"  workers={w} repeat {r} {kind}: first epoch {first:.0f} img/s, then "
                      f"{rate:.0f} img/s, {ms:.2f} CPU ms/img", flush=True)
        med = {k: [float(np.median([x[j] for x in v])) for j in range(3)] for k, v in res.items()}
        rows.append((w, med))
    stages = _run_child(_STAGES.format(p=archive, folder=folder))
    print("  stages", stages, flush=True)
    if baseline:
        stages["baseline"] = _run_child(_STAGES.format(p=archive, folder=folder), roots["archive@baseline"])
        print("  stages (baseline)", stages["baseline"], flush=True)
    return rows, stages


# -------------------------------------------------------------------------------------- index
_BUILD = """
import json, time, resource
from ebv_ms.data.zip_index import load_zip_index
t = time.perf_counter(); ix = load_zip_index({p!r}, rebuild=True, progress=False)
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": len(ix)}}))
"""
_ZIPFILE = """
import json, time, zipfile, resource
from benchmarks.data import _status
base = _status()["VmRSS"]
t = time.perf_counter(); z = zipfile.ZipFile({p!r}); n = len(z.infolist()); dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "rss_mb": _status()["VmRSS"] - base, "n": n}}))
"""
_LOAD = """
import json, time
import numpy as np
from benchmarks.data import _status
from ebv_ms.data.zip_index import load_zip_index
from ebv_ms.data.readers import ZipMemberReader
base = _status()
t = time.perf_counter()
ix = load_zip_index({p!r}, progress=False); r = ZipMemberReader(ix); r.read(len(ix) // 2)
dt = time.perf_counter() - t
after_load = _status()
rng = np.random.default_rng(0)
for m in rng.integers(0, len(ix), 20000):
    r.read(int(m))
after_reads = _status()
touched = sum(float(np.asarray(getattr(ix, k)).sum()) for k in ("header_offset", "comp_size", "size", "method", "crc", "flags", "name_start", "names"))
after_all = _status()
d = lambda s: {{k: s[k] - base[k] for k in ("VmRSS", "RssAnon", "RssFile")}}
print(json.dumps({{"seconds": dt, "built": ix.built, "load": d(after_load), "reads": d(after_reads), "all": d(after_all)}}))
"""
_LAYOUT = """
import json, time
from ebv_ms.data.dataset import archive_layout
t = time.perf_counter(); ix, lay = archive_layout({p!r}, {{}}); dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "classes": len(lay.class_names), "train": len(lay.split("train").members), "val": len(lay.split("val").members)}}))
"""
_WORKERS = """
import json, os, time
from benchmarks.data import _status, _children, _pss
from ebv_ms.data import create_dataset
ds, info = create_dataset({{"path": {p!r}, "image_size": 8, "eval_resize": 8,
                           "python_multiprocessing": True}}, "train", 64, True, recipe="eval", num_workers=2)
it = ds.create_tuple_iterator(num_epochs=1, output_numpy=True)
t = time.perf_counter()
for k, _ in enumerate(it):
    if k == 100:
        break
dt = time.perf_counter() - t
kids = [dict(_status(c), **_pss(c)) for c in _children(os.getpid())]
kids = [s for s in kids if s.get("VmRSS", 0) > 20]
print(json.dumps({{"first_100_batches_s": dt, "workers": kids, "main": _status()}}))
os._exit(0)
"""


def write_tiny_archive(path: str, num_members: int, progress: bool = True) -> str:
    """An archive of ``num_members`` tiny images in ``10w_classes/train|val/<class>/<n>.jpg``,
    12 train + 6 val per class of 100,000 like the 100k-class archive. For index benchmarks."""
    from ebv_ms.progress import progress_bar
    from ebv_ms.tools.make_synthetic import encode, write_zip
    payload = encode(np.zeros((8, 8, 3), np.uint8))
    it = progress_bar(range(num_members), desc="writing tiny archive", unit="member",
                      mininterval=2.0, disable=not progress)
    return write_zip(path, ((f"10w_classes/{'train' if i % 18 < 12 else 'val'}/"
                             f"{i // 18 % 100_000:06d}/{i:07d}.jpg", payload) for i in it))


def index_bench(tmp: str, members: int):
    path = os.path.join(tmp, "tiny_10w.zip")
    t = time.perf_counter()
    write_tiny_archive(path, members, progress=True)
    print(f"wrote {members} members ({os.path.getsize(path) / 2 ** 30:.2f} GiB) in "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    out = {"build": _run_child(_BUILD.format(p=path))}
    print("  build", out["build"], flush=True)
    out["zipfile"] = _run_child(_ZIPFILE.format(p=path))
    print("  zipfile", out["zipfile"], flush=True)
    out["load"] = [_run_child(_LOAD.format(p=path)) for _ in range(3)]
    print("  load", out["load"][-1], flush=True)
    out["layout_first"] = _run_child(_LAYOUT.format(p=path))
    out["layout_cached"] = _run_child(_LAYOUT.format(p=path))
    print("  layout", out["layout_first"], out["layout_cached"], flush=True)
    out["workers"] = _run_child(_WORKERS.format(p=path))
    print("  workers", out["workers"], flush=True)
    idx_mb = sum(os.path.getsize(os.path.join(path + ".ebvidx", f))
                 for f in os.listdir(path + ".ebvidx")) / 2 ** 20
    out["index_disk_mb"] = idx_mb
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ebv-ms data pipeline benchmark")
    ap.add_argument("--images", type=int, default=3000, help="images in the throughput set")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--members", type=int, default=1_800_000, help="members of the index archive")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-index", action="store_true")
    ap.add_argument("--tmp", default="/tmp", help="where the temporary archives go (deleted after)")
    ap.add_argument("--baseline", metavar="CHECKOUT", help="also run the archive and folder "
                    "pipelines from this source tree (e.g. a `git archive` of an older commit), "
                    "alternating, and print this / baseline ratios")
    a = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="ebv_data_bench_", dir=a.tmp)
    cmd = "flock /tmp/ebv_heavy.lock python benchmarks/data.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        rows, stages = (None, None) if a.skip_throughput else throughput(tmp, a.images, a.batch,
                                                                         a.workers, a.repeats,
                                                                         a.baseline)
        idx = None if a.skip_index else index_bench(tmp, a.members)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"CPU: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if rows:
        print(f"\nA1 throughput, {a.images} JPEGs 224x224, batch {a.batch} (median of {a.repeats} runs); "
              "img/s in epoch 1 (start-up + trial decodes) / epoch 2, and epoch-2 CPU ms per image")
        print("| workers | archive img/s | folder (ours) img/s | ImageFolderDataset (unchecked) img/s "
              "| archive / reference, epoch 1 | epoch 2 | CPU ms/img archive | CPU ms/img reference |")
        print("|---|---|---|---|---|---|---|---|")
        for w, m in rows:
            ar, fo, re = m["archive"], m["folder"], m["reference"]
            print(f"| {w} | {ar[0]:.0f} / {ar[1]:.0f} | {fo[0]:.0f} / {fo[1]:.0f} | {re[0]:.0f} / {re[1]:.0f} "
                  f"| {ar[0] / re[0]:.2f}x | {ar[1] / re[1]:.2f}x | {ar[2]:.2f} | {re[2]:.2f} |")
        if a.baseline:
            print(f"\nThis checkout / baseline ({a.baseline}), img/s ratios, epoch 1 / epoch 2:")
            print("| workers | archive | folder | stage: zip member read | stage: file read |")
            print("|---|---|---|---|---|")
            b = stages["baseline"]
            for w, m in rows:
                ar, ab, fo, fb = m["archive"], m["archive@baseline"], m["folder"], m["folder@baseline"]
                print(f"| {w} | {ar[0] / ab[0]:.2f}x / {ar[1] / ab[1]:.2f}x | {fo[0] / fb[0]:.2f}x / "
                      f"{fo[1] / fb[1]:.2f}x | {stages['zip_read_us']:.0f} us vs {b['zip_read_us']:.0f} us "
                      f"| {stages['file_read_us']:.0f} us vs {b['file_read_us']:.0f} us |")
        print(f"\nPer-image stage costs (CPU time, one thread): read member from the zip (pread + CRC) "
              f"{stages['zip_read_us']:.0f} us; read the extracted file (FileReader: open, fstat, read) "
              f"{stages['file_read_us']:.0f} us; precheck (header walk) {stages['precheck_us']:.0f} us; "
              f"validate (precheck + 1/8-scale trial decode) {stages['validate_us']:.0f} us; "
              f"a full decode to RGB (OpenCV, for scale) {stages['decode_us']:.0f} us; "
              f"whole A1 pipeline {1000 * rows[0][1]['archive'][2]:.0f} us CPU.")
    if idx:
        ld = idx["load"]
        secs = sorted(x["seconds"] for x in ld)
        w = idx["workers"]["workers"]
        print(f"\nIndex of {idx['build']['n']:,} members (tiny JPEG payloads)")
        print("| measure | value |")
        print("|---|---|")
        print(f"| build index (parse central directory, write cache) | {idx['build']['seconds']:.1f} s, "
              f"peak RSS {idx['build']['peak_mb']:.0f} MB |")
        print(f"| index on disk | {idx['index_disk_mb']:.0f} MB |")
        print(f"| zipfile.ZipFile(path) instead (per worker without an index) | "
              f"{idx['zipfile']['seconds']:.1f} s, +{idx['zipfile']['rss_mb']:.0f} MB RSS |")
        print(f"| load cached index + first read (fresh process, min/median of 3) | "
              f"{secs[0] * 1000:.0f} / {secs[1] * 1000:.0f} ms |")
        print(f"| RSS added by load + first read | {ld[-1]['load']['VmRSS']:.0f} MB "
              f"(anon {ld[-1]['load']['RssAnon']:.0f}) |")
        print(f"| RSS added after 20k random reads | {ld[-1]['reads']['VmRSS']:.0f} MB "
              f"(anon {ld[-1]['reads']['RssAnon']:.0f}, file-backed shared {ld[-1]['reads']['RssFile']:.0f}) |")
        print(f"| RSS added with every index page touched (worst case) | {ld[-1]['all']['VmRSS']:.0f} MB "
              f"(anon {ld[-1]['all']['RssAnon']:.0f}) |")
        print(f"| layout detection, first / cached | {idx['layout_first']['seconds']:.1f} s / "
              f"{idx['layout_cached']['seconds']:.2f} s ({idx['layout_first']['classes']:,} classes, "
              f"{idx['layout_first']['train']:,} train, {idx['layout_first']['val']:,} val) |")
        for i, s in enumerate(w):
            print(f"| GeneratorDataset worker process {i} after 100 batches | RSS {s['VmRSS']:.0f} MB "
                  f"(anon {s['RssAnon']:.0f}, file-backed {s['RssFile']:.0f}); PSS {s.get('Pss', 0):.0f} MB |")
    print(f"\nreproduce: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

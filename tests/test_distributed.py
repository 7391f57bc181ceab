"""Data-parallel launch: helpers, argument checks, and real 2-rank runs through mpirun on CPU.

The launch tests run scripts/run_distribute_gpu.sh itself with DEVICE_TARGET=CPU: a MindSpore
dynamic-cluster scheduler beside `mpirun -n 2` workers, real all-reduce. Each rank writes
OUTPUT_DIR/logs/rank_K.json (tests/probes.py's RankProbe, installed as a training callback by
tests/probed_train.py): the digest of the labels it trained on and the checksum
of its trainable parameters at the end.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ebv_ms.engine import distributed as dist

import probes  # tests/probes.py: the rank probe the launch tests install as a callback
from demo_data import small_demo_zip

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "scripts" / "run_distribute_gpu.sh"
PROBE = ROOT / "tests" / "dp_probe_train.py"
PROBED_TRAIN = ROOT / "tests" / "probed_train.py"  # train.py + the rank probe callback
DEMO_CONFIG = ROOT / "configs" / "demo_cpu.yaml"
HAVE_MPIRUN = shutil.which("mpirun") is not None


def _env(**extra):
    env = dict(os.environ)
    env.update(PYTHON=sys.executable, DEVICE_TARGET="CPU", GLOG_v="2")
    env.pop("MS_ROLE", None)
    env.update(extra)
    return env


def _launch(args, timeout=300, **env):
    return subprocess.run(["bash", str(LAUNCH), *map(str, args)], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _reports(out_dir):
    reps = {}
    for path in glob.glob(os.path.join(out_dir, "logs", "rank_*.json")):
        with open(path) as f:
            rep = json.load(f)
        reps[rep["rank"]] = rep
    return reps


def _no_process_mentions(text):
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if text in line and "ps -eo" not in line]


# ---------------------------------------------------------------- helpers (no launch)

@pytest.fixture
def single_process(monkeypatch):
    for var in ("MS_ROLE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def test_single_process_is_rank0_of_1(single_process):
    assert dist.launch_env() is None
    assert dist.init_distributed({"device_target": "CPU"}) == (0, 1)
    assert dist.get_rank_info() == (0, 1)
    assert probes.is_main_rank()


def test_bare_mpirun_on_cpu_is_refused_with_the_fix(single_process, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert dist.launch_env() == "mpirun"
    with pytest.raises(dist.DistributedError, match="run_distribute_gpu.sh"):
        dist.init_distributed({"device_target": "CPU"})


def test_rank_paths():
    assert probes.rank_report_path("out", 1) == os.path.join("out", "logs", "rank_1.json")


def test_params_checksum_tracks_trainable_values_only():
    import mindspore as ms
    from mindspore import nn
    ms.set_seed(0)
    a = nn.SequentialCell(nn.Dense(4, 3), nn.BatchNorm1d(3))
    ms.set_seed(0)
    b = nn.SequentialCell(nn.Dense(4, 3), nn.BatchNorm1d(3))
    assert probes.params_checksum(a) == probes.params_checksum(b)
    # BatchNorm running statistics are per rank in data parallel: not part of the checksum
    stats = [p for p in b.get_parameters() if "moving_mean" in p.name][0]
    stats.set_data(ms.Tensor(np.ones(3, np.float32)))
    assert probes.params_checksum(a) == probes.params_checksum(b)
    assert probes.params_checksum(a, trainable_only=False) != probes.params_checksum(b, trainable_only=False)
    w = b.trainable_params()[0]
    w.set_data(w + 1e-3)
    assert probes.params_checksum(a) != probes.params_checksum(b)


def test_rank_probe_digest_and_report(tmp_path, single_process):
    p1, p2 = probes.RankProbe(tmp_path), probes.RankProbe(tmp_path)
    p1.record_batch(np.array([3, 1, 2], np.int32))
    soft = np.eye(5, dtype=np.float32)[[3, 1, 2]] * 0.7 + 0.06  # mixup-style soft targets
    p2.record_batch(soft)
    assert p1.report()["shard_digest"] == p2.report()["shard_digest"]
    p2.record_batch(np.array([4], np.int32))
    assert p1.report()["shard_digest"] != p2.report()["shard_digest"]
    path = p2.finish(None, steps=2)
    assert path == str(tmp_path / "logs" / "rank_0.json")
    rep = json.loads(Path(path).read_text())
    assert rep["first_labels"] == [3, 1, 2, 4] and rep["num_samples"] == 4 and rep["steps"] == 2


# ---------------------------------------------------------------- argument checks (fast)

def test_launch_rejects_missing_config(tmp_path):
    r = _launch([tmp_path / "nope.yaml", 2])
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_launch_names_a_bad_config_key_before_starting(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"output_dir: {tmp_path}/out\nmodle: {{head: ebv}}\n")
    r = _launch([cfg, 2], ENTRY=str(PROBE))
    assert r.returncode == 2 and "unknown config key 'modle'" in r.stderr
    assert not (tmp_path / "out").exists()


def test_launch_rejects_bad_device(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output_dir: {tmp_path}/out\ndata: {{path: {tmp_path}}}\n")
    r = _launch([cfg, 2], DEVICE_TARGET="TPU", ENTRY=str(PROBE))
    assert r.returncode == 2 and "DEVICE_TARGET" in r.stderr


# ---------------------------------------------------------------- real 2-rank launches

needs_mpirun = pytest.mark.skipif(not HAVE_MPIRUN, reason="mpirun not installed (apt-get install "
                                  "openmpi-bin; .ci/run does it)")


@pytest.mark.distributed
@needs_mpirun
def test_a_failed_rank_stops_the_job_and_names_its_log(tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(f"output_dir: {out}\ndata: {{path: {tmp_path}}}\n")
    r = _launch([cfg, 2, "--", "--fail-rank=1", "--steps=50"], ENTRY=str(PROBE), CLUSTER_TIMEOUT="60")
    assert r.returncode != 0
    log1 = out / "logs" / "rank_1.log"
    assert f"rank 1 failed with exit status 1; its log: {log1}" in r.stderr  # + " on HOST"
    assert "failing on purpose" in r.stderr  # the tail of the failing rank's log is shown
    assert "failing on purpose" in log1.read_text()
    _assert_no_mpi_noise(r.stdout + r.stderr)
    # nothing left running: no rank, no scheduler
    assert _no_process_mentions(str(cfg)) == []
    sched_pid = int((out / "logs" / "scheduler.pid").read_text())
    assert not Path(f"/proc/{sched_pid}").exists()
    assert not glob.glob(f"{out}/**/*.ckpt", recursive=True)


def _assert_no_mpi_noise(text):
    """Open MPI's own reports (help blocks, a crash backtrace) are not what the user needs."""
    for noise in ("Primary job", "mpirun noticed", "mpirun detected", "Process received signal",
                  "Segmentation fault", "exit status 139", "-----------------------------"):
        assert noise not in text, text[-3000:]


@pytest.mark.distributed
@needs_mpirun
def test_a_failed_scheduler_stops_the_ranks_at_once(tmp_path):
    """The scheduler cannot serve (its port is taken): the ranks, which would wait for it for
    CLUSTER_TIMEOUT, are stopped at once, and the screen says why, with no MPI report."""
    import socket
    import time
    out = tmp_path / "out"
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(f"output_dir: {out}\ndata: {{path: {tmp_path}}}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(8)
        t0 = time.time()
        r = _launch([cfg, 2, "--", "--steps=3"], ENTRY=str(PROBE), CLUSTER_TIMEOUT="300",
                    MS_SCHED_PORT=str(taken.getsockname()[1]))
        took = time.time() - t0
    assert r.returncode != 0 and took < 150, (took, r.stderr[-3000:])
    assert "[launch] the scheduler failed: " in r.stderr, r.stderr[-3000:]
    _assert_no_mpi_noise(r.stdout + r.stderr)
    assert _no_process_mentions(str(cfg)) == []
    assert sorted((out / "logs" / f"rank_{k}.exit").read_text() for k in (0, 1)) == ["killed"] * 2


@pytest.mark.distributed
def test_msrun_script_two_ranks(tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(f"output_dir: {out}\nseed: 3\ndata: {{path: {tmp_path}}}\n")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "run_distribute_ascend.sh"), str(cfg), "2",
                        "--", "--steps=3"], cwd=ROOT, env=_env(ENTRY=str(PROBE)), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    reps = _reports(out)
    assert sorted(reps) == [0, 1]
    assert all(rep["world_size"] == 2 and rep["num_batches"] == 3 for rep in reps.values())
    # same start (same seed), trained (weights moved), identical after the all-reduced steps
    assert reps[0]["init_checksum"] == reps[1]["init_checksum"]
    assert reps[0]["param_checksum"] != reps[0]["init_checksum"]
    assert reps[0]["param_checksum"] == reps[1]["param_checksum"]
    # each rank trained on its own shard
    assert reps[0]["shard_digest"] != reps[1]["shard_digest"]
    assert sorted(os.listdir(out / "logs")) == ["msrun.log", "rank_0.json", "rank_1.json",
                                                "scheduler.log",
                                                "worker_0.log", "worker_1.log"]
    assert [os.path.relpath(p, out) for p in glob.glob(f"{out}/**/*.ckpt", recursive=True)] == \
        [os.path.join("checkpoints", "last.ckpt")]
    assert "rank1 step" not in (out / "train.log").read_text()
    _assert_gradients_are_averaged(out / "mean_check.npz")


def _assert_gradients_are_averaged(npz_path):
    """One SGD step (lr 0.5) of a linear softmax classifier, rank r on digits [16r, 16r+16):
    with mean all-reduce it equals the step on all 32 samples at once (computed here)."""
    from sklearn.datasets import load_digits
    z = np.load(npz_path)
    world = int(z["world"])
    digits = load_digits()
    x = (digits.data / 16.0)[: 16 * world]
    y = digits.target[: 16 * world]

    def step(xs, ys, scale=1.0):
        w, b = z["w0"].astype(np.float64), z["b0"].astype(np.float64)
        logits = xs @ w.T + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - np.eye(10)[ys]) / len(ys)
        return w - 0.5 * scale * g.T @ xs, b - 0.5 * scale * g.sum(0)

    w_all, b_all = step(x, y)
    np.testing.assert_allclose(z["w1"], w_all, atol=2e-5)
    np.testing.assert_allclose(z["b1"], b_all, atol=2e-5)
    w_own, _ = step(x[:16], y[:16])            # no all-reduce: rank 0's own gradient only
    w_sum, _ = step(x, y, scale=float(world))  # summed instead of averaged
    assert not np.allclose(z["w1"], w_own, atol=2e-5)
    assert not np.allclose(z["w1"], w_sum, atol=2e-5)


def _eval_result(stdout):
    return json.loads(next(line[len("RESULT "):] for line in stdout.splitlines()
                           if line.startswith("RESULT ")))


@pytest.mark.distributed
@needs_mpirun
def test_two_ranks_train_py_on_demo_data(tmp_path, demo_zip):
    """The user's command, on CPU: the real train.py, demo config and demo images, 2 ranks;
    then the sharded evaluation: train.py's per-epoch one and eval.py's, each on 2 ranks, agree
    exactly with eval.py on 1 rank over a validation split of odd size (39 images)."""
    data = small_demo_zip(demo_zip, tmp_path)
    out = tmp_path / "run"
    common = [f"data.path={data}", "eval.batch_size=40", "data.num_workers=1"]
    r = _launch([DEMO_CONFIG, 2, f"output_dir={out}", *common, "train.epochs=1",
                 "train.batch_size=16", f"ebv.cache_dir={tmp_path / 'ebv'}",
                 "train.progress_bar=false", "--", "--rank-probe"], timeout=400,
                ENTRY=str(PROBED_TRAIN))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    reps = _reports(out)
    assert sorted(reps) == [0, 1], os.listdir(out / "logs")
    r0, r1 = reps[0], reps[1]
    assert r0["world_size"] == r1["world_size"] == 2
    # 160 training images / 2 ranks / batch 16: 5 steps each, same number on both ranks
    assert r0["num_batches"] == r1["num_batches"] == 5
    # gradients all-reduced: both ranks hold the same weights after the steps
    assert r0["param_checksum"] == r1["param_checksum"]
    # each rank trained on its own half of the data
    assert r0["shard_digest"] != r1["shard_digest"]
    assert r0["first_labels"] != r1["first_labels"]
    # one set of checkpoints and run files, written by rank 0 only
    ckpts = sorted(os.path.relpath(p, out) for p in glob.glob(f"{out}/**/*.ckpt", recursive=True))
    assert ckpts == ["best.ckpt", "last.ckpt"]
    for name in ("config.yaml", "metrics.jsonl", "train.log"):
        assert len(glob.glob(f"{out}/**/{name}", recursive=True)) == 1, name
    assert "[rank 1]" not in (out / "train.log").read_text()
    # a log per rank, each with that rank's own output
    for k in (0, 1):
        log = (out / "logs" / f"rank_{k}.log").read_text()
        assert f"rank {k}" in log and "Traceback" not in log
    assert (out / "logs" / "scheduler.exit").read_text().strip() == "0"

    # every rank evaluated the model rank 0 saved: its BatchNorm statistics were broadcast
    assert r0["all_params_checksum"] == r1["all_params_checksum"]
    # sharded evaluation during training: both ranks evaluated, 20 + 19 = 39, none twice
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["eval_samples"] == 39 and rec["eval_samples_per_rank"] == [20, 19]
    # eval.py alone on the checkpoint: the same count of correct samples
    one = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--ckpt", str(out / "last.ckpt"),
                          "--no-progress"], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    one = _eval_result(one.stdout)
    assert (one["num_samples"], one["num_samples_per_rank"]) == (39, [39])
    assert (one["top1"], one["top5"]) == (rec["top1"], rec["top5"])
    # eval.py on 2 ranks through the evaluation launcher (the same mpirun launch as training):
    # each rank its shard, the same figures
    r = subprocess.run(["bash", str(ROOT / "scripts" / "run_eval_gpu.sh"), str(out / "last.ckpt"),
                        *common, "--ranks", "2", "--no-progress", "--json",
                        str(tmp_path / "eval2.json")], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    two = json.loads((tmp_path / "eval2.json").read_text())
    assert two["world_size"] == 2 and two["num_samples_per_rank"] == [20, 19]
    for key in ("correct1", "correct5", "num_samples", "top1", "top5"):
        assert two[key] == one[key], key


# ---------------------------------------------------------------- single-device scripts

@pytest.mark.slow
def test_standalone_script_runs_one_process_and_keeps_earlier_logs(tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "probe.yaml"
    cfg.write_text(f"output_dir: {out}\ndata: {{path: {tmp_path}}}\n")
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "rank_0.log").write_text("the crashed run's log\n")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "run_standalone_gpu.sh"), str(cfg), "--", "--steps=2"],
                       cwd=ROOT, env=_env(ENTRY=str(PROBE), MS_ROLE="MS_WORKER"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = _reports(out)[0]
    assert rep["world_size"] == 1 and rep["num_batches"] == 2  # a stray MS_ROLE was dropped
    assert "rank0 step 2" in (out / "logs" / "rank_0.log").read_text()
    kept = list((out / "logs" / "previous").glob("*/rank_0.log"))
    assert len(kept) == 1 and kept[0].read_text() == "the crashed run's log\n"


def test_eval_script_rejects_a_missing_checkpoint(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "scripts" / "run_eval_gpu.sh"), str(tmp_path / "x.ckpt")],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "checkpoint not found" in r.stderr


@pytest.mark.slow
def test_eval_sets_up_the_device_before_any_tensor(demo_run):
    """MindSpore asks for init() before any Tensor is made on Ascend: eval.py sets the device
    and joins the job (init_distributed) before it reads a checkpoint's weights (tests/
    eval_order_probe.py records the first of each, then calls the real function)."""
    tmp, run = demo_run
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "eval_order_probe.py"), "--ckpt",
                        str(run / "last.ckpt"), "--no-progress"], cwd=tmp, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    order = json.loads(next(line[6:] for line in r.stdout.splitlines() if line.startswith("ORDER ")))
    assert order[:3] == ["set_device", "init_parallel", "tensor"], order

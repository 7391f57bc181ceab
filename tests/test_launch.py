"""The launchers' arguments: usage text, forms refused as ambiguous, and what reaches the entry.

Every test runs the real scripts. ENTRY=tests/launch_entry.py records the argv and device
environment a process was started with; --dry-run (a documented option) prints the mpirun /
msrun command lines, which are parsed back with shlex.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
ENTRY = ROOT / "tests" / "launch_entry.py"
LAUNCHERS = ["scripts/run_distribute_gpu.sh", "scripts/run_distribute_ascend.sh",
             "scripts/run_standalone_gpu.sh", "scripts/run_eval_gpu.sh",
             "run_with_gpu/run_quick_start.sh"]


def _run(script, *args, timeout=120, **env):
    e = dict(os.environ)
    for k in ("MS_ROLE", "MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_NODE_ID",
              "CUDA_VISIBLE_DEVICES", "DEVICE_ID", "EBV_PYTHON"):
        e.pop(k, None)
    e.update(PYTHON=sys.executable, DEVICE_TARGET="CPU", GLOG_v="2")
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", str(ROOT / script), *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run_dir(tmp_path):
    """A config whose output_dir is in tmp_path, a checkpoint-shaped file, the entry's out dir."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output_dir: {tmp_path / 'out'}\n")
    ckpt = tmp_path / "run" / "best.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not read by the probe entry")
    probe = tmp_path / "probe"
    probe.mkdir()
    return cfg, ckpt, probe


def _entry_record(probe, rank=0):
    return json.loads((probe / f"entry_{rank}.json").read_text())


def _dry_run_lines(stdout):
    return {line.split("]", 1)[0][1:]: shlex.split(line.split("]", 1)[1])
            for line in stdout.splitlines() if line.startswith("[") and "]" in line}


# ---------------------------------------------------------------- usage

@pytest.mark.parametrize("script", LAUNCHERS)
def test_usage_text_is_the_header_and_nothing_else(script):
    r = _run(script, "--help")
    assert r.returncode == 0, r.stderr
    assert f"Usage: bash {script}" in r.stdout
    assert "set -" not in r.stdout and "source" not in r.stdout and "#" not in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].strip()  # ends with text, not a code line


def test_no_argument_prints_usage_and_fails():
    r = _run("scripts/run_distribute_gpu.sh")
    assert r.returncode == 2 and "Usage: bash scripts/run_distribute_gpu.sh CONFIG" in r.stderr


# ---------------------------------------------------------------- what the entry receives

def test_eval_test_size_as_eval_py_spells_it_and_the_device_environment(run_dir):
    """The issue's example: `CKPT --test-size 256` used to set CUDA_VISIBLE_DEVICES=256 and pass a
    bare --test-size; an inherited DEVICE_ID pointed at a card the process could not see."""
    _, ckpt, probe = run_dir
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--test-size", "256", "data.root=x",
             ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe, DEVICE_TARGET="GPU", DEVICE_ID=5)
    assert r.returncode == 0, r.stderr
    rec = _entry_record(probe)
    assert rec["argv"] == ["--ckpt", str(ckpt), "device_target=GPU", "data.root=x",
                           "--test-size", "256"]
    assert rec["env"]["CUDA_VISIBLE_DEVICES"] == "0" and rec["env"]["DEVICE_ID"] == "0"
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--device-id", "3", "--config=c.yaml", "--",
             "--no-progress", ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe, DEVICE_TARGET="GPU",
             DEVICE_ID=5)
    rec = _entry_record(probe)
    assert rec["argv"] == ["--ckpt", str(ckpt), "device_target=GPU", "--config", "c.yaml",
                           "--no-progress"]
    # the one visible card is device 0 of the process
    assert rec["env"]["CUDA_VISIBLE_DEVICES"] == "3" and rec["env"]["DEVICE_ID"] == "0"
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--device-id", "3", ENTRY=ENTRY,
             LAUNCH_PROBE_OUT=probe, DEVICE_TARGET="Ascend", DEVICE_ID=5)
    rec = _entry_record(probe)
    assert rec["env"]["DEVICE_ID"] == "3" and rec["env"]["CUDA_VISIBLE_DEVICES"] is None


def test_standalone_device_environment_and_arguments(run_dir):
    cfg, _, probe = run_dir
    r = _run("scripts/run_standalone_gpu.sh", cfg, 3, "train.epochs=1", "--resume", ENTRY=ENTRY,
             LAUNCH_PROBE_OUT=probe, DEVICE_TARGET="GPU", DEVICE_ID=5, MS_ROLE="MS_WORKER")
    assert r.returncode == 0, r.stderr
    rec = _entry_record(probe)
    assert rec["argv"] == ["--config", str(cfg), "device_target=GPU", "train.epochs=1", "--resume"]
    assert rec["env"]["CUDA_VISIBLE_DEVICES"] == "3" and rec["env"]["DEVICE_ID"] == "0"
    assert rec["env"]["MS_ROLE"] is None  # a stray cluster role would wait for a scheduler


@pytest.mark.slow
def test_distribute_dry_run_shows_the_ranks_and_their_command(run_dir, tmp_path):
    cfg, _, _ = run_dir
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost slots=4\n")
    for args, n in (([cfg], 8), ([cfg, 8], 8), ([cfg, 2, "train.epochs=1", "--hostfile", hosts,
                                                  "--resume"], 2)):
        r = _run("scripts/run_distribute_gpu.sh", *args, "--dry-run")
        assert r.returncode == 0, r.stderr
        lines = _dry_run_lines(r.stdout)
        mpi = lines["mpirun"]
        assert mpi[mpi.index("-n") + 1] == str(n)
        want = [sys.executable, str(ROOT / "train.py"), "--config", str(cfg), "device_target=CPU"]
        if n == 2:
            want += ["train.epochs=1", "--resume"]
            assert mpi[mpi.index("--hostfile") + 1] == str(hosts)
        assert lines["rank"] == want
        assert mpi[-len(want):] == want and str(SCRIPTS / "mpirun_rank.sh") in mpi
        # CPU collectives wait as long as the join (MindSpore's 30 s failed at 100k classes)
        assert "MS_CPU_COMM_OP_TIMEOUT=600" in r.stdout and "MS_CPU_COMM_OP_TIMEOUT" in mpi
    assert not (tmp_path / "out").exists()  # a dry run creates nothing


def test_eval_dry_run_on_ranks_uses_the_training_launch(run_dir):
    _, ckpt, _ = run_dir
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--ranks", 4, "--split", "val", "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = _dry_run_lines(r.stdout)
    want = [sys.executable, str(ROOT / "eval.py"), "--ckpt", str(ckpt), "device_target=CPU",
            "--split", "val"]
    assert lines["rank"] == want
    mpi = lines["mpirun"]
    assert mpi[mpi.index("-n") + 1] == "4" and mpi[-len(want):] == want
    assert str(ckpt.parent / "logs" / "eval") in mpi  # rank logs next to the checkpoint
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--ranks", 2, "--launcher", "msrun", "--dry-run")
    assert r.returncode == 0, r.stderr
    ms = _dry_run_lines(r.stdout)["msrun"]
    assert "--worker_num=2" in ms and ms[-4:] == [str(ROOT / "eval.py"), "--ckpt", str(ckpt),
                                                  "device_target=CPU"]


# ---------------------------------------------------------------- refused

REFUSED = [
    # (script, args after FIRST, message part); FIRST is the config or the checkpoint
    ("scripts/run_eval_gpu.sh", ["256"], "choose the card with --device-id 256, or run 256 ranks "
                                         "with --ranks 256"),
    ("scripts/run_eval_gpu.sh", ["configs/demo_cpu.yaml"], "given as --config configs/demo_cpu.yaml"),
    ("scripts/run_eval_gpu.sh", ["--test-size"], "option --test-size needs a value"),
    ("scripts/run_eval_gpu.sh", ["--ranks", "2", "--device-id", "1"], "--device-id is for one process"),
    ("scripts/run_eval_gpu.sh", ["--launcher", "msrun"], "--launcher only applies with --ranks"),
    ("scripts/run_eval_gpu.sh", ["-c", "x.yaml"], "unknown option '-c'"),
    ("scripts/run_distribute_gpu.sh", ["16", "HOSTS"], "a hostfile is given as --hostfile"),
    ("scripts/run_distribute_gpu.sh", ["2", "--steps=3"],
     "Arguments for launch_entry.py go after '--': bash scripts/run_distribute_gpu.sh"),
    ("scripts/run_distribute_gpu.sh", ["x.y=1", "8"], "NUM_DEVICES comes right after CONFIG"),
    ("scripts/run_distribute_gpu.sh", ["eight"], "'eight' is not NUM_DEVICES"),
    ("scripts/run_distribute_gpu.sh", ["--resume=1"], "--resume takes no value"),
    ("scripts/run_distribute_ascend.sh", ["2", "--hostfile", "HOSTS"], "msrun takes no hostfile"),
    ("scripts/run_standalone_gpu.sh", ["3", "4"], "DEVICE_ID is already 3"),
    ("run_with_gpu/run_quick_start.sh", ["--resume"], "unknown option '--resume'"),
]


@pytest.mark.parametrize("script,args,message", REFUSED)
def test_ambiguous_forms_are_refused_with_the_right_spelling(run_dir, tmp_path, script, args,
                                                             message):
    cfg, ckpt, probe = run_dir
    hosts = tmp_path / "HOSTS"
    hosts.write_text("localhost slots=2\n")
    first = ckpt if "eval" in script else cfg
    args = [str(hosts) if a == "HOSTS" else a for a in args]
    r = _run(script, first, *args, ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe,
             EBV_PYTHON=sys.executable)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr.replace(str(hosts), "HOSTS"), r.stderr
    assert f"{script}: error:" in r.stderr
    assert not list(probe.iterdir()) and not (tmp_path / "out").exists()  # nothing started


# ---------------------------------------------------------------- a real launch on 2 ranks

@pytest.mark.distributed
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed (apt-get install "
                    "openmpi-bin; .ci/run does it)")
def test_eval_on_two_ranks_starts_two_cluster_workers_with_one_command(run_dir, tmp_path):
    _, ckpt, probe = run_dir
    logs = tmp_path / "eval_logs"
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--ranks", 2, "--test-size", 256, "eval.split=val",
             "--log-dir", logs, ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe, DEVICE_ID=7, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = [_entry_record(probe, k) for k in (0, 1)]
    want = ["--ckpt", str(ckpt), "device_target=CPU", "eval.split=val", "--test-size", "256"]
    for k, rec in enumerate(recs):
        assert rec["rank"] == k and rec["world_size"] == 2  # one MindSpore cluster of 2
        assert rec["argv"] == want
        assert rec["env"]["MS_ROLE"] == "MS_WORKER" and rec["env"]["DEVICE_ID"] == str(k)
    assert sorted(p.name for p in logs.glob("rank_*.log")) == ["rank_0.log", "rank_1.log"]
    assert (logs / "scheduler.exit").read_text().strip() == "0"

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

from ebv_ms.tools import launch as L

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
    cfg.write_text(f"output_dir: {tmp_path / 'out'}\ndata: {{path: {tmp_path}}}\n")
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


@pytest.mark.parametrize("args", [[], ["rank"], ["rank", "LOG_DIR"], ["scheduler"],
                                  ["scheduler", "CPU", "extra"], ["eval"]])
def test_the_module_without_its_arguments_prints_usage_and_fails(args, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")  # as under mpirun: only arguments are missing
    args = [str(tmp_path / a) if a == "LOG_DIR" else a for a in args]
    assert L.main(args) == 2
    assert "usage: python -m ebv_ms.tools.launch " in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_the_rank_wrapper_alone_prints_usage_not_a_traceback():
    r = subprocess.run([sys.executable, "-m", "ebv_ms.tools.launch", "rank"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("usage: ") and "Traceback" not in r.stderr


def test_the_rank_wrapper_names_a_missing_program_and_exits_127(tmp_path):
    """It raised FileNotFoundError with a traceback, and left no exit file and no report."""
    logs = tmp_path / "logs"
    env = dict(os.environ, OMPI_COMM_WORLD_RANK="1")
    r = subprocess.run([sys.executable, "-m", "ebv_ms.tools.launch", "rank", str(logs),
                        str(tmp_path / "no-such-program"), "--flag"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 127 and "Traceback" not in r.stderr, r.stderr
    assert f"{tmp_path / 'no-such-program'}: program not found" in r.stderr
    assert (logs / "rank_1.exit").read_text() == "127"  # 127, as a shell gives it
    assert L.first_failed_rank(str(logs))[:2] == (1, "127")
    assert r.stderr.startswith("[launch rank 1] failed with exit status 127 at ")
    assert r.stderr.rstrip().endswith("[launch rank end]")  # the report mpirun passes on


# ---------------------------------------------------------------- what the entry receives

def test_eval_test_size_as_eval_py_spells_it_and_the_device_environment(run_dir):
    """The issue's example: `CKPT --test-size 256` used to set CUDA_VISIBLE_DEVICES=256 and pass a
    bare --test-size; an inherited DEVICE_ID pointed at a card the process could not see."""
    _, ckpt, probe = run_dir
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--test-size", "256", "data.root=x",
             ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe, DEVICE_ID=5, MS_ROLE="MS_WORKER")
    assert r.returncode == 0, r.stderr
    rec = _entry_record(probe)
    assert rec["argv"] == ["--ckpt", str(ckpt), "device_target=CPU", "data.root=x",
                           "--test-size", "256"]
    assert rec["env"]["DEVICE_ID"] is None and rec["env"]["MS_ROLE"] is None
    r = _run("scripts/run_eval_gpu.sh", ckpt, "--device-id", "3", "--config=c.yaml", "--",
             "--no-progress", ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe)
    assert _entry_record(probe)["argv"] == ["--ckpt", str(ckpt), "device_target=CPU", "--config",
                                            "c.yaml", "--no-progress"]
    # on GPU / Ascend (no such device here: the dry run shows what the process would get)
    for target, card, want in (("GPU", [], "CUDA_VISIBLE_DEVICES=0 DEVICE_ID=0"),
                               ("GPU", ["--device-id", "3"], "CUDA_VISIBLE_DEVICES=3 DEVICE_ID=0"),
                               ("Ascend", ["--device-id", "3"], "DEVICE_ID=3")):
        r = _run("scripts/run_eval_gpu.sh", ckpt, *card, "--dry-run", DEVICE_TARGET=target,
                 DEVICE_ID=5)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0].endswith(f"environment: {want}"), r.stdout


def test_one_device_environment():
    """One process on card N: on GPU it sees only that card, as its device 0 (an inherited
    DEVICE_ID=5 would select a card it cannot see); on Ascend DEVICE_ID is the card."""
    inherited = {"DEVICE_ID": "5", "PATH": "/bin"}
    assert L.one_device_env(inherited, "GPU", "3") == {"CUDA_VISIBLE_DEVICES": "3",
                                                       "DEVICE_ID": "0", "PATH": "/bin"}
    assert L.one_device_env(inherited, "GPU", "")["CUDA_VISIBLE_DEVICES"] == "0"
    assert L.one_device_env(dict(inherited, CUDA_VISIBLE_DEVICES="6"), "GPU", "")[
        "CUDA_VISIBLE_DEVICES"] == "6"
    assert L.one_device_env(inherited, "Ascend", "3") == {"DEVICE_ID": "3", "PATH": "/bin"}
    assert L.one_device_env(inherited, "CPU", "3") == {"PATH": "/bin"}


def test_standalone_device_environment_and_arguments(run_dir):
    cfg, _, probe = run_dir
    r = _run("scripts/run_standalone_gpu.sh", cfg, 3, "train.epochs=1", "--resume", ENTRY=ENTRY,
             LAUNCH_PROBE_OUT=probe, DEVICE_ID=5, MS_ROLE="MS_WORKER")
    assert r.returncode == 0, r.stderr
    rec = _entry_record(probe)
    assert rec["argv"] == ["--config", str(cfg), "device_target=CPU", "train.epochs=1", "--resume"]
    assert rec["env"]["MS_ROLE"] is None  # a stray cluster role would wait for a scheduler
    r = _run("scripts/run_standalone_gpu.sh", cfg, 3, "--dry-run", DEVICE_TARGET="GPU", DEVICE_ID=5)
    assert "environment: CUDA_VISIBLE_DEVICES=3 DEVICE_ID=0" in r.stdout, r.stdout + r.stderr


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
        assert mpi[-len(want):] == want
        # each rank through the rank wrapper of the launcher module, logging to OUTPUT_DIR/logs
        assert mpi[-len(want) - 4:-len(want)] == ["-m", "ebv_ms.tools.launch", "rank",
                                                  str(tmp_path / "out" / "logs")]
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


# ---------------------------------------------------------------- the module itself (no process)

def _parse(kind, *argv):
    return L.parse_args(L.SPECS[kind], list(argv), f"scripts/{kind}.sh", "train.py")


def test_grammar_sorts_every_word_into_its_slot():
    a = _parse("mpirun", "c.yaml", "16", "x.y=1", "--hostfile=h", "--resume", "a.b=2",
               "--resume-from", "k.ckpt", "--dry-run", "--", "--steps=3", "z")
    assert (a.first, a.second, a.overrides) == ("c.yaml", "16", ["x.y=1", "a.b=2"])
    assert a.forward == ["--resume", "--resume-from", "k.ckpt"]  # in order, as train.py spells them
    assert a.opts == {"hostfile": "h", "dry-run": "1"} and a.passthrough == ["--steps=3", "z"]
    a = _parse("eval", "b.ckpt", "--test-size=256", "--ranks", "4", "--no-progress")
    assert a.forward == ["--test-size", "256", "--no-progress"] and a.opts == {"ranks": "4"}
    assert _parse("quick-start").first == ""
    with pytest.raises(L._Usage):
        _parse("mpirun")
    with pytest.raises(L.LaunchError, match="'--resume-from' needs a value|--resume-from needs a"):
        _parse("mpirun", "c.yaml", "--resume-from", "--resume")


def _launch(kind="mpirun", device="CPU", **opts):
    args = L.Args(first="c.yaml", opts={k.replace("_", "-"): v for k, v in opts.items()})
    return L.Launch(kind, args, device, "/py/bin/python", "/r/train.py",
                    {"PATH": "/bin", "PYTHONPATH": "/r"}, dry_run=False)


def test_mpirun_command_line(monkeypatch):
    monkeypatch.delenv("MPIRUN_ARGS", raising=False)
    monkeypatch.setenv("MS_SCHED_PORT", "4567")
    launch = _launch()
    env = L.cluster_env(launch, 2, None)
    assert (env["MS_WORKER_NUM"], env["MS_SCHED_HOST"], env["MS_SCHED_PORT"]) == ("2", "127.0.0.1",
                                                                                 "4567")
    assert env["MS_CPU_COMM_OP_TIMEOUT"] == env["MS_TOPO_TIMEOUT"] == "600"
    cmd = L.mpirun_command(launch, 2, None, "/o/logs", ["/py/bin/python", "t.py"], env)
    assert cmd[:3] == ["mpirun", "-n", "2"]
    assert "--oversubscribe" in cmd and cmd[cmd.index("--bind-to") + 1] == "none"
    exported = [cmd[i + 1] for i, c in enumerate(cmd) if c == "-x"]
    assert {"MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_TOPO_TIMEOUT",
            "MS_CPU_COMM_OP_TIMEOUT", "PYTHONPATH", "PATH"} <= set(exported)
    assert cmd[-7:] == ["/py/bin/python", "-m", "ebv_ms.tools.launch", "rank", "/o/logs",
                        "/py/bin/python", "t.py"]
    monkeypatch.setenv("MPIRUN_ARGS", "--bind-to core --mca btl_tcp_if_include eth0")
    monkeypatch.delenv("MS_SCHED_HOST", raising=False)
    env = L.cluster_env(_launch(device="GPU"), 16, "hosts")
    assert env["MS_SCHED_HOST"] == L.this_host_address() and "MS_CPU_COMM_OP_TIMEOUT" not in env
    cmd = L.mpirun_command(_launch(device="GPU"), 16, "hosts", "/o/logs", ["t.py"], env)
    assert cmd[cmd.index("--hostfile") + 1] == "hosts" and "--oversubscribe" not in cmd
    assert cmd.count("--bind-to") == 1 and "btl_tcp_if_include" in cmd


def test_msrun_command_line_one_and_several_machines(monkeypatch):
    monkeypatch.delenv("MSRUN_ARGS", raising=False)
    monkeypatch.setenv("MASTER_PORT", "9000")
    one = L.msrun_command(_launch("msrun"), 4, "/o/logs", ["/py/bin/python", "t.py", "a=1"])
    assert one[1:5] == ["--worker_num=4", "--local_worker_num=4", "--master_port=9000",
                        "--log_dir=/o/logs"] and one[-2:] == ["t.py", "a=1"]
    assert not any(c.startswith(("--master_addr", "--node_rank")) for c in one)
    monkeypatch.delenv("MASTER_PORT")
    two = L.msrun_command(_launch("msrun", nodes="2", node_rank="1", master_addr="10.0.0.1"), 8,
                          "/o/logs", ["/py/bin/python", "t.py"])
    assert {"--worker_num=16", "--local_worker_num=8", "--master_port=8118",
            "--master_addr=10.0.0.1", "--node_rank=1"} <= set(two)
    for bad, msg in (({"nodes": "2", "master_addr": "h"}, "needs --node-rank"),
                     ({"node_rank": "1"}, "give --nodes M"),
                     ({"nodes": "2", "node_rank": "2", "master_addr": "h"}, "below --nodes")):
        with pytest.raises(L.LaunchError, match=msg):
            L.msrun_command(_launch("msrun", **bad), 1, "/o", ["t.py"])


def test_msrun_beside_a_bare_interpreter_is_looked_up_on_path_not_here(tmp_path, monkeypatch):
    """PYTHON=python3 (no folder): msrun was looked up as ./msrun, in the current directory."""
    monkeypatch.delenv("MSRUN_ARGS", raising=False)
    bin_dir, here = tmp_path / "bin", tmp_path / "here"
    for d in (bin_dir, here):
        d.mkdir()
    for exe in (bin_dir / "python3", bin_dir / "msrun", here / "msrun"):
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    monkeypatch.chdir(here)
    monkeypatch.setenv("PATH", str(bin_dir))
    launch = _launch("msrun")
    launch.python = "python3"
    assert L.msrun_command(launch, 2, "/o", ["python3", "t.py"])[0] == str(bin_dir / "msrun")
    (bin_dir / "msrun").unlink()  # none beside it nor on PATH: not the one in this directory
    assert L.msrun_command(launch, 2, "/o", ["python3", "t.py"])[0] == "msrun"
    with pytest.raises(L.LaunchError, match="msrun not found"):
        L.run_msrun(launch, 2, "/o")


def test_earlier_logs_are_moved_aside_in_a_folder_named_like_a_pattern(tmp_path, capsys):
    """glob.glob read 'run[1]' as a pattern: the earlier logs stayed, to be overwritten."""
    logs = tmp_path / "run[1]" / "logs"
    logs.mkdir(parents=True)
    (logs / "rank_0.log").write_text("earlier")
    (logs / "notes.txt").write_text("not a launch log")
    L.get_ready("CPU", str(logs))
    assert not (logs / "rank_0.log").exists() and (logs / "notes.txt").is_file()
    assert [p.read_text() for p in (logs / "previous").glob("*/rank_0.log")] == ["earlier"]
    assert "earlier logs moved to" in capsys.readouterr().out


def test_first_failed_rank_is_the_earliest_exit_that_is_an_error(tmp_path):
    for rank, status, t in ((0, "killed", 100), (1, "1", 200), (2, "134", 150), (3, "0", 50)):
        f = tmp_path / f"rank_{rank}.exit"
        f.write_text(status)
        os.utime(f, (t, t))
    (tmp_path / "rank_2.log").write_text("[INFO] chatter\nValueError: two\n")
    assert L.first_failed_rank(str(tmp_path)) == (2, "134", str(tmp_path / "rank_2.log"),
                                                  "ValueError: two")
    assert L.first_failed_rank(str(tmp_path / "none")) is None
    # the reports rank wrappers on every host send through mpirun: the earliest one wins
    (tmp_path / "mpirun.log").write_text(
        "[launch rank 3] failed with exit status 1 at 300.5 on h2; its log: /o/logs/rank_3.log\n"
        "late\n[launch rank end]\nPrimary job  terminated normally, but 1 process returned\n"
        "[launch rank 1] failed with exit status 2 at 299.25 on h1; its log: /o/logs/rank_1.log\n"
        "train.py: error: ranks disagree\n[launch rank end]\n")
    assert L.first_failed_rank(str(tmp_path)) == (1, "2", "/o/logs/rank_1.log on h1",
                                                  "train.py: error: ranks disagree")


# ---------------------------------------------------------------- GPUs: what is visible

NVIDIA_SMI = """#!/bin/sh
# a stand-in for nvidia-smi -L on an 8-GPU host
for i in 0 1 2 3 4 5 6 7; do echo "GPU $i: NVIDIA A100-SXM4-80GB (UUID: GPU-$i$i$i$i-aaaa)"; done
"""


@pytest.fixture
def eight_gpus(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.mark.parametrize("cvd,want", [(None, 8), ("0,1", 2), ("GPU-3333,GPU-5", 2), ("7", 1),
                                      ("0,9,1", 1), ("1,1", 1), ("", 0), ("-1", 0)])
def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does(eight_gpus, monkeypatch, cvd, want):
    if cvd is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cvd)
    assert L.visible_gpus() == want


@pytest.mark.slow
def test_distribute_starts_one_rank_per_visible_gpu(run_dir, eight_gpus):
    """#16: with CUDA_VISIBLE_DEVICES=0,1 on an 8-GPU host it used to start 8 ranks."""
    cfg, _, _ = run_dir
    path = os.environ["PATH"]
    for cvd, n in ((None, 8), ("0,1", 2), ("5", 1)):
        env = {"PATH": path, "DEVICE_TARGET": "GPU"}
        if cvd is not None:
            env["CUDA_VISIBLE_DEVICES"] = cvd
        r = _run("scripts/run_distribute_gpu.sh", cfg, "--dry-run", **env)
        assert r.returncode == 0, r.stderr
        mpi = _dry_run_lines(r.stdout)["mpirun"]
        assert mpi[mpi.index("-n") + 1] == str(n), (cvd, mpi)
        if cvd is not None:  # the ranks see the same cards
            assert mpi[mpi.index("CUDA_VISIBLE_DEVICES") - 1] == "-x"
    r = _run("scripts/run_distribute_gpu.sh", cfg, 4, "--dry-run", PATH=path, DEVICE_TARGET="GPU",
             CUDA_VISIBLE_DEVICES="0,1")
    assert r.returncode == 2
    assert r.stderr.strip() == ("scripts/run_distribute_gpu.sh: error: 4 ranks on this machine, but "
                                "2 GPU(s) are visible (CUDA_VISIBLE_DEVICES=0,1): give NUM_DEVICES "
                                "<= 2, or several machines with --hostfile")


# ---------------------------------------------------------------- pre-flight: nothing starts

def _nothing_started(r, probe, tmp_path):
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, no traceback
    assert not list(probe.iterdir()) and not (tmp_path / "out").exists()
    assert "[launch]" not in r.stdout


def test_the_issue_command_on_a_cpu_machine_is_one_line():
    """#20: it printed a per-rank config error, '[launch] the scheduler failed', an Open MPI
    segfault backtrace and 'mpirun exit status 139'."""
    e = {k: v for k, v in os.environ.items() if k not in ("DEVICE_TARGET", "MS_ROLE")}
    r = subprocess.run(["bash", "scripts/run_distribute_gpu.sh", "configs/10w_classes.yaml", "8",
                        "data.path=/data/10w_classes.zip"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=dict(e, PYTHON=sys.executable))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "scripts/run_distribute_gpu.sh: error: config key 'data.path': /data/10w_classes.zip not "
        "found; point it at the .zip archive or the dataset folder"]


@pytest.mark.parametrize("args,message", [
    (["2", "data.path=/nonexistent/d.zip"], "config key 'data.path': /nonexistent/d.zip not found"),
    (["2", "optim.lrr=0.1"], "did you mean 'optim.lr'"),
    (["0"], "NUM_DEVICES must be a whole number of at least 1, got '0'"),
    (["4", "--hostfile", "HOSTS"], "4 ranks, but the hostfile HOSTS has 2 slots"),
])
def test_preflight_refuses_before_any_rank_or_scheduler(run_dir, tmp_path, args, message):
    cfg, _, probe = run_dir
    hosts = tmp_path / "HOSTS"
    hosts.write_text("# two hosts\nnode1 slots=1\nnode2 slots=1\n")
    args = [str(hosts) if a == "HOSTS" else a for a in args]
    r = _run("scripts/run_distribute_gpu.sh", cfg, *args, ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe)
    _nothing_started(r, probe, tmp_path)
    assert message in r.stderr.replace(str(hosts), "HOSTS"), r.stderr


@pytest.mark.slow  # the doctor's probe: a fresh MindSpore per target, ~10 s
@pytest.mark.parametrize("script,target", [("scripts/run_distribute_gpu.sh", "GPU"),
                                           ("scripts/run_distribute_ascend.sh", "Ascend"),
                                           ("scripts/run_standalone_gpu.sh", "GPU")])
def test_preflight_checks_the_device_against_this_machine(run_dir, tmp_path, script, target):
    """No GPU or NPU here: the doctor's probe says so before anything starts."""
    from ebv_ms.tools.doctor import check_device
    if check_device(target, timeout=60)["ok"]:
        pytest.skip(f"this machine has a working {target}")
    cfg, _, probe = run_dir
    r = _run(script, cfg, 2 if "distribute" in script else 0, ENTRY=ENTRY, LAUNCH_PROBE_OUT=probe,
             DEVICE_TARGET=target)
    _nothing_started(r, probe, tmp_path)
    assert f"error: DEVICE_TARGET={target} does not work on this machine: RuntimeError: " \
           f"Unsupported device target {target}" in r.stderr
    assert "DEVICE_TARGET=CPU runs the same launch on CPU" in r.stderr


# ---------------------------------------------------------------- two hosts, no shared disk

TWO_HOSTS_PYTHON = ROOT / "tests" / "two_hosts_python.sh"
needs_two_hosts = pytest.mark.skipif(
    shutil.which("mpirun") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs mpirun, and unshare + mount as root to give each simulated host its own disk")


def _two_host_launch(tmp, *args, timeout=600, **env):
    """run_distribute_gpu.sh with a hostfile naming this machine twice; rank K runs on
    'host K': tmp/host_K mounted over tmp/host (tests/two_hosts_python.sh)."""
    hosts = tmp / "hosts"
    hosts.write_text("localhost\nlocalhost\n")  # one slot per line: 2 ranks, one per 'host'
    h = tmp / "host"
    return _run("scripts/run_distribute_gpu.sh", CONFIG, 2, "--hostfile", hosts,
                f"output_dir={h / 'run'}", f"ebv.cache_dir={h / 'cache'}",
                f"data.path={h / 'data' / 'digits.zip'}", "train.batch_size=16",
                "data.num_workers=1", "eval.batch_size=40", "train.progress_bar=false", *args,
                "--", "--rank-probe", timeout=timeout, ENTRY=ROOT / "tests" / "probed_train.py",
                PYTHON=TWO_HOSTS_PYTHON, REAL_PYTHON=sys.executable, TWO_HOSTS=tmp, **env)


CONFIG = ROOT / "configs" / "demo_cpu.yaml"


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory, demo_zip):
    """One 2-rank run of train.py on two simulated hosts, each with its own working folder,
    cache folder and run folder, and its own copy of the data at the same path."""
    from demo_data import small_demo_zip
    tmp = tmp_path_factory.mktemp("two_hosts")
    data = small_demo_zip(demo_zip, tmp)
    for disk in ("host", "host_0", "host_1"):  # host: the disk of the machine you type on
        (tmp / disk / "data").mkdir(parents=True)
        shutil.copy(data, tmp / disk / "data" / "digits.zip")
    r = _two_host_launch(tmp, "train.epochs=1")
    return tmp, r


@pytest.mark.distributed
@needs_two_hosts
def test_two_hosts_without_a_shared_disk(two_hosts):
    """#16 §4: rank 1 used to wait up to 6 h for the EBV cache file rank 0 writes on its own
    disk. Each host now gets the set (rebuilt, or sent by rank 0) and the job trains."""
    import numpy as np
    tmp, r = two_hosts
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    disk = {k: tmp / f"host_{k}" for k in (0, 1)}
    reps = {k: json.loads((disk[k] / "run" / "logs" / f"rank_{k}.json").read_text()) for k in (0, 1)}
    assert reps[0]["world_size"] == reps[1]["world_size"] == 2
    assert reps[0]["param_checksum"] == reps[1]["param_checksum"]  # one model on both hosts
    assert reps[0]["shard_digest"] != reps[1]["shard_digest"]
    # each host's disk: its own rank's log; rank 0's holds the checkpoints, rank 1's none
    assert (disk[0] / "run" / "logs" / "rank_0.log").is_file()
    assert (disk[1] / "run" / "logs" / "rank_1.log").is_file()
    assert {p.name for p in (disk[0] / "run").glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}
    assert not list((disk[1] / "run").glob("*.ckpt"))
    # and its own copy of the EBV set, the same set
    sets = [sorted((disk[k] / "cache").glob("ebv_N10_d32_*.npz")) for k in (0, 1)]
    assert len(sets[0]) == len(sets[1]) == 1 and sets[0][0].name == sets[1][0].name
    with np.load(sets[0][0]) as a, np.load(sets[1][0]) as b:
        np.testing.assert_array_equal(a["vectors"] if "vectors" in a else a[a.files[0]],
                                      b["vectors"] if "vectors" in b else b[b.files[0]])
    # the machine the command was typed on holds the scheduler's log only
    assert not list((tmp / "host" / "run").glob("**/rank_*"))
    assert (tmp / "host" / "run" / "logs" / "scheduler.exit").read_text() == "0"


@pytest.mark.distributed
@needs_two_hosts
def test_resume_on_hosts_without_a_shared_run_folder_stops_at_once(two_hosts):
    """--resume needs rank 0's last.ckpt on every host (a shared output_dir, docs/launch.md):
    host 1 has none, so the job stops at once, and says why, instead of ranks disagreeing."""
    import time
    tmp, first = two_hosts
    assert first.returncode == 0
    t0 = time.time()  # a rank left waiting in a collective gives up after CLUSTER_TIMEOUT
    r = _two_host_launch(tmp, "train.epochs=2", "--resume", timeout=900, CLUSTER_TIMEOUT=120)
    assert r.returncode != 0 and time.time() - t0 < 100, (time.time() - t0, r.stderr[-3000:])
    assert "last.ckpt" in r.stderr and "rank 1" in r.stderr, r.stderr[-3000:]

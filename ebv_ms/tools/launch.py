"""The launchers' logic: ``python -m ebv_ms.tools.launch KIND SCRIPT [ARGS ...]`` (docs/launch.md).

KIND is one per script in scripts/ and run_with_gpu/, or mpirun's ``rank`` and ``scheduler``.
Everything checkable is checked before any process starts (one line ``SCRIPT: error: ...``, exit
status 2); after the start the first rank that fails ends the job, and its error is on screen.
"""
from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ebv_ms.errors import EBVMSError, run_cli
from ebv_ms.tools.doctor import ROOT, bounded_run, check_device

# The dynamic-cluster variables a single process must not inherit (it would wait for a scheduler).
CLUSTER_ENV = ("MS_ROLE", "MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_NODE_ID",
               "RANK_ID")
LOG_PATTERNS = ["rank_*", "worker_*", "scheduler.*", "m*run.log"]  # a launch's logs in LOG_DIR
CLUSTER_VARS = ("MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_TOPO_TIMEOUT",
                "MS_CPU_COMM_OP_TIMEOUT")  # what mpirun's ranks and the scheduler share


class LaunchError(EBVMSError):
    """A launch refused before anything started; the message says what to write instead."""


class _Usage(Exception):
    """--help (``args[0]`` False: usage on stdout, exit 0), or no argument (True: stderr, exit 2)."""


@dataclass(frozen=True)
class Spec:
    """One launcher's grammar. Options map a name to its value's name, or None for a flag."""
    first: str                              # CONFIG | CKPT
    entry: str                              # the default ENTRY
    device: str = "GPU"                     # the default DEVICE_TARGET
    second: str = ""                        # NUM_DEVICES | DEVICE_ID | "" (no second slot)
    own: Dict[str, Optional[str]] = field(default_factory=dict)
    forward: Dict[str, Optional[str]] = field(default_factory=dict)   # passed on to the entry
    first_optional: bool = False
    allow_pass: bool = True                 # `-- ARGS` accepted
    hint: Callable[[str], str] = lambda word: ""


@dataclass
class Args:
    first: str = ""
    second: str = ""
    overrides: List[str] = field(default_factory=list)
    forward: List[str] = field(default_factory=list)
    passthrough: List[str] = field(default_factory=list)
    opts: Dict[str, str] = field(default_factory=dict)


_TRAIN_FWD = {"resume": None, "resume-from": "CKPT"}
SPECS: Dict[str, Spec] = {
    "mpirun": Spec("CONFIG", "train.py", "GPU", "NUM_DEVICES", {"hostfile": "FILE", "dry-run": None},
                   _TRAIN_FWD, hint=lambda w: f"a hostfile is given as --hostfile {w}"
                   if os.path.isfile(w) else ""),
    "msrun": Spec("CONFIG", "train.py", "Ascend", "NUM_DEVICES",
                  {"dry-run": None, "hostfile": "FILE", "nodes": "M", "node-rank": "K",
                   "master-addr": "HOST", "master-port": "PORT"}, _TRAIN_FWD,
                  hint=lambda w: "msrun takes no hostfile: on several machines give --nodes, "
                  "--node-rank and --master-addr" if os.path.isfile(w) else ""),
    "standalone": Spec("CONFIG", "train.py", "GPU", "DEVICE_ID", {"dry-run": None}, _TRAIN_FWD),
    "eval": Spec("CKPT", "eval.py", "GPU", "",
                 {"device-id": "N", "ranks": "N", "hostfile": "FILE", "launcher": "L",
                  "log-dir": "DIR", "dry-run": None},
                 {"config": "FILE", "test-size": "S", "batch-size": "B", "split": "S",
                  "json": "PATH", "no-progress": None},
                 hint=lambda w: f"choose the card with --device-id {w}, or run {w} ranks with "
                 f"--ranks {w}" if w.isdigit() else f"a config is given as --config {w}"
                 if w.endswith((".yaml", ".yml")) else ""),
    "quick-start": Spec("CONFIG", "train.py", "GPU", first_optional=True, allow_pass=False),
}


def parse_args(spec: Spec, argv: List[str], prog: str, entry_name: str) -> Args:
    """LaunchError names a misplaced argument and the spelling that works."""
    a, argv, second = Args(), list(argv), f" [{spec.second}]" if spec.second else ""
    while argv:
        word = argv.pop(0)
        if word == "--":
            if not spec.allow_pass:
                raise LaunchError(f"'--': {prog} passes no further arguments to {entry_name}")
            a.passthrough = argv
            break
        if word in ("-h", "--help"):
            raise _Usage(False)
        if word.startswith("-"):
            name, eq, value = word[2:].partition("=")
            table = next((t for t in (spec.own, spec.forward) if name in t), None)
            if table is None or not word.startswith("--"):
                if spec.allow_pass and word.startswith("--"):
                    raise LaunchError(f"unknown option '{word}'. Arguments for {entry_name} go "
                                      f"after '--': bash {prog} {a.first or spec.first} ... -- "
                                      f"{word}   (see --help)")
                raise LaunchError(f"unknown option '{word}' (see bash {prog} --help)")
            if table[name] is None:
                if eq:
                    raise LaunchError(f"option --{name} takes no value: write '--{name}' alone")
                value = "1"
            elif not eq:
                value = argv.pop(0) if argv and not argv[0].startswith("--") else ""
            if not value:
                raise LaunchError(f"option --{name} needs a value: --{name} {table[name]}")
            if table is spec.own:
                a.opts[name] = value
            else:
                a.forward += [f"--{name}"] + ([value] if table[name] is not None else [])
        elif "=" in word:
            if not a.first and not spec.first_optional:
                raise LaunchError(f"'{word}' comes before {spec.first}; write: bash {prog} "
                                  f"{spec.first}{second} {word}")
            a.overrides.append(word)
        elif not a.first and not a.overrides:
            a.first = word
        elif spec.second and not a.second and not a.overrides and word.isdigit():
            a.second = word
        else:
            hint = f"; {spec.hint(word)}" if spec.hint(word) else ""
            if spec.second and not a.second and not a.overrides:
                why = (f"'{word}' is not {spec.second} (a whole number after {spec.first}) nor "
                       "key=value")
            elif a.second and word.isdigit():
                why = f"unexpected argument '{word}': {spec.second} is already {a.second}"
            elif spec.second and word.isdigit():  # no hint: the fix is the order
                raise LaunchError(f"'{word}': {spec.second} comes right after {spec.first}, before "
                                  f"any key=value: bash {prog} {spec.first} {word} key=value ...")
            else:
                why = (f"unexpected argument '{word}' (after {spec.first}{second} only key=value "
                       "overrides and options come)")
            raise LaunchError(why + hint)
    if not a.first and not spec.first_optional:
        raise _Usage(True)
    return a


def visible_gpus() -> Optional[int]:
    """``nvidia-smi -L``'s GPUs narrowed by CUDA_VISIBLE_DEVICES as CUDA reads it (indices or UUID
    prefixes, up to the first entry naming no GPU or one already named); None without nvidia-smi."""
    r = bounded_run(["nvidia-smi", "-L"], 60)  # None when it is not on PATH (an OSError)
    if r is None:
        return None
    uuids = [(re.search(r"UUID: (GPU-[\w-]+)", ln) or [None, ""])[1]
             for ln in r.stdout.splitlines() if ln.startswith("GPU ")]
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is None:
        return len(uuids)
    seen = set()
    for tok in (t.strip() for t in cvd.split(",")):
        hits = ([int(tok)] if tok.isdigit() and int(tok) < len(uuids) else
                [i for i, u in enumerate(uuids) if tok.startswith("GPU-") and u.startswith(tok)])
        if len(hits) != 1 or hits[0] in seen:
            break
        seen.add(hits[0])
    return len(seen)


def hostfile_slots(path: str) -> Optional[int]:
    """Total ``slots=`` of an Open MPI hostfile, None when a host line leaves them to Open MPI."""
    if not os.path.isfile(path):
        raise LaunchError(f"hostfile not found: {path}")
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    hosts = [h for h in (ln.split("#", 1)[0].strip() for ln in lines) if h]
    if not hosts:
        raise LaunchError(f"hostfile {path} names no host (one line per host: 'host1 slots=8')")
    slots = [re.search(r"\bslots\s*=\s*(\d+)", h) for h in hosts]
    return None if None in slots else sum(int(m.group(1)) for m in slots)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def this_host_address() -> str:
    """``hostname -I``'s first address (what other hosts reach this one at), else loopback."""
    r = bounded_run(["hostname", "-I"], 10)
    return r.stdout.split()[0] if r and r.stdout.split() else "127.0.0.1"


@dataclass
class Launch:
    kind: str
    args: Args
    device: str
    python: str
    entry: str
    env: Dict[str, str]
    dry_run: bool

    @property
    def command(self) -> List[str]:  # what one process, or every rank, runs
        a = self.args
        return [self.python, self.entry, "--ckpt" if self.kind == "eval" else "--config", a.first,
                f"device_target={self.device}", *a.overrides, *a.forward, *a.passthrough]


def _whole(value: str, what: str, minimum: int) -> int:
    if not value.isdigit() or int(value) < minimum:
        raise LaunchError(f"{what} must be a whole number of at least {minimum}, got '{value}'")
    return int(value)


def one_device_env(env: Dict[str, str], device: str, card: str) -> Dict[str, str]:
    """One process on one card. On GPU it sees only that card, as its device 0 (an inherited
    DEVICE_ID would select a card it cannot see); on Ascend DEVICE_ID is the card."""
    env = dict(env)
    if device == "GPU":
        env.update(CUDA_VISIBLE_DEVICES=card or env.get("CUDA_VISIBLE_DEVICES") or "0", DEVICE_ID="0")
    elif device == "Ascend":
        env["DEVICE_ID"] = card or env.get("DEVICE_ID") or "0"
    else:
        env.pop("DEVICE_ID", None)
    return env


def get_ready(device: str, log_dir: Optional[str]) -> None:
    """The doctor's probe for GPU / Ascend, then LOG_DIR with its earlier logs moved to
    LOG_DIR/previous/<time>/ (a new launch, e.g. --resume, overwrites nothing)."""
    if device != "CPU" and not (res := check_device(device, timeout=120.0))["ok"]:
        raise LaunchError(f"DEVICE_TARGET={device} does not work on this machine: {res['detail']} "
                          f"(python -m ebv_ms.tools.doctor says what it needs; DEVICE_TARGET=CPU "
                          "runs the same launch on CPU)")
    if log_dir is None:
        return
    os.makedirs(log_dir, exist_ok=True)
    old = sorted({p for pat in LOG_PATTERNS for p in Path(log_dir).glob(pat)})
    if old:
        dest = os.path.join(log_dir, "previous", time.strftime("%Y%m%d-%H%M%S"))
        os.makedirs(dest, exist_ok=True)
        for p in old:
            os.replace(p, os.path.join(dest, p.name))
        print(f"[launch] earlier logs moved to {dest}", flush=True)


def tee(cmd: List[str], env: Dict[str, str], log_path: str, echo: bool, header: str = "",
        started: Callable[[subprocess.Popen], None] = lambda proc: None) -> int:
    """``cmd``'s exit status; its output goes to ``log_path`` (and the console when ``echo``)."""
    with open(log_path, "wb", buffering=0) as log:
        log.write(f"{header}\n".encode() if header else b"")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started(proc)
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            log.write(chunk)
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        return proc.wait()


def _stop(proc: subprocess.Popen, grace: float, term: float) -> int:
    for wait, then in ((grace, proc.terminate), (term, proc.kill)):
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            then()
    return proc.wait()


def _tail(path: str, n: int = 15) -> str:
    if not os.path.isfile(path):
        return ""
    lines = Path(path).read_text("utf-8", "replace").splitlines()
    return "\n".join([ln for ln in lines if not ln.startswith(("[WARNING]", "[INFO]"))][-n:])


def cluster_env(launch: Launch, num: int, hostfile: Optional[str]) -> Dict[str, str]:
    timeout = os.environ.get("CLUSTER_TIMEOUT", "600")
    env = dict(launch.env, MS_WORKER_NUM=str(num), MS_TOPO_TIMEOUT=timeout,
               MS_SCHED_HOST=os.environ.get("MS_SCHED_HOST")
               or (this_host_address() if hostfile else "127.0.0.1"),
               MS_SCHED_PORT=os.environ.get("MS_SCHED_PORT") or str(free_port()))
    if launch.device == "CPU":
        # CPU collectives give up after 30 s by default while ranks wait for rank 0 to evaluate or
        # save: a 2-rank run at 100k classes failed there (docs/launch.md). Wait as long as to join.
        env.setdefault("MS_CPU_COMM_OP_TIMEOUT", timeout)
    return env


def mpirun_command(launch: Launch, num: int, hostfile: Optional[str], log_dir: str,
                   cmd: List[str], env: Dict[str, str]) -> List[str]:
    extra = shlex.split(os.environ.get("MPIRUN_ARGS", ""))
    opts = ["-n", str(num)] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    opts += ["--hostfile", hostfile] if hostfile else ["--oversubscribe"]
    if "--bind-to" not in extra:  # a rank's many threads (kernels, data workers) on every core
        opts += ["--bind-to", "none"]
    for v in (*CLUSTER_VARS, "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "PATH", "LD_LIBRARY_PATH"):
        opts += ["-x", v] if env.get(v) else []
    return ["mpirun", *opts, *extra, launch.python, "-m", "ebv_ms.tools.launch", "rank", log_dir,
            *cmd]


def run_mpirun(launch: Launch, num: int, hostfile: Optional[str], log_dir: str) -> int:
    env = cluster_env(launch, num, hostfile)
    sched_cmd = [launch.python, "-m", "ebv_ms.tools.launch", "scheduler", launch.device]
    mpi_cmd = mpirun_command(launch, num, hostfile, log_dir, launch.command, env)
    head = (f"{num} ranks on {launch.device}, scheduler {env['MS_SCHED_HOST']}:"
            f"{env['MS_SCHED_PORT']}, logs in {log_dir}")
    if launch.dry_run:
        shown = " ".join(f"{k}={env[k]}" for k in CLUSTER_VARS if env.get(k))
        print(f"[dry-run] {head}\n[dry-run] environment: {shown}; each rank: MS_ROLE=MS_WORKER "
              f"MS_NODE_ID=RANK_ID=<rank> DEVICE_ID=<local rank>\n[scheduler] "
              f"{shlex.join(['env', 'MS_ROLE=MS_SCHED', *sched_cmd])}\n[mpirun] "
              f"{shlex.join(mpi_cmd)}\n[rank] {shlex.join(launch.command)}", flush=True)
        return 0
    if shutil.which("mpirun") is None:
        raise LaunchError("mpirun not found: install Open MPI (Debian/Ubuntu: apt-get install "
                          "openmpi-bin)")
    print(f"[launch] {head}", flush=True)
    # The scheduler only serves the rank discovery and leaves when the workers have; its own
    # session, so a Ctrl-C reaches mpirun (which stops the ranks) and we stop it last.
    with open(os.path.join(log_dir, "scheduler.log"), "wb") as slog:
        sched = subprocess.Popen(sched_cmd, env=dict(env, MS_ROLE="MS_SCHED"), stdout=slog,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    Path(log_dir, "scheduler.pid").write_text(str(sched.pid))
    # Open MPI's own reports go to mpirun.log: the screen shows the failed rank's error instead.
    with open(os.path.join(log_dir, "mpirun.log"), "wb") as mlog:
        mpi = subprocess.Popen(mpi_cmd, env=env, stderr=mlog)
    sched_failed = False
    try:
        while mpi.poll() is None:
            if not sched_failed and sched.poll() not in (None, 0):
                # else the ranks wait until the cluster timeout; every rank wrapper stops on SIGUSR1
                sched_failed = True
                lines = _tail(os.path.join(log_dir, "scheduler.log"), 200).splitlines()
                hits = [ln for ln in lines if re.search(r"Error|error:|Exception", ln)]
                why = (hits or lines or ["no output"])[-1].strip()[:500]
                print(f"[launch] the scheduler failed: {why}; stopping the ranks "
                      f"(log: {log_dir}/scheduler.log)", file=sys.stderr)
                mpi.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("[launch] interrupted; stopping the ranks", file=sys.stderr)
        mpi.send_signal(signal.SIGINT)
        _stop(mpi, 20, 0)
    rc = mpi.wait()
    _stop(sched, 30 if rc == 0 else 0, 10)
    Path(log_dir, "scheduler.exit").write_text(str(sched.returncode))
    if rc == 0:
        print(f"[launch] done: {num} ranks finished; logs in {log_dir}", flush=True)
    elif sched_failed:  # said above; the ranks were stopped on purpose
        print(f"[launch] FAILED: the scheduler failed; ranks stopped; logs in {log_dir}",
              file=sys.stderr)
    elif (first := first_failed_rank(log_dir)) is not None:
        rank, status, log, tail = first
        print(f"[launch] FAILED: rank {rank} failed with exit status {status}; its log: "
              f"{log}\n---- last lines of rank {rank}'s log ----\n{tail}\n----\n"
              "[launch] the other ranks and the scheduler were stopped", file=sys.stderr)
    else:
        mpi_log = os.path.join(log_dir, "mpirun.log")
        said = "\n".join(ln for ln in _tail(mpi_log, 30).splitlines() if ln.strip("- "))
        print(f"[launch] FAILED (mpirun exit status {rc}); no rank on this host reported an "
              "error" + (f"; mpirun said:\n{said}" if said else "") + f"\n[launch] see "
              f"{log_dir}/rank_*.log here and on the other hosts, {mpi_log} and "
              f"{log_dir}/scheduler.log", file=sys.stderr)
    return 0 if rc == 0 else rc if rc > 0 else 1


_FAILED = re.compile(r"^\[launch rank (\d+)\] failed with exit status (\S+) at ([\d.]+) on (\S+); "
                     r"its log: (.*?)\n(.*?)^\[launch rank end\]$", re.M | re.S)


def first_failed_rank(log_dir: str):
    """(rank, status, log, its last lines) of the first rank to fail, or None: from the wrappers'
    reports through mpirun (mpirun.log), else from this host's exit files."""
    mpi_log = Path(log_dir, "mpirun.log")
    reports = _FAILED.findall(mpi_log.read_text("utf-8", "replace")) if mpi_log.is_file() else []
    if reports:
        rank, status, _, host, log, tail = min(reports, key=lambda r: float(r[2]))
        return int(rank), status, f"{log} on {host}", tail.rstrip("\n")
    failed = [(p.stat().st_mtime, int(p.name[5:-5]), p.read_text().strip())
              for p in Path(log_dir).glob("rank_*.exit") if p.name[5:-5].isdigit()]
    failed = [f for f in failed if f[2] not in ("0", "killed", "")]
    if not failed:
        return None
    _, rank, status = min(failed)
    log = os.path.join(log_dir, f"rank_{rank}.log")
    return rank, status, log, _tail(log)


def run_rank(argv: List[str]) -> int:
    """One mpirun rank: a dynamic-cluster worker (MS_NODE_ID = RANK_ID = world rank, DEVICE_ID =
    local rank) logging to LOG_DIR/rank_K.log, its exit status in LOG_DIR/rank_K.exit."""
    log_dir, cmd = argv[0], argv[1:]
    rank = os.environ.get("OMPI_COMM_WORLD_RANK")
    if rank is None:
        print("launch rank: not started by mpirun (OMPI_COMM_WORLD_RANK unset)", file=sys.stderr)
        return 2
    local = os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", rank)
    # Without Open MPI's variables: MindSpore would see "both dynamic cluster and OpenMPI" and
    # join far more slowly (10-45 s instead of ~0-10 s for 2 ranks on CPU, measured).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_"))}
    env.update(MS_ROLE="MS_WORKER", MS_NODE_ID=rank, RANK_ID=rank, DEVICE_ID=local)
    os.makedirs(log_dir, exist_ok=True)
    exit_file = Path(log_dir, f"rank_{rank}.exit")
    exit_file.unlink(missing_ok=True)
    log, procs = os.path.join(log_dir, f"rank_{rank}.log"), []

    def stop(*_):
        # mpirun's SIGTERM (a rank failed) or SIGUSR1 (the scheduler did): leave no process waiting
        for proc in procs:
            _stop(proc, 0, 2)
        exit_file.write_text("killed")
        os._exit(143)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(s, stop)
    try:
        rc = tee(cmd, env, log, echo=rank == "0", header=f"[launch rank] rank {rank} (local "
                 f"{local}) on {socket.gethostname()}: {shlex.join(cmd)}", started=procs.append)
    except FileNotFoundError:  # as a shell says it, with its status; the report below shows it
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"launch rank: {cmd[0]}: program not found\n")
        rc = 127
    rc = rc if rc >= 0 else 128 - rc
    exit_file.write_text(str(rc))
    if rc:  # through mpirun to the launcher, which may be on another host than this log
        print(f"[launch rank {rank}] failed with exit status {rc} at {time.time():.3f} on "
              f"{socket.gethostname()}; its log: {os.path.abspath(log)}\n{_tail(log)}\n"
              "[launch rank end]", file=sys.stderr, flush=True)
    return rc


def run_scheduler(device: str) -> int:
    """The dynamic-cluster scheduler beside mpirun's ranks: init_distributed on ``device``, as
    under msrun (whose scheduler is the entry itself)."""
    if os.environ.get("MS_ROLE") != "MS_SCHED":
        print("launch scheduler: set MS_ROLE=MS_SCHED, MS_WORKER_NUM, MS_SCHED_HOST and "
              "MS_SCHED_PORT (the mpirun launch does this)", file=sys.stderr)
        return 2
    from ebv_ms.engine.distributed import init_distributed
    init_distributed({"device_target": device})  # sys.exit(0) once the workers are served
    return 0


def msrun_command(launch: Launch, local: int, log_dir: str, cmd: List[str]) -> List[str]:
    """msrun starting ``local`` ranks here (and the scheduler on the --master-addr node); with
    ``--nodes M`` the job has M x local ranks and this node is --node-rank."""
    o = launch.args.opts
    nodes = _whole(o.get("nodes", "1"), "--nodes", 1)
    multi = nodes > 1
    for k in ("node-rank", "master-addr"):
        if multi and k not in o:
            raise LaunchError(f"--nodes {nodes} needs --{k} (every machine runs this script with "
                              "the same --nodes, --master-addr and --master-port, and its own "
                              "--node-rank 0..M-1; docs/launch.md)")
        if not multi and k in o:
            raise LaunchError(f"--{k} is for several machines: give --nodes M as well")
    node_rank = _whole(o.get("node-rank", "0"), "--node-rank", 0)
    if node_rank >= nodes:
        raise LaunchError(f"--node-rank must be below --nodes ({nodes}), got {node_rank}")
    # Every machine must name the same port: a free one is picked only on a single machine.
    port = o.get("master-port") or os.environ.get("MASTER_PORT") or (
        "8118" if multi else str(free_port()))
    here = os.path.dirname(shutil.which(launch.python) or launch.python)  # a bare name: on PATH
    msrun = (here and shutil.which("msrun", path=here)) or shutil.which("msrun") or "msrun"
    out = [msrun, f"--worker_num={local * nodes}", f"--local_worker_num={local}",
           f"--master_port={port}", f"--log_dir={log_dir}", "--join=True",
           f"--cluster_time_out={os.environ.get('CLUSTER_TIMEOUT', '600')}", "--tail_worker_log=0"]
    if multi:
        out += [f"--master_addr={o['master-addr']}", f"--node_rank={node_rank}"]
    # msrun runs `python SCRIPT ARGS`: the command given here starts with the interpreter.
    return out + shlex.split(os.environ.get("MSRUN_ARGS", "")) + cmd[1:]


def run_msrun(launch: Launch, local: int, log_dir: str) -> int:
    mcmd = msrun_command(launch, local, log_dir, launch.command)
    env = dict(launch.env)
    if launch.device == "CPU":
        env.setdefault("MS_CPU_COMM_OP_TIMEOUT", os.environ.get("CLUSTER_TIMEOUT", "600"))
    # msrun starts the ranks with the `python` found on PATH: make it ours.
    if os.sep in launch.python:
        env["PATH"] = os.path.dirname(os.path.abspath(launch.python)) + os.pathsep + env["PATH"]
    head = f"msrun: {local} ranks here on {launch.device}, logs in {log_dir}"
    if launch.dry_run:
        print(f"[dry-run] {head}\n[msrun] {shlex.join(mcmd)}", flush=True)
        return 0
    if not os.path.isabs(mcmd[0]) and shutil.which(mcmd[0]) is None:
        raise LaunchError("msrun not found (it comes with MindSpore >= 2.3)")
    print(f"[launch] {head}", flush=True)
    # msrun's own messages go to msrun.log; worker 0's output, which msrun tails, to the console.
    with open(os.path.join(log_dir, "msrun.log"), "wb") as mlog:
        rc = subprocess.run(mcmd, env=env, stderr=mlog).returncode
    if rc == 0:
        print(f"[launch] done; logs in {log_dir}", flush=True)
        return 0
    logs = [os.path.join(log_dir, p.name) for p in Path(log_dir).glob("worker_*.log")
            if re.search(r"Traceback|error:|Error", _tail(p, 400))]
    if log := min(logs, key=os.path.getmtime, default=""):
        print(f"[launch] FAILED: the first rank to fail logged to {log}\n"
              f"---- last lines of {log} ----\n{_tail(log)}\n----\n"
              "[launch] msrun stopped the other ranks", file=sys.stderr)
    else:
        print(f"[launch] FAILED (msrun exit status {rc}); see {log_dir}/msrun.log and "
              f"{log_dir}/scheduler.log", file=sys.stderr)
    return rc


def run_ranks(launch: Launch, launcher: str, given: str, log_dir: str) -> int:
    """The entry on NUM_DEVICES ranks (``given``, else the GPUs visible here, else 8), checked
    against those GPUs (without a hostfile) and the hostfile's slots."""
    hostfile = launch.args.opts.get("hostfile")
    if launcher == "msrun" and hostfile:
        how = ("pass msrun's own options in MSRUN_ARGS" if launch.kind == "eval" else
               "run this script on every machine with --nodes M --node-rank K --master-addr HOST "
               "(docs/launch.md)")
        raise LaunchError(f"--hostfile: msrun takes no hostfile; {how}")
    gpus = visible_gpus() if launch.device == "GPU" else None
    num = _whole(given, "NUM_DEVICES", 1) if given else gpus or 8
    if gpus is not None and not hostfile and num > gpus:
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f" (CUDA_VISIBLE_DEVICES={cvd})" if cvd is not None else ""
        raise LaunchError(f"{num} ranks on this machine, but {gpus} GPU(s) are visible{seen}: "
                          f"give NUM_DEVICES <= {gpus}, or several machines with --hostfile")
    slots = hostfile_slots(hostfile) if hostfile else None
    if slots is not None and num > slots:
        raise LaunchError(f"{num} ranks, but the hostfile {hostfile} has {slots} slots: give "
                          f"NUM_DEVICES <= {slots} or more slots")
    if not launch.dry_run:
        get_ready(launch.device, log_dir)
    if launcher == "msrun":
        return run_msrun(launch, num, log_dir)
    return run_mpirun(launch, num, hostfile, log_dir)


def run_one(launch: Launch, card: str, log_dir: Optional[str]) -> int:
    """One process on ``card``, logged to LOG_DIR/rank_0.log, or without LOG_DIR (evaluation) in
    place of this process."""
    env = one_device_env(launch.env, launch.device, card)
    cmd = launch.command
    if launch.dry_run:
        shown = " ".join(f"{k}={env[k]}" for k in ("CUDA_VISIBLE_DEVICES", "DEVICE_ID") if k in env)
        print(f"[dry-run] 1 process on {launch.device}; environment: "
              f"{shown or '(no device variables)'}\n[run] {shlex.join(cmd)}", flush=True)
        return 0
    get_ready(launch.device, log_dir)
    if log_dir is None:
        sys.stdout.flush()
        os.execvpe(cmd[0], cmd, env)
    log = os.path.join(log_dir, "rank_0.log")
    print(f"[launch] 1 process on {launch.device}{f' (device {card})' if card else ''}; "
          f"log: {log}", flush=True)
    rc = tee(cmd, env, log, echo=True)
    if rc:
        print(f"[launch] FAILED (exit status {rc}); log: {log}", file=sys.stderr)
    return rc


def launch_training(launch: Launch) -> int:
    """The config checked as train.py will (creating nothing), then train.py on one device or on
    the ranks."""
    import logging
    from ebv_ms.config import check_run, load_config
    a = launch.args
    cfg = load_config(a.first, [f"device_target={launch.device}", *a.overrides])
    logging.getLogger("ebv_ms").setLevel(logging.ERROR)  # its warnings are the ranks' to give
    check_run(cfg, training=False)
    log_dir = os.path.join(str(cfg.output_dir), "logs")
    if launch.kind == "standalone":
        return run_one(launch, a.second, log_dir)
    return run_ranks(launch, launch.kind, a.second, log_dir)


def launch_eval(launch: Launch) -> int:
    a, o = launch.args, launch.args.opts
    if not os.path.isfile(a.first):
        raise LaunchError(f"checkpoint not found: {a.first}")
    _whole(o.get("device-id", "0"), "--device-id", 0)
    ranks = _whole(o.get("ranks", "1"), "--ranks", 1)
    if ranks == 1 and "hostfile" not in o:
        if stray := [k for k in ("launcher", "log-dir") if k in o]:
            raise LaunchError(f"--{stray[0]} only applies with --ranks N (N > 1)")
        return run_one(launch, o.get("device-id", ""), None)
    if "device-id" in o:
        raise LaunchError("--device-id is for one process; with --ranks each rank uses its "
                          "local card (set CUDA_VISIBLE_DEVICES to choose the cards)")
    launcher = o.get("launcher") or ("msrun" if launch.device == "Ascend" else "mpirun")
    if launcher not in ("mpirun", "msrun"):
        raise LaunchError(f"--launcher must be mpirun or msrun, got '{launcher}'")
    log_dir = o.get("log-dir") or os.path.join(os.path.dirname(a.first) or ".", "logs", "eval")
    return run_ranks(launch, launcher, str(ranks), log_dir)


def launch_quick_start(launch: Launch) -> int:
    """Demo data if needed, the EBV set, training (continued when interrupted), evaluation of the
    best checkpoint: on a GPU that passes the doctor's probe, else on CPU."""
    from ebv_ms.config import load_config
    demo = "configs/demo_cpu.yaml"
    given = os.path.abspath(launch.args.first) if launch.args.first else ""  # the caller's cwd
    os.chdir(ROOT)  # the steps, and the demo config's paths, are relative to the repository
    config = demo if given in ("", os.path.abspath(demo)) else given
    if not os.path.isfile(config):
        raise LaunchError(f"config not found: {config}")
    t0, py = time.time(), launch.python
    say = lambda text: print(f"quick start: {text}", flush=True)  # noqa: E731
    if os.environ.get("EBV_PYTHON"):
        say(f"using {py} (EBV_PYTHON set; scripts/setup_env.sh skipped)")
    device, gpu = "CPU", os.environ.get("EBV_FORCE_CPU", "0") != "1" and visible_gpus()
    if gpu and (res := check_device("GPU", timeout=600.0))["ok"]:
        device = "GPU"
        say(f"GPU found; running on GPU with {config}")
    elif gpu:
        say(f"nvidia-smi lists a GPU but MindSpore cannot run on it ({res['detail'][:200]}); "
            "falling back to CPU")
    if device == "CPU":
        say("no usable GPU found: running the same flow on CPU with the demo config "
            f"({config})" if config == demo else
            f"no usable GPU: running {config} on CPU (device_target=CPU) - this may be slow")
    ovr = [*launch.args.overrides, f"device_target={device}"]
    cfg = load_config(config, ovr)
    out, data = str(cfg.output_dir), cfg.data.get("path") or ""
    steps = []
    if not os.path.exists(data):
        if os.path.basename(data) != "digits.zip":
            raise LaunchError(f"data.path '{data}' not found; set data.path=... to your dataset")
        steps.append((f"[1/4] writing the demo images to {os.path.dirname(data)}/",
                      [py, "-m", "ebv_ms.tools.make_demo", "--out", os.path.dirname(data)]))
    else:
        say(f"[1/4] data: {data}")
    ckpt = os.path.join(out, "best.ckpt")
    steps += [("[2/4] EBV set", [py, "-m", "ebv_ms.tools.make_ebv", "--config", config, *ovr]),
              (f"[3/4] training -> {out}", [py, "train.py", "--config", config, "--resume", *ovr]),
              ("[4/4] evaluating the best checkpoint",
               [py, "eval.py", "--ckpt", ckpt, "--json", os.path.join(out, "eval.json"),
                f"device_target={device}"])]
    for text, cmd in steps:
        say(text)
        if cmd[1] == "eval.py" and not os.path.isfile(ckpt):
            cmd[3] = os.path.join(out, "last.ckpt")
        rc = subprocess.run(cmd, env=launch.env).returncode
        if rc:
            return rc
    say(f"done on {device} in {time.time() - t0:.0f} s; logs, checkpoints and eval.json in {out}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rank"] and len(argv) >= 3:
        return run_rank(argv[1:])
    if argv[:1] == ["scheduler"] and len(argv) == 2:
        return run_scheduler(argv[1])
    if len(argv) < 2 or argv[0] not in SPECS:
        print(f"usage: python -m ebv_ms.tools.launch {{{','.join(SPECS)}}} SCRIPT [ARGS ...]"
              " | rank LOG_DIR COMMAND ... | scheduler DEVICE", file=sys.stderr)
        return 2
    kind, script = argv[0], argv[1]
    prog = os.path.relpath(os.path.abspath(script), ROOT)
    if prog.startswith(".."):
        prog = os.path.basename(script)

    def body() -> int:
        entry = os.environ.get("ENTRY") or os.path.join(ROOT, SPECS[kind].entry)
        try:
            args = parse_args(SPECS[kind], argv[2:], prog, os.path.basename(entry))
        except _Usage as u:  # the usage text: the script's header comment, after the shebang
            lines = Path(script).read_text(encoding="utf-8").splitlines()[1:]
            print("\n".join(re.sub(r"^# ?", "", ln) for ln in itertools.takewhile(
                lambda ln: ln.startswith("#"), lines)), file=sys.stderr if u.args[0] else sys.stdout)
            return 2 if u.args[0] else 0
        device = os.environ.get("DEVICE_TARGET") or SPECS[kind].device
        if device not in ("CPU", "GPU", "Ascend"):
            raise LaunchError(f"DEVICE_TARGET must be CPU, GPU or Ascend, got '{device}'")
        if not os.path.isfile(entry):
            raise LaunchError(f"{'evaluation' if kind == 'eval' else 'training'} script not "
                              f"found: {entry} (ENTRY)")
        env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        launch = Launch(kind, args, device, os.environ.get("PYTHON") or sys.executable, entry, env,
                        "dry-run" in args.opts)
        run = {"eval": launch_eval, "quick-start": launch_quick_start}.get(kind, launch_training)
        return run(launch)

    return run_cli(prog, body)


if __name__ == "__main__":
    sys.exit(main())

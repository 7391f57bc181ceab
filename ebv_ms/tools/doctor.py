"""``python -m ebv_ms.tools.doctor``: what this machine can run, and what each device would need.

Each device target is probed in its own time-bounded subprocess; CUDA libraries come from ``ldd``,
the Ascend chip from ``npu-smi``. A device without its hardware is "not here", not a problem; a
hung tool is a problem line. Exit status 0 when the CPU flow works, 1 otherwise.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

from ebv_ms.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# MindSpore 2.10.0 ships two GPU plugins and picks the one matching the CUDA runtime; cuDNN as
# recommended in mindspore/run_check/_check_version.py.
GPU_PLUGINS = {"11.1": "cuDNN 8.0", "11.6": "cuDNN 8.5"}
_CUDA_LIB = re.compile(r"^(libcu\w*|libnvrtc|libnccl|libnvidia_collective)")
HARDWARE = {"GPU": "nvidia_smi", "Ascend": "npu_smi"}  # the report's key for each device's tool
# Sources: mindspore/device_context/ascend/op_precision.py (the default mode) and CANN's ATC guide
# (that mode cannot lower an fp32 operator whose AI Core kernel is fp16-only).
ASCEND_910A = ("Ascend 910A: MindSpore 2.10 keeps fp32 MatMul in fp32 by default (precision_mode "
               "must_keep_origin_dtype) and the 910A's Cube unit multiplies fp16 only, so the fp32 "
               "EBV head and projection fall back to slow float32 kernels or fail to compile; "
               "before training call mindspore.device_context.ascend.op_precision.precision_mode("
               "'allow_fp32_to_fp16') (MatMul in fp16, vector ops stay fp32; docs/deploy.md)")

_PROBE = r"""
import sys, numpy as np, mindspore as ms
ms.set_device(sys.argv[1])
a = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
got = (a @ a.T).asnumpy().tolist()
assert got == [[5.0, 14.0], [14.0, 50.0]], got
ms.run_check()
print("EBV_DOCTOR_OK")
"""


def bounded_run(cmd: List[str], timeout: float, problems: Optional[list] = None, **kw):
    """``subprocess.run`` bounded by ``timeout``; a hang or a failure to start is None (and a
    problem line in ``problems``), never an exception."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except (subprocess.TimeoutExpired, OSError) as exc:
        if problems is not None:
            why = (f"did not answer within {timeout:g} s (hung)"
                   if isinstance(exc, subprocess.TimeoutExpired) else f"could not run ({exc})")
            problems.append(dict(what=f"`{' '.join(cmd)}` {why}", remedy=f"check {cmd[0]} by "
                                 "hand; the rest of the report is unaffected"))
        return None


def check_device(target: str, timeout: float = 120.0) -> Dict:
    """The probe (a 2x3 matmul with a known answer, ``run_check``) in a fresh interpreter."""
    r = bounded_run([sys.executable, "-c", _PROBE, target], timeout, env=dict(os.environ, GLOG_v="3"))
    if r is None:
        return {"ok": False, "detail": f"no answer within {timeout:g} s (hung)"}
    if r.returncode == 0 and "EBV_DOCTOR_OK" in r.stdout and "successfully" in r.stdout:
        return {"ok": True, "detail": "2x3 matmul correct; mindspore.run_check() passed"}
    lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    errors = ("RuntimeError", "ValueError", "AssertionError", "ImportError", "OSError")
    last = (lines or [f"exit status {r.returncode}"])[-1]
    why = next((ln for ln in lines if ln.startswith(errors)), last)
    why = why if r.returncode >= 0 else f"crashed with signal {-r.returncode}"
    return {"ok": False, "detail": why.split(". ")[0][:200]}  # MindSpore's first sentence


def gpu_libraries(ms_dir: str, timeout: float, problems: list) -> Dict[str, Dict]:
    """{CUDA version: {soname: path or None}} for each GPU plugin (and its bundled NCCL) from
    ``ldd``, which resolves like the loader. A hung ``ldd`` is asked once, then left alone."""
    out: Dict[str, Dict[str, Optional[str]]] = {cuda: {} for cuda in GPU_PLUGINS}
    plugin = os.path.join(ms_dir, "lib", "plugin")
    ldd = shutil.which("ldd")
    for cuda, found in out.items():
        for so in (os.path.join(plugin, f"libmindspore_gpu.so.{cuda}"),
                   os.path.join(plugin, f"gpu{cuda}", "libnvidia_collective.so")):
            r = bounded_run([ldd, so], timeout, problems) if ldd and os.path.isfile(so) else None
            ldd = None if ldd and os.path.isfile(so) and r is None else ldd
            for line in (r.stdout.splitlines() if r else []):
                m = re.match(r"\s*(\S+)\s+=>\s+(not found|\S+)", line)
                if m and _CUDA_LIB.match(m.group(1)):
                    found[m.group(1)] = None if m.group(2) == "not found" else m.group(2)
    return out


def _tool(name: str, timeout: float, problems: list, args=("--version",)) -> Optional[str]:
    path = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    r = bounded_run([path, *args], timeout, problems) if path else None
    first = (r.stdout or r.stderr).strip().splitlines() if r else []
    return f"{path} ({first[0]})" if first and r.returncode == 0 else path


def diagnose(timeout: float, targets: tuple, tool_timeout: float) -> Dict:
    rep: Dict = {"python": sys.version.split()[0], "executable": sys.executable,
                 "venv": sys.prefix if sys.prefix != sys.base_prefix else None, "problems": []}
    problems: List[Dict[str, str]] = rep["problems"]
    setup = f"bash {ROOT}/scripts/setup_env.sh"
    if rep["venv"] is None:
        problems.append(dict(what="not running inside a virtual environment",
                             remedy=f"{setup}, then use {ROOT}/.venv/bin/python"))
    spec = importlib.util.find_spec("mindspore")
    rep["mindspore_dir"] = ms_dir = os.path.dirname(spec.origin) if spec and spec.origin else None
    rep["mindspore"] = next((d.version for d in importlib.metadata.distributions(name="mindspore")),
                            None)
    if rep["mindspore"] is None or ms_dir is None:
        problems.append(dict(what="MindSpore is not installed in this Python",
                             remedy=f"{setup} (installs mindspore==2.10.0)"))
        return rep
    if rep["mindspore"] != "2.10.0":
        problems.append(dict(what=f"MindSpore {rep['mindspore']} installed; this project pins "
                             "2.10.0", remedy="pip install mindspore==2.10.0 'numpy<2' (or bash "
                             "scripts/setup_env.sh)"))
    rep["devices"] = {t: check_device(t, timeout) for t in targets}
    rep["gpu_libraries"] = libs = gpu_libraries(ms_dir, tool_timeout, problems)
    rep["nvidia_smi"] = _tool("nvidia-smi", tool_timeout, problems, ("-L",))
    rep["npu_smi"] = _tool("npu-smi", tool_timeout, problems, ("info",))
    chip = re.search(r"\b910(?:Pro|Premium)?A?\b(?!\w)", rep["npu_smi"] or "")
    rep["ascend_notes"] = [ASCEND_910A] if chip and "910B" not in (rep["npu_smi"] or "") else []
    for t, res in rep["devices"].items():
        if not res["ok"] and (t == "CPU" or rep[HARDWARE[t]]):  # else "not here", not a problem
            problems.append(dict(what=f"{t} target fails: {res['detail']}", remedy=_needs(t, libs)))
    for launcher, needed_by, remedy in (
            ("mpirun", "scripts/run_distribute_gpu.sh and the 2-rank tests need it",
             "apt-get install openmpi-bin (.ci/run does it)"),
            ("msrun", "scripts/run_distribute_ascend.sh needs it",
             "it comes with MindSpore: use the venv's python/bin (bash scripts/setup_env.sh)")):
        rep[launcher] = _tool(launcher, tool_timeout, problems)
        if rep[launcher] is None:
            problems.append(dict(what=f"{launcher} not found ({needed_by})", remedy=remedy))
    return rep


NEEDS = {"CPU": "reinstall: rm -rf .venv && bash scripts/setup_env.sh",
         "Ascend": "an Ascend NPU (npu-smi) with the CANN toolkit matching MindSpore 2.10, set up by "
                   "`source /usr/local/Ascend/ascend-toolkit/set_env.sh` before running",
         "GPU": "an NVIDIA GPU with its driver (nvidia-smi, libcuda.so.1) and one CUDA 11.x toolkit "
                "with cuDNN 8 for MindSpore 2.10's plugins (CUDA 11.6 + cuDNN 8.5, or 11.1 + 8.0) on "
                "the loader path (export LD_LIBRARY_PATH=/usr/local/cuda-11.6/lib64:$LD_LIBRARY_PATH)"}


def _needs(target: str, libs: Dict[str, Dict[str, Optional[str]]]) -> str:
    missing = ", ".join(sorted({k for found in libs.values() for k, v in found.items() if v is None}))
    gpu = NEEDS["GPU"] + (f"; missing here: {missing}" if missing else "")
    return gpu + "; NCCL is bundled with MindSpore" if target == "GPU" else NEEDS[target]


def format_report(rep: Dict) -> str:
    devices = rep.get("devices") or {}
    cpu = devices.get("CPU")
    lines = [] if cpu is None else ["can run    : " + (
        "the CPU demo, the tests and CPU training (device_target=CPU)" if cpu["ok"]
        else "nothing: the CPU target fails (see problems)")]
    for t in ("GPU", "Ascend"):
        if t in devices:
            state = ("works here: training and the launchers on this device" if devices[t]["ok"]
                     else "FAILS although the hardware is there (see problems)"
                     if rep.get(HARDWARE[t]) else
                     f"not here; needs {_needs(t, rep.get('gpu_libraries') or {})}")
            lines.append(f"{t:<11}: {state}")
    lines += [f"Ascend note: {n}" for n in rep.get("ascend_notes", [])]
    if "mpirun" in rep:
        lines.append(f"multi-rank : mpirun {'found' if rep['mpirun'] else 'MISSING'} (GPU/CPU "
                     f"clusters), msrun {'found' if rep['msrun'] else 'MISSING'} (Ascend)")
    n = len(rep["problems"])
    lines.append(f"{n} problem(s), listed at the end" if n else "no problems found")
    lines += ["", "details:",
              f"MindSpore  {rep.get('mindspore') or 'NOT INSTALLED'}  ({rep.get('mindspore_dir')})",
              f"Python     {rep['python']}  {rep['executable']}",
              f"venv       {rep['venv'] or 'none (system Python)'}"]
    for t, res in devices.items():
        lines.append(f"device {t:<7}{'ok     ' if res['ok'] else 'NOT OK '} {res['detail']}")
    for cuda, found in (rep.get("gpu_libraries") or {}).items():
        lines.append(f"GPU plugin for CUDA {cuda} ({GPU_PLUGINS[cuda]}) needs:")
        lines += [f"    {name:<28} {path or 'MISSING'}" for name, path in sorted(found.items())]
    lines += [f"{k.replace('_', '-'):<10} {(rep[k] or 'not found').splitlines()[0]}"
              for k in ("nvidia_smi", "npu_smi", "mpirun", "msrun") if k in rep]
    if n:
        lines.append(f"\n{n} problem(s):")
        lines += [f"{i}. {p['what']}\n   remedy: {p['remedy']}"
                  for i, p in enumerate(rep["problems"], 1)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ebv_ms.tools.doctor",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per device check")
    ap.add_argument("--tool-timeout", type=float, default=30.0,
                    help="seconds for each tool asked (ldd, nvidia-smi, npu-smi, mpirun, msrun)")
    ap.add_argument("--targets", default="CPU,GPU,Ascend", help="device targets to try")
    a = ap.parse_args(argv)
    targets = tuple(t for t in a.targets.split(",") if t)  # empty items ("CPU,,GPU") are skipped
    unknown = ", ".join(repr(t) for t in targets if t not in NEEDS)
    if unknown:
        ap.error(f"--targets: unknown {unknown}; the targets are CPU, GPU, Ascend")

    def report() -> int:
        rep = diagnose(a.timeout, targets, a.tool_timeout)
        print(json.dumps(rep, indent=1) if a.json else format_report(rep))
        cpu = rep.get("devices", {}).get("CPU")  # no "devices": MindSpore is missing or broken
        return 0 if "devices" in rep and (cpu is None or cpu["ok"]) else 1

    return run_cli("doctor", report)


if __name__ == "__main__":
    sys.exit(main())

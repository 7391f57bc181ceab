"""``python -m ebv_ms.tools.doctor``: what this machine can run, and what to do about what it cannot.

Prints MindSpore's version and install, the Python environment, which device targets (CPU,
GPU, Ascend) pass a small computation with a known answer plus ``mindspore.run_check()``
(each in its own subprocess with a timeout, so a broken GPU plugin cannot hang or crash the
check), the CUDA / cuDNN / NCCL libraries MindSpore 2.10's GPU plugins need (read from the
installed ``libmindspore_gpu.so.11.{1,6}`` with ``ldd``: found or missing), mpirun and msrun
(the launchers of scripts/run_distribute_{gpu,ascend}.sh), and every problem with its remedy.
Exit status 0 when the CPU flow works (the quick start and the tests), 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

# MindSpore 2.10.0 wheels ship two GPU plugins; MindSpore picks the one matching the CUDA
# runtime it finds (mindspore/run_check/_check_version.py). cuDNN versions: MindSpore's own
# recommendation there ("CUDA11.1 with cuDNN8.0.x or CUDA11.6 with cuDNN8.5.x").
GPU_PLUGINS = {"11.1": "cuDNN 8.0", "11.6": "cuDNN 8.5"}
_CUDA_LIB = re.compile(r"^(libcu\w*|libnvrtc|libnccl|libnvidia_collective)")

_PROBE = r"""
import sys, numpy as np, mindspore as ms
ms.set_device(sys.argv[1])
a = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
got = (a @ a.T).asnumpy().tolist()
assert got == [[5.0, 14.0], [14.0, 50.0]], got
ms.run_check()
print("EBV_DOCTOR_OK")
"""


def _mindspore_dir() -> Optional[str]:
    import importlib.util
    spec = importlib.util.find_spec("mindspore")
    return os.path.dirname(spec.origin) if spec and spec.origin else None


def check_device(target: str, timeout: float = 120.0) -> Dict:
    """Run the probe for ``target`` in a fresh interpreter: {"ok", "detail"}."""
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, target], capture_output=True, text=True,
                           timeout=timeout, env=dict(os.environ, GLOG_v="3"))
    except subprocess.TimeoutExpired:
        return {"ok": False, "detail": f"no answer within {timeout:.0f} s (hung)"}
    out = r.stdout + r.stderr
    if r.returncode == 0 and "EBV_DOCTOR_OK" in r.stdout and "successfully" in r.stdout:
        return {"ok": True, "detail": "2x3 matmul correct; mindspore.run_check() passed"}
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    why = next((ln for ln in lines if ln.startswith(("RuntimeError", "ValueError", "AssertionError",
                                                     "ImportError", "OSError"))), None)
    why = why or (lines[-1] if lines else f"exit status {r.returncode}")
    if r.returncode < 0:
        why = f"crashed with signal {-r.returncode}"
    return {"ok": False, "detail": why[:400]}


def gpu_libraries(ms_dir: str) -> Dict[str, Dict[str, Optional[str]]]:
    """{CUDA version: {soname: path or None}} for each GPU plugin, from ``ldd`` (which resolves
    like the loader will: LD_LIBRARY_PATH, the plugin's RPATH incl. /usr/local/cuda/lib64, the
    system cache). The NCCL MindSpore uses is bundled in plugin/gpu11.x/."""
    out: Dict[str, Dict[str, Optional[str]]] = {}
    plugin = os.path.join(ms_dir, "lib", "plugin")
    for cuda in GPU_PLUGINS:
        libs: Dict[str, Optional[str]] = {}
        targets = [os.path.join(plugin, f"libmindspore_gpu.so.{cuda}"),
                   os.path.join(plugin, f"gpu{cuda}", "libnvidia_collective.so")]
        for so in targets:
            if not os.path.isfile(so):
                continue
            libs.update(_ldd_cuda(so))
        out[cuda] = libs
    return out


def _ldd_cuda(path: str) -> Dict[str, Optional[str]]:
    ldd = shutil.which("ldd")
    if not ldd:
        return {}
    r = subprocess.run([ldd, path], capture_output=True, text=True, timeout=30)
    found: Dict[str, Optional[str]] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(not found|\S+)", line)
        if m and _CUDA_LIB.match(m.group(1)):
            found[m.group(1)] = None if m.group(2) == "not found" else m.group(2)
    return found


def _tool(name: str) -> Optional[str]:
    venv_bin = os.path.dirname(sys.executable)
    path = shutil.which(name) or shutil.which(name, path=venv_bin)
    if not path:
        return None
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        first = (r.stdout or r.stderr).strip().splitlines()
        return f"{path} ({first[0]})" if first and r.returncode == 0 else path
    except (OSError, subprocess.TimeoutExpired):
        return path


def diagnose(timeout: float = 120.0, targets=("CPU", "GPU", "Ascend")) -> Dict:
    """Everything the report prints, as a dict (``--json``)."""
    rep: Dict = {"python": sys.version.split()[0], "executable": sys.executable,
                 "venv": sys.prefix if sys.prefix != sys.base_prefix else None, "problems": []}
    problems: List[Dict[str, str]] = rep["problems"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if rep["venv"] is None:
        problems.append({"what": "not running inside a virtual environment",
                         "remedy": f"bash {root}/scripts/setup_env.sh, then use {root}/.venv/bin/python"})
    ms_dir = _mindspore_dir()
    rep["mindspore_dir"] = ms_dir
    try:
        from importlib.metadata import version
        rep["mindspore"] = version("mindspore")
    except Exception:  # noqa: BLE001 - not installed
        rep["mindspore"] = None
    if rep["mindspore"] is None or ms_dir is None:
        problems.append({"what": "MindSpore is not installed in this Python",
                         "remedy": f"bash {root}/scripts/setup_env.sh (installs mindspore==2.10.0)"})
        return rep
    if rep["mindspore"] != "2.10.0":
        problems.append({"what": f"MindSpore {rep['mindspore']} installed; this project pins 2.10.0",
                         "remedy": "pip install mindspore==2.10.0 'numpy<2' (or bash scripts/setup_env.sh)"})

    rep["devices"] = {t: check_device(t, timeout) for t in targets}
    libs = gpu_libraries(ms_dir)
    rep["gpu_libraries"] = libs
    for t, res in rep["devices"].items():
        if res["ok"]:
            continue
        if t == "CPU":
            problems.append({"what": f"CPU target fails: {res['detail']}",
                             "remedy": "reinstall: rm -rf .venv && bash scripts/setup_env.sh"})
        elif t == "GPU":
            problems.append({"what": f"GPU target unavailable: {res['detail']}",
                             "remedy": _gpu_remedy(libs)})
        else:
            problems.append({"what": f"Ascend target unavailable: {res['detail']}",
                             "remedy": "on an Ascend machine: install the CANN toolkit matching "
                                       "MindSpore 2.10 and `source /usr/local/Ascend/ascend-toolkit/"
                                       "set_env.sh` before running; nothing to do elsewhere"})
    rep["nvidia_smi"] = _tool("nvidia-smi")
    rep["mpirun"] = _tool("mpirun")
    rep["msrun"] = _tool("msrun")
    if rep["mpirun"] is None:
        problems.append({"what": "mpirun not found (scripts/run_distribute_gpu.sh and the 2-rank "
                                 "tests need it)",
                         "remedy": "apt-get install openmpi-bin (.ci/run does it)"})
    if rep["msrun"] is None:
        problems.append({"what": "msrun not found (scripts/run_distribute_ascend.sh needs it)",
                         "remedy": "it comes with MindSpore: use the venv's python/bin "
                                   "(bash scripts/setup_env.sh)"})
    return rep


def _gpu_remedy(libs: Dict[str, Dict[str, Optional[str]]]) -> str:
    parts = []
    for cuda, found in libs.items():
        missing = sorted(k for k, v in found.items() if v is None)
        if missing:
            parts.append(f"CUDA {cuda} plugin misses {', '.join(missing)}")
    driver = any(k == "libcuda.so.1" and v for f in libs.values() for k, v in f.items())
    text = "; ".join(parts) + ". " if parts else ""
    text += ("MindSpore 2.10's GPU plugins are built for CUDA 11.1 (with cuDNN 8.0) and CUDA 11.6 "
             "(with cuDNN 8.5): install one CUDA 11.x toolkit and cuDNN 8 for it, and put their "
             "lib64 on the loader path (export LD_LIBRARY_PATH=/usr/local/cuda-11.6/lib64:"
             "$LD_LIBRARY_PATH, or /usr/local/cuda -> cuda-11.6)")
    if not driver:
        text += "; libcuda.so.1 comes with the NVIDIA driver: install it (nvidia-smi must work)"
    return text + ". NCCL is bundled with MindSpore (lib/plugin/gpu11.x/libnccl.so.2)."


def format_report(rep: Dict) -> str:
    lines = [f"MindSpore  {rep.get('mindspore') or 'NOT INSTALLED'}  ({rep.get('mindspore_dir')})",
             f"Python     {rep['python']}  {rep['executable']}",
             f"venv       {rep['venv'] or 'none (system Python)'}"]
    for t, res in (rep.get("devices") or {}).items():
        lines.append(f"device {t:<7}{'ok     ' if res['ok'] else 'NOT OK '} {res['detail']}")
    for cuda, found in (rep.get("gpu_libraries") or {}).items():
        lines.append(f"GPU plugin for CUDA {cuda} ({GPU_PLUGINS[cuda]}) needs:")
        for name, path in sorted(found.items()):
            lines.append(f"    {name:<28} {path or 'MISSING'}")
    for k in ("nvidia_smi", "mpirun", "msrun"):
        if k in rep:
            lines.append(f"{k.replace('_', '-'):<10} {rep[k] or 'not found'}")
    if rep["problems"]:
        lines.append(f"\n{len(rep['problems'])} problem(s):")
        for i, p in enumerate(rep["problems"], 1):
            lines.append(f"{i}. {p['what']}\n   remedy: {p['remedy']}")
    else:
        lines.append("\nno problems found")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ebv_ms.tools.doctor", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per device check")
    ap.add_argument("--targets", default="CPU,GPU,Ascend", help="device targets to try")
    a = ap.parse_args(argv)
    rep = diagnose(a.timeout, tuple(t for t in a.targets.split(",") if t))
    print(json.dumps(rep, indent=1) if a.json else format_report(rep))
    cpu = (rep.get("devices") or {}).get("CPU")
    return 0 if rep.get("mindspore") and (cpu is None or cpu["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())

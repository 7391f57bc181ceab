"""python -m ebv_ms.tools.doctor, for real on this machine (whatever it has): the first lines say
what runs here and what each device would need; a device without its hardware is not a problem;
a hung tool is one problem line, and the 910A's fp32 MatMul caveat is reported."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _doctor(*args, env=None):
    r = subprocess.run([sys.executable, "-m", "ebv_ms.tools.doctor", *args], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


@pytest.mark.slow
def test_doctor_says_first_what_this_machine_runs():
    rep = json.loads(_doctor("--json", "--targets", "CPU,GPU"))
    pinned = re.search(r"^mindspore==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert rep["mindspore"] == pinned and rep["venv"] == sys.prefix
    assert rep["devices"]["CPU"]["ok"] is True
    libs = rep["gpu_libraries"]
    assert set(libs) == {"11.1", "11.6"}
    for cuda, nvrtc in (("11.1", "libnvrtc.so.11.1"), ("11.6", "libnvrtc.so.11.2")):
        assert {"libcudart.so.11.0", "libcudnn.so.8", "libcublas.so.11", nvrtc} <= set(libs[cuda])
        assert libs[cuda]["libnccl.so.2"].endswith(f"plugin/gpu{cuda}/libnccl.so.2")  # bundled
    assert (rep["mpirun"] is not None) == (shutil.which("mpirun") is not None)
    assert rep["msrun"] is not None
    assert (rep["nvidia_smi"] is not None) == (shutil.which("nvidia-smi") is not None)
    gpu_problems = [p for p in rep["problems"] if p["what"].startswith("GPU")]
    gpu_ok = rep["devices"]["GPU"]["ok"]
    # a GPU problem exactly when a driver is there and the GPU target still fails
    assert len(gpu_problems) == (0 if gpu_ok or rep["nvidia_smi"] is None else 1)
    for p in gpu_problems:
        assert "cuDNN 8.5" in p["remedy"] and "LD_LIBRARY_PATH" in p["remedy"]

    from ebv_ms.tools.doctor import format_report  # the text form of the same report
    text = format_report(rep)
    first = text.splitlines()[:4]
    assert first[0] == "can run    : the CPU demo, the tests and CPU training (device_target=CPU)"
    assert first[1].startswith("GPU        : " + ("works here" if gpu_ok else "not here; needs an NVIDIA GPU"))
    assert text.count("RuntimeError") <= 1 and text.count("remedy: ") == len(rep["problems"])
    assert text.splitlines()[3] == (f"{len(rep['problems'])} problem(s), listed at the end"
                                    if rep["problems"] else "no problems found")


@pytest.mark.slow
def test_hung_ldd_is_a_problem_line_and_910a_is_reported(tmp_path):
    """A stand-in `ldd` that never answers (the doctor ended in TimeoutExpired after 30 s) and a
    stand-in `npu-smi` describing a 910A, first on PATH."""
    (tmp_path / "ldd").write_text("#!/bin/sh\nsleep 600\n")
    (tmp_path / "npu-smi").write_text("#!/bin/sh\necho '| 0     910A     | OK  | 72.1  45 |'\n")
    for f in ("ldd", "npu-smi"):
        os.chmod(tmp_path / f, 0o755)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    text = _doctor("--targets", "CPU,Ascend", "--tool-timeout", "2", env=env)
    assert text.startswith("can run    : the CPU demo, the tests and CPU training")
    assert "Ascend note: Ascend 910A: MindSpore 2.10 keeps fp32 MatMul in fp32" in text
    hung = [ln for ln in text.splitlines() if "ldd " in ln and "did not answer within 2 s" in ln]
    assert len(hung) == 1, text                             # asked once, then left alone
    assert "Ascend     : FAILS although the hardware is there" in text
    assert re.search(r"^\d\. Ascend target fails: ", text, re.M)  # its hardware is there
    assert "Traceback" not in text


@pytest.mark.parametrize("spec", [None, "namespace"])
def test_a_broken_mindspore_install_exits_1(monkeypatch, capsys, spec):
    """MindSpore's metadata is there but no importable module (deleted files; a leftover folder,
    a namespace package): the doctor reported it, yet exited 0 as if the CPU flow worked."""
    import importlib.machinery
    import importlib.util
    from ebv_ms.tools import doctor
    real = importlib.util.find_spec
    broken = None if spec is None else importlib.machinery.ModuleSpec("mindspore", None)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: broken if name == "mindspore" else real(name, *a))
    assert doctor.main(["--targets", "CPU"]) == 1
    assert "1. MindSpore is not installed in this Python" in capsys.readouterr().out


def test_an_unknown_target_is_refused_naming_the_targets(monkeypatch, capsys):
    """--targets foo ended in a KeyError traceback after probing 'foo'; empty items stay allowed."""
    from ebv_ms.tools import doctor
    for targets in ("foo", "CPU,gpu", "CPU, GPU", "Ascend,foo,"):
        with pytest.raises(SystemExit) as exc:
            doctor.main(["--targets", targets])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith("python -m ebv_ms.tools.doctor: error: --targets")
        assert "CPU, GPU, Ascend" in err and "Traceback" not in err
    asked = []  # the targets diagnose is given, without probing them
    monkeypatch.setattr(doctor, "diagnose", lambda timeout, targets, tool_timeout: asked.append(
        targets) or {"problems": [], "python": "3", "executable": "py", "venv": None,
                     "mindspore": "2.10.0", "devices": {}})
    assert doctor.main(["--targets", "CPU,,GPU"]) == 0 and doctor.main(["--targets", ""]) == 0
    assert asked == [("CPU", "GPU"), ()]

"""python -m ebv_ms.tools.doctor, for real on this machine: CPU passes, a GPU without CUDA libraries is
reported missing with the remedy naming the exact libraries MindSpore 2.10's plugins need."""
import json
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_doctor_reports_cpu_ok_and_gpu_libraries():
    r = subprocess.run([sys.executable, "-m", "ebv_ms.tools.doctor", "--json", "--targets", "CPU,GPU"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["mindspore"] == "2.10.0" and rep["venv"] == sys.prefix
    assert rep["devices"]["CPU"]["ok"] is True
    libs = rep["gpu_libraries"]
    assert set(libs) == {"11.1", "11.6"}
    for cuda, nvrtc in (("11.1", "libnvrtc.so.11.1"), ("11.6", "libnvrtc.so.11.2")):
        assert {"libcudart.so.11.0", "libcudnn.so.8", "libcublas.so.11", nvrtc} <= set(libs[cuda])
        assert libs[cuda]["libnccl.so.2"].endswith(f"plugin/gpu{cuda}/libnccl.so.2")  # bundled
    assert (rep["mpirun"] is not None) == (shutil.which("mpirun") is not None)
    assert rep["msrun"] is not None
    if libs["11.6"]["libcudart.so.11.0"] is None and libs["11.1"]["libcudart.so.11.0"] is None:
        assert rep["devices"]["GPU"]["ok"] is False
        gpu = [p for p in rep["problems"] if p["what"].startswith("GPU target unavailable")]
        assert len(gpu) == 1
        remedy = gpu[0]["remedy"]
        assert "libcudnn.so.8" in remedy and "CUDA 11.6" in remedy and "LD_LIBRARY_PATH" in remedy

    from ebv_ms.tools.doctor import format_report  # the text form of the same report
    text = format_report(rep)
    assert "device CPU    ok" in text and "GPU plugin for CUDA 11.6 (cuDNN 8.5) needs:" in text
    assert text.count("remedy: ") == len(rep["problems"])

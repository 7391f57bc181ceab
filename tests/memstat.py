"""Peak memory of this process, as the kernel counts it for its current address space.

Not ``resource.getrusage(...).ru_maxrss``: Linux carries that figure across fork and exec, so a
probe started from a pytest process that has grown to 4 GB reports 4 GB whatever it does itself
(seen in the full suite: two 1.5 GB limits "exceeded" at 4,268 MB by probes that peaked far
lower), and a before/after delta of it cannot see growth below the parent's peak.
"""


def status_mb(key: str) -> float:
    """``VmHWM`` (peak resident set) or ``VmRSS`` from /proc/self/status, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def reset_peak() -> float:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: ``echo 5 > clear_refs``),
    so a following ``status_mb('VmHWM')`` measures only what came after; returns that RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_mb("VmRSS")

"""Shared helpers for the benchmarks: run a command N times, alternating with its rival,
and report medians of wall time and peak memory, and the ratio pair by pair."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import time


def run_once(cmd: list[str], *, stdout=subprocess.DEVNULL) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run of `cmd`, measured by wait4()."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-500:]}")
    return wall, usage.ru_maxrss


def compare(ours: list[str], theirs: list[str], runs: int = 7) -> dict:
    """Run both alternately (after a warm-up each) and summarise."""
    run_once(ours)
    run_once(theirs)
    a_t, b_t, a_m, b_m, ratios = [], [], [], [], []
    for _ in range(runs):
        ta, ma = run_once(ours)
        tb, mb = run_once(theirs)
        a_t.append(ta), b_t.append(tb), a_m.append(ma), b_m.append(mb)
        ratios.append(tb / ta)
    return {"ours_s": statistics.median(a_t), "theirs_s": statistics.median(b_t),
            "ours_kib": statistics.median(a_m), "theirs_kib": statistics.median(b_m),
            "speedup": statistics.median(ratios), "speedup_min": min(ratios),
            "speedup_max": max(ratios), "runs": runs}


def max_rss_self_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

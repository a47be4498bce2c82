"""Shared helpers for the benchmarks: run a command N times, alternating with its rival,
and report medians of wall time and peak memory, and the ratio pair by pair."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

BUSY = ("import time\nt = time.time()\n"
        "while time.time() - t < {s}: sum(range(1000))\n")


# Builds, as on a developer's machine: clang compiling textrace's capture program over and
# over on both CPUs (hundreds of processes, libLLVM and libclang, the kernel's exec, mmap
# and page-fault paths).
CAPTURE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src",
                              "textrace", "bpf", "capture", "capture.bpf.c")
BUILD = ("end=$(($(date +%s) + {s})); while [ $(date +%s) -lt $end ]; do "
         "clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu -c {src} "
         "-o /dev/null; done")
WORKLOADS = ("busy", "build")


def make_recording(path: str, seconds: float, workload: str = "busy") -> None:
    """System-wide cpu-clock at 20 kHz with callchains while both CPUs work: about 40k
    samples a second, >= 200k in 6 s.  busy: two Python loops (two processes, few DSOs);
    build: clang compiling in a loop on each CPU (many processes and DSOs)."""
    if workload == "busy":
        one = f"python3 -c '{BUSY.format(s=seconds)}'"
    else:
        one = BUILD.format(s=max(1, round(seconds)), src=CAPTURE_SOURCE)
    subprocess.run(["perf", "record", "-q", "-o", path, "-e", "cpu-clock", "-F", "20000",
                    "-g", "-a", "--", "sh", "-c", f"({one}) & ({one}); wait"],
                   check=True, stdout=subprocess.DEVNULL)


def recording_args(doc: str) -> tuple[argparse.Namespace, str]:
    """The options every sample benchmark takes, and the recording to use (made with
    perf unless --file names one)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--file", help="existing recording (default: make one)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--workload", choices=WORKLOADS, default="busy",
                    help="what runs while the recording is made (default busy)")
    args = ap.parse_args()
    path = args.file or os.path.join(tempfile.mkdtemp(prefix="textrace-bench-"), "r.data")
    if not args.file:
        make_recording(path, args.seconds, args.workload)
    return args, path


def compile_bytecode() -> str:
    """Compile textrace's modules to bytecode, as installing it does; a run then loads
    them instead of compiling them again (every run does where PYTHONDONTWRITEBYTECODE is
    set).  Checked against a hash of the source at each import, not its mtime, so that an
    edit in the same second cannot leave stale bytecode in a checkout being worked on.
    Says what was done."""
    import importlib.util
    spec = importlib.util.find_spec("textrace")
    if spec is None or not spec.origin:
        return "textrace not found"
    package = os.path.dirname(spec.origin)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-f", "--invalidation-mode",
                    "checked-hash", package], check=True, stdout=subprocess.DEVNULL)
    return f"compiled, checked-hash ({package})"


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

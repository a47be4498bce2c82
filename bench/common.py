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
WORKLOADS = ("busy", "build", "mixed")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "textrace-bench")


def make_recording(path: str, seconds: float, workload: str = "busy") -> None:
    """System-wide cpu-clock at 20 kHz with callchains while both CPUs work: about 40k
    samples a second, >= 200k in 6 s.  busy: two Python loops (two processes, few DSOs);
    build: clang compiling in a loop on each CPU (many processes and DSOs)."""
    busy = f"python3 -c '{BUSY.format(s=seconds)}'"
    build = BUILD.format(s=int(seconds), src=CAPTURE_SOURCE)
    work = {"busy": f"({busy}) & ({busy}); wait", "build": f"({build}) & ({build}); wait",
            "mixed": f"({busy}) & ({busy}) & ({build}); wait"}[workload]
    subprocess.run(["perf", "record", "-q", "-o", path, "-e", "cpu-clock", "-F", "20000",
                    "-g", "-a", "--", "sh", "-c", work], check=True, stdout=subprocess.DEVNULL)


def perf_reads(path: str) -> bool:
    """Whether perf report reads the whole file.  On this 6.18 kernel a KSYMBOL record
    sometimes carries another session's sample_id trailer (a program loaded while two
    sessions record: its id is no event of this file), and perf 6.1 stops at it
    ("failed to process type: 17 [Bad address]"); such a recording cannot be compared."""
    r = subprocess.run(["perf", "report", "--stdio", "--no-children", "-g", "none",
                        "--sort", "sym", "-i", path], capture_output=True, text=True)
    return r.returncode == 0 and "failed to process" not in r.stderr


def cached_recording(name: str, seconds: float, workload: str = "mixed",
                     tries: int = 8) -> str:
    """A recording made by make_recording() once and kept in ~/.cache/textrace-bench
    (0700; never in the repository), remade until perf reads it (perf_reads)."""
    os.makedirs(CACHE, mode=0o700, exist_ok=True)
    path = os.path.join(CACHE, f"{name}.data")
    if os.path.exists(path):
        return path
    for _ in range(tries):
        make_recording(path + ".tmp", seconds, workload)
        if perf_reads(path + ".tmp"):
            os.rename(path + ".tmp", path)
            return path
    raise RuntimeError(f"perf could not read any of {tries} recordings for {name}")


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


def median_run(cmd: list[str], runs: int) -> tuple[float, int]:
    """Median wall seconds and peak RSS (KiB) of `runs` runs of `cmd`."""
    got = [run_once(cmd) for _ in range(runs)]
    return statistics.median(t for t, _ in got), statistics.median(m for _, m in got)


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

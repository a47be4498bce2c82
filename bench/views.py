"""Benchmark: annotate, show and pokes on a big recording with thousands of programs.

Recording: `textrace record -a -g -e cpu-clock -F 20000 -m 16384` for 40 s while two Python
loops and clang keep both CPUs busy, and, 5 s in, a storm of 5000 BPF programs is loaded
and closed (bench/storm.py): about 1.6M samples with callchains and 5000 captured
programs, 10k KSYMBOL and BPF_EVENT records among them (made once, kept in
~/.cache/textrace-bench).  Timed, each the median of --runs whole processes:
  - `textrace annotate PROG` of a storm program (its code, BPF instructions, samples),
  - `textrace show ADDR` at that program's address (every program that held it, 5000
    images to look through),
  - `textrace pokes`,
  - `textrace report` (the default text table) and `perf report --stdio --no-children -g
    none --sort sym` on the same file, for scale.
The goal: each view answers in under 1 s.

    python3 bench/views.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import (BUSY, BUILD, CACHE, CAPTURE_SOURCE, compile_bytecode,  # noqa: E402
                    median_run)


def recording(seconds: float = 40.0) -> str:
    os.makedirs(CACHE, mode=0o700, exist_ok=True)
    path = os.path.join(CACHE, "progs1600k.data")
    if os.path.exists(path):
        return path
    busy = f"python3 -c '{BUSY.format(s=seconds)}'"
    build = BUILD.format(s=int(seconds), src=CAPTURE_SOURCE)
    storm = f"sleep 5; {sys.executable} {os.path.join(HERE, 'storm.py')} 5000"
    subprocess.run([sys.executable, "-m", "textrace", "record", "-a", "-m", "16384", "-o",
                    path + ".tmp", "-e", "cpu-clock", "-F", "20000", "-g", "--", "sh", "-c",
                    f"({busy}) & ({busy}) & ({build}) & ({storm}); wait"], check=True,
                   stdout=subprocess.DEVNULL)
    os.rename(path + ".tmp", path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"textrace bytecode: {compile_bytecode()}")
    path = recording()
    tr = [sys.executable, "-m", "textrace"]
    progs = [json.loads(line) for line in subprocess.run(
        tr + ["progs", "-i", path, "--json"], check=True, capture_output=True,
        text=True).stdout.splitlines()]
    storm = [p for p in progs if p["name"] == "storm" and p["captured"]]
    prog = storm[len(storm) // 2]
    addr = prog["funcs"][0]["addr"]
    report = [json.loads(line) for line in subprocess.run(
        tr + ["report", "-i", path, "--json"], check=True, capture_output=True,
        text=True).stdout.splitlines()]
    samples = sum(r["samples"] for r in report)
    print(f"recording: {path}, {os.path.getsize(path) / 2**20:.0f} MiB, {samples} samples, "
          f"{len(progs)} programs ({len(storm)} of the storm captured)")
    print(f"{'command':52}{'wall s':>8}{'peak MiB':>10}{'goal':>8}")
    for label, cmd in [(f"textrace annotate {prog['id']}", ["annotate", str(prog["id"])]),
                       (f"textrace show {addr:#x}", ["show", hex(addr)]),
                       ("textrace pokes", ["pokes"]),
                       ("textrace report", ["report"])]:
        t, kib = median_run(tr + cmd + ["-i", path], args.runs)
        goal = "< 1 s" if cmd[0] != "report" else ""
        print(f"{label:52}{t:>8.3f}{kib / 1024:>10.0f}{goal:>8}", flush=True)
    t, kib = median_run(["perf", "report", "--stdio", "--no-children", "-g", "none",
                         "--sort", "sym", "-i", path], args.runs)
    print(f"{'perf report --stdio --no-children -g none':52}{t:>8.3f}{kib / 1024:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `textrace report` against `perf report` printing the same table, at three
sizes of a system-wide recording with callchains, in one run.

Recordings: `perf record -a -g -e cpu-clock -F 20000` while two Python loops and clang (in
a loop, compiling textrace's capture program) keep both CPUs busy, for 1.2 s, 8 s and 40 s:
about 60k, 400k and 1.6M samples (made once, kept in ~/.cache/textrace-bench; on this
machine the other tenants' processes, qemu's TCG JIT among them, are in them too).

textrace: `python3 -m textrace report -i FILE` (the default text table: what a person
          runs), and `--json`, `--sort dso`, `--sort program`.
perf:     `perf report --stdio --no-children -g none --sort sym -i FILE`: the same rows
          (tests/test_report.py compares them).  perf's default also builds the call
          graph and the Children column, which textrace's report does not; it is slower
          still (7.0 s and 971 MB on a 1.6M-sample file, issue 17).
Every command alternates with perf's, run by run; each ratio is perf's time over
textrace's, the median of the pairs.  Peak memory is the process's maximum RSS (wait4);
textrace's kallsyms child is not counted (it is done and gone early, ~40 MB).

Also checked: what `textrace report` imports at start-up (`python3 -X importtime`): the
verb's modules and numpy, not rich, capstone, pyelftools or zstandard; and what the text
table and the JSON lines cost apart from the rest, in-process (the whole commands differ
by less than the machine's noise).

textrace's bytecode is compiled first, as `pip install` does (PYTHONDONTWRITEBYTECODE is
set in this project's sandbox).

    python3 bench/report.py [--runs 3] [--sizes 60k,400k,1600k]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import cached_recording, compile_bytecode, run_once  # noqa: E402

SIZES = {"60k": 1.2, "400k": 8.0, "1600k": 40.0}
HEAVY = ("rich", "capstone", "elftools", "zstandard", "pyarrow", "duckdb")


def paired(ours: list[str], theirs: list[str], runs: int) -> dict:
    """Both alternately (after a warm-up each): medians and the median ratio."""
    run_once(ours)
    run_once(theirs)
    a, b = [], []
    for _ in range(runs):
        a.append(run_once(ours))
        b.append(run_once(theirs))
    return {"ours_s": statistics.median(t for t, _ in a),
            "ours_mib": statistics.median(m for _, m in a) / 1024,
            "perf_s": statistics.median(t for t, _ in b),
            "perf_mib": statistics.median(m for _, m in b) / 1024,
            "ratio": statistics.median(tb / ta for (ta, _), (tb, _) in zip(a, b))}


def facts(path: str) -> tuple[int, int]:
    """(samples, rows of textrace's table)."""
    out = subprocess.run([sys.executable, "-m", "textrace", "report", "-i", path, "--json"],
                         check=True, capture_output=True, text=True).stdout
    import json
    rows = [json.loads(line) for line in out.splitlines()]
    return sum(r["samples"] for r in rows), len(rows)


# the table made once, then each output made from it five times (the medians, in ms)
_OUTPUT_COST = """
import statistics, sys, time
from textrace.cli import report_text
from textrace.perf.reader import PerfData
from textrace.views.report import report_table
table = report_table(PerfData.open(sys.argv[1]))
def cost(make):
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        make(table)
        runs.append(time.perf_counter() - t)
    return 1000 * statistics.median(runs)
print(cost(report_text), cost(lambda t: t.json_lines()))
"""


def output_costs(path: str) -> tuple[float, float]:
    """What the text table and the JSON lines cost apart from the report (ms, in-process):
    the whole command's times differ by less than the machine's noise."""
    out = subprocess.run([sys.executable, "-c", _OUTPUT_COST, path], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def imports(path: str) -> set[str]:
    """The modules `textrace report` imports (python3 -X importtime)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-m", "textrace", "report",
                          "-i", path], check=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True).stderr
    return {line.rsplit("|", 1)[-1].strip() for line in err.splitlines()
            if line.startswith("import time:") and "|" in line}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default=",".join(SIZES))
    args = ap.parse_args()
    print(f"textrace bytecode: {compile_bytecode()}")
    tr = [sys.executable, "-m", "textrace", "report"]
    perf = ["perf", "report", "--stdio", "--no-children", "-g", "none", "--sort", "sym"]
    print(f"{'size':>6}{'samples':>9}{'rows':>8}{'MiB':>6} | {'variant':16}{'textrace s':>11}"
          f"{'perf s':>8}{'perf/tr':>8} | {'tr MiB':>7}{'perf MiB':>9}{'tr/perf':>8}")
    for size in args.sizes.split(","):
        # (named by length too: a recording made for another length is not reused)
        path = cached_recording(f"s{size}-{SIZES[size]:g}s", SIZES[size])
        samples, rows = facts(path)
        mib = os.path.getsize(path) / 2**20
        variants = [("text", []), ("--json", ["--json"])]
        if size == args.sizes.split(",")[-1]:   # the largest asked for
            variants += [("--sort dso", ["--sort", "dso"]),
                         ("--sort program", ["--sort", "program"])]
        for label, extra in variants:
            r = paired(tr + ["-i", path] + extra, perf + ["-i", path], args.runs)
            print(f"{size:>6}{samples:>9}{rows:>8}{mib:>6.0f} | {label:16}{r['ours_s']:>11.3f}"
                  f"{r['perf_s']:>8.3f}{r['ratio']:>7.2f}x | {r['ours_mib']:>7.0f}"
                  f"{r['perf_mib']:>9.0f}{r['ours_mib'] / r['perf_mib']:>8.2f}", flush=True)
        text_ms, json_ms = output_costs(path)
        print(f"{size:>6} output alone (in-process, median of 5): text table {text_ms:.1f} ms,"
              f" JSON lines {json_ms:.1f} ms", flush=True)
    loaded = imports(path)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    ours = sorted(m for m in loaded if m.startswith("textrace"))
    print(f"start-up of `textrace report`: {len(loaded)} modules, textrace's: "
          f"{' '.join(m[len('textrace.'):] or 'textrace' for m in ours)}; "
          f"rich/capstone/pyelftools/zstandard/pyarrow/duckdb: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

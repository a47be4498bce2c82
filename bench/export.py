"""Benchmark: export a >= 200k-sample recording to Parquet, and query it.

textrace: `python3 -m textrace export -i FILE --parquet DIR` (every table: recordings,
          programs, functions, code_versions, pokes, and samples with each one's symbol as
          of its time, written in row groups of 256k samples, zstd).
perf:     `perf script -G -F time,pid,tid,ip,sym,dso` (no callchains) on the same file, to a file:
          perf's own per-sample dump with symbols, the nearest thing perf has to a table.
Also `textrace report --json` (memory goal: export within 2x of report's peak RSS), and
`textrace sql --parquet DIR` printing a per-symbol count (the rich table) and 100k sample
rows (the direct layout), against `perf report --stdio --no-children -g none --sort sym`
and the first 100k lines of the perf script above.
All alternate in the same run; ratios pair by pair.

    python3 bench/export.py [--file perf.data] [--seconds 6] [--runs 5] [--workload busy|build]
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from common import compare, compile_bytecode, recording_args  # noqa: E402


def main() -> int:
    args, path = recording_args(__doc__)
    compiled = compile_bytecode()
    out = tempfile.mkdtemp(prefix="textrace-export-")
    tr = [sys.executable, "-m", "textrace"]
    export = [*tr, "export", "-i", path, "--parquet", out]
    script = ["sh", "-c", f"perf script -G -F time,pid,tid,ip,sym,dso -i {path} "
                          f"> {out}/script.txt 2>/dev/null"]
    e = compare(export, script, runs=args.runs)
    r = compare(export, [*tr, "report", "-i", path, "--json"], runs=args.runs)
    flat = ["perf", "report", "--stdio", "--no-children", "-g", "none", "--sort", "sym",
            "-i", path]
    per_symbol = [*tr, "sql", "--parquet", out, "SELECT symbol, dso, count(*) AS samples "
                  "FROM samples GROUP BY ALL ORDER BY samples DESC"]
    q = compare(per_symbol, flat, runs=args.runs)
    big = [*tr, "sql", "--parquet", out, "SELECT time, cpu, tid, ip, symbol, dso FROM "
           "samples LIMIT 100000"]
    first = ["sh", "-c", f"perf script -G -F time,pid,tid,ip,sym,dso -i {path} 2>/dev/null "
                         f"| head -n 100000 > {out}/script100k.txt"]
    b = compare(big, first, runs=args.runs)
    print(f"workload: {args.workload if not args.file else 'given'}, "
          f"{os.path.getsize(path) / 2**20:.1f} MiB recording ({path}); "
          f"textrace bytecode: {compiled}")
    print(f"{'':52}{'wall s (median)':>16}{'peak RSS MiB':>14}")
    for name, s, kib in (("textrace export", e["ours_s"], e["ours_kib"]),
                         ("perf script -G -F time,pid,tid,ip,sym,dso", e["theirs_s"],
                          e["theirs_kib"]),
                         ("textrace report --json", r["theirs_s"], r["theirs_kib"]),
                         ("textrace sql: per-symbol counts (rich table)", q["ours_s"],
                          q["ours_kib"]),
                         ("perf report --stdio --no-children -g none", q["theirs_s"],
                          q["theirs_kib"]),
                         ("textrace sql: 100k sample rows (text)", b["ours_s"], b["ours_kib"])):
        print(f"{name:52}{s:>16.3f}{kib / 1024:>14.1f}")
    print(f"export vs perf script: {e['speedup']:.2f}x as fast (min {e['speedup_min']:.2f}x, "
          f"max {e['speedup_max']:.2f}x, {e['runs']} pairs)")
    print(f"export memory / report memory: {e['ours_kib'] / r['theirs_kib']:.2f} (goal <= 2); "
          f"export time / report time: {1 / r['speedup']:.2f}")
    print(f"sql per-symbol counts vs perf report: {q['speedup']:.2f}x as fast")
    print(f"sql 100k rows vs perf script's first 100k lines: {b['speedup']:.2f}x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())

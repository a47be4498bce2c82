"""Benchmark: a symbol report of a >= 200k-sample recording with callchains.

textrace: `python3 -m textrace report -i FILE --json` (every sample attributed as of its own
          time: BPF and kernel symbols, user maps and ELF symbols; each sample counts for
          the symbol its ip is in, perf's "Self").
perf:     `perf report --stdio --sort sym -i FILE` on the same file: the goal's rival.  On a
          -g recording it also builds the call graph and the "Children" column (callers
          credited with their callees' samples), which textrace does not do; so
          `perf report --stdio --no-children -g none --sort sym`, the same output as
          textrace's (tests/test_report.py compares them), is timed too, for reference.
All alternate in the same run; each ratio is perf's time over textrace's, pair by pair.

textrace's bytecode is compiled first, as `pip install` does: where PYTHONDONTWRITEBYTECODE
is set (this project's sandbox sets it) every run would otherwise compile its modules anew.

    python3 bench/report.py [--file perf.data] [--seconds 6] [--runs 7] [--workload busy|build]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import compare, compile_bytecode, recording_args  # noqa: E402


def main() -> int:
    args, path = recording_args(__doc__)
    compiled = compile_bytecode()
    ours = [sys.executable, "-m", "textrace", "report", "-i", path, "--json"]
    r = compare(ours, ["perf", "report", "--stdio", "--sort", "sym", "-i", path],
                runs=args.runs)
    flat = compare(ours, ["perf", "report", "--stdio", "--no-children", "-g", "none",
                          "--sort", "sym", "-i", path], runs=args.runs)
    print(f"workload: {args.workload if not args.file else 'given'}, "
          f"{os.path.getsize(path) / 2**20:.1f} MiB recording ({path}); "
          f"textrace bytecode: {compiled}")
    print(f"{'':44}{'wall s (median)':>16}{'peak RSS MiB':>14}")
    print(f"{'textrace report':44}{r['ours_s']:>16.3f}{r['ours_kib'] / 1024:>14.1f}")
    print(f"{'perf report --stdio':44}{r['theirs_s']:>16.3f}{r['theirs_kib'] / 1024:>14.1f}")
    print(f"{'perf report --stdio --no-children -g none':44}{flat['theirs_s']:>16.3f}"
          f"{flat['theirs_kib'] / 1024:>14.1f}")
    print(f"speedup (perf/textrace, {r['runs']} pairs): median {r['speedup']:.2f}x "
          f"(min {r['speedup_min']:.2f}x, max {r['speedup_max']:.2f}x); goal >= 3x, "
          f"memory ratio {r['ours_kib'] / r['theirs_kib']:.2f} (goal <= 1)")
    print(f"against perf --no-children -g none (same output): median {flat['speedup']:.2f}x "
          f"(min {flat['speedup_min']:.2f}x, max {flat['speedup_max']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

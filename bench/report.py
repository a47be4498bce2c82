"""Benchmark: a symbol report of a >= 200k-sample recording with callchains.

textrace: `python3 -m textrace report -i FILE --json` (every sample attributed as of its own
          time: BPF and kernel symbols, user maps and ELF symbols).
perf:     `perf report --stdio --sort sym -i FILE` on the same file.
Both alternate in the same run; the ratio is perf's time over textrace's, pair by pair.

    python3 bench/report.py [--file perf.data] [--seconds 6] [--runs 7]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import compare, recording_args  # noqa: E402


def main() -> int:
    args, path = recording_args(__doc__)
    r = compare([sys.executable, "-m", "textrace", "report", "-i", path, "--json"],
                ["perf", "report", "--stdio", "--sort", "sym", "-i", path], runs=args.runs)
    print(f"workload: {os.path.getsize(path) / 2**20:.1f} MiB recording ({path})")
    print(f"{'':28}{'wall s (median)':>16}{'peak RSS MiB':>14}")
    print(f"{'textrace report':28}{r['ours_s']:>16.3f}{r['ours_kib'] / 1024:>14.1f}")
    print(f"{'perf report --stdio':28}{r['theirs_s']:>16.3f}{r['theirs_kib'] / 1024:>14.1f}")
    print(f"speedup (perf/textrace, {r['runs']} pairs): median {r['speedup']:.2f}x "
          f"(min {r['speedup_min']:.2f}x, max {r['speedup_max']:.2f}x); goal >= 3x, "
          f"memory ratio {r['ours_kib'] / r['theirs_kib']:.2f} (goal <= 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

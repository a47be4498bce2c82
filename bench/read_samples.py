"""Benchmark: read every sample of a >= 200k-sample recording with callchains.

textrace: a whole `python3` process that opens the file and loads ip, time, cpu, pid, tid,
period and the callchains of every sample into numpy arrays.
perf:     `perf script -F ip,time,cpu` on the same file (it prints the callchain ips too),
          output to /dev/null.
Both alternate in the same run; the ratio is perf's time over textrace's, pair by pair.

    python3 bench/read_samples.py [--file perf.data] [--seconds 6] [--runs 7]
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import compare, recording_args  # noqa: E402

READ = ("import sys, time, textrace, textrace.perf.bulk\n"
        "t0 = time.perf_counter()\n"
        "s = textrace.open(sys.argv[1]).samples()\n"
        "print(len(s), s.callchain.size, time.perf_counter() - t0)\n")


def main() -> int:
    args, path = recording_args(__doc__)
    inside = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", READ, path], check=True,
                             capture_output=True, text=True).stdout.split()
        inside.append(float(out[2]))
    n_samples, n_chain = int(out[0]), int(out[1])
    r = compare([sys.executable, "-c", READ, path],
                ["perf", "script", "-i", path, "-F", "ip,time,cpu"], runs=args.runs)
    print(f"workload: {n_samples} samples, {n_chain} callchain entries, "
          f"{os.path.getsize(path) / 2**20:.1f} MiB ({path})")
    print(f"{'':24}{'wall s (median)':>16}{'peak RSS MiB':>14}")
    print(f"{'textrace (numpy arrays)':24}{r['ours_s']:>16.3f}{r['ours_kib'] / 1024:>14.1f}")
    print(f"{'perf script -F ip,time,cpu':24}{r['theirs_s']:>16.3f}"
          f"{r['theirs_kib'] / 1024:>14.1f}")
    print(f"speedup (perf/textrace, {r['runs']} pairs): median {r['speedup']:.2f}x "
          f"(min {r['speedup_min']:.2f}x, max {r['speedup_max']:.2f}x); goal >= 2x")
    read_s = sorted(inside)[len(inside) // 2]
    print(f"textrace's read alone, inside the process (no interpreter start): "
          f"{read_s:.3f} s, {r['theirs_s'] / read_s:.1f}x faster than perf script's process")
    return 0


if __name__ == "__main__":
    sys.exit(main())

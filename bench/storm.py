"""Workload: load N BPF programs and close each at once (or after holding it), as fast as
possible.

    python3 bench/storm.py [N] [--hold-us US] [--rate PER_S]
        (prints the wall seconds it took)

--hold-us keeps each program loaded that long before closing it (a loader that uses what
it loads); --rate paces the loads (a steady storm for long recordings).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from textrace.bpf.syscall import prog_load  # noqa: E402

RET0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=5000)
    ap.add_argument("--hold-us", type=float, default=0.0)
    ap.add_argument("--rate", type=float, default=0.0, help="loads per second (0: no pacing)")
    args = ap.parse_args()
    hold = args.hold_us / 1e6
    t0 = time.perf_counter()
    clock = time.perf_counter
    for i in range(args.n):
        fd = prog_load(RET0, name="storm")
        if hold:
            end = clock() + hold
            while clock() < end:
                pass
        os.close(fd)
        if args.rate:
            wait = t0 + (i + 1) / args.rate - clock()
            if wait > 0:
                time.sleep(wait)
    print(f"{clock() - t0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

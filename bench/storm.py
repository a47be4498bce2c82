"""Workload: load N BPF programs and close each at once, as fast as possible.

    python3 bench/storm.py [N]      (prints the wall seconds it took)
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from textrace.bpf.syscall import prog_load  # noqa: E402

RET0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    t0 = time.perf_counter()
    for _ in range(n):
        os.close(prog_load(RET0, name="storm"))
    print(f"{time.perf_counter() - t0:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A bpf_prog_pack workload, run under `textrace record` (on the host, or in the testbed):
programs held while a storm of others is loaded and closed, and what the kernel itself
reports about where they went.

    python3 packs_workload.py OUT.json [--storm N] [--hold K] [--big] [--fragment N]

OUT.json: the held programs' JIT'd functions as the kernel reports them (jited_ksyms,
lengths, while alive), /proc/vmallocinfo's bpf_prog_pack_alloc areas read with real
addresses (kptr_restrict 1 for the read, then put back), and the load/close times.
--big also loads a program whose JIT image is ~7 KiB.  --fragment N first loads N programs
of 1-64 instructions and holds them, closes every other one, then loads N/4 bigger ones
that fit none of the holes (the picture in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)

from bpfprogs import EXIT, load_trivial, load_with_subprograms, mov_r0  # noqa: E402
from textrace.bpf.prog_info import JIT_ARRAYS, read_prog_info  # noqa: E402
from textrace.bpf.syscall import prog_load  # noqa: E402

KPTR = "/proc/sys/kernel/kptr_restrict"


def vmalloc_areas(held: list[list[list[int]]]) -> list[dict]:
    """The vmalloc areas of bpf_prog_pack_alloc (6.18: the caller named), and those holding
    a held program's function (6.1 names module_alloc), with their real addresses: %pK
    prints them only with kptr_restrict 1 (and CAP_SYSLOG); 0 hashes them."""
    with open(KPTR) as f:
        old = f.read().strip()
    try:
        with open(KPTR, "w") as f:
            f.write("1")
        with open("/proc/vmallocinfo") as f:
            lines = f.readlines()
    finally:
        with open(KPTR, "w") as f:
            f.write(old)
    out = []
    for ln in lines:
        parts = ln.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if "bpf_prog_pack_alloc" in ln or any(lo <= a < hi for prog in held
                                               for a, _n in prog):
            out.append({"start": lo, "end": hi, "size": int(parts[1]), "caller": parts[2]})
    return out


def funcs(fd: int) -> list[list[int]]:
    return [[a, n] for a, n, _code in read_prog_info(fd, JIT_ARRAYS).funcs()]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--storm", type=int, default=2000)
    ap.add_argument("--hold", type=int, default=3)
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--fragment", type=int, default=0)
    args = ap.parse_args()
    if args.fragment:
        frag = [prog_load(b"".join(mov_r0(k) for k in range(1 + i % 64)) + EXIT,
                          name="tr_frag") for i in range(args.fragment)]
        time.sleep(0.2)
        for fd in frag[::2]:
            os.close(fd)
        time.sleep(0.3)
        frag = frag[1::2] + [prog_load(b"".join(mov_r0(k) for k in range(200)) + EXIT,
                                       name="tr_frag_big") for _ in range(args.fragment // 4)]
        time.sleep(0.3)
    held = [load_trivial(f"held{i}", i) for i in range(args.hold)]
    held.append(load_with_subprograms(2, name="held_sub"))
    if args.big:
        held.append(prog_load(b"".join(mov_r0(k) for k in range(1500)) + EXIT,
                              name="held_big"))
    report = {"held": [funcs(fd) for fd in held]}
    time.sleep(0.2)
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    for _ in range(args.storm):
        os.close(load_trivial("tr_pkstorm", 0))
    report["storm"] = [t0, time.clock_gettime_ns(time.CLOCK_MONOTONIC)]
    report["vmalloc"] = vmalloc_areas(report["held"])
    time.sleep(0.3)
    for fd in held + (frag if args.fragment else []):
        os.close(fd)
    report["closed"] = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    with open(args.out, "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())

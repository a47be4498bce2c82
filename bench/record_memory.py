"""The recorder's memory over a long recording under a steady storm, beside perf's.

    python3 bench/record_memory.py [--seconds 90] [--rate 500] [--hold-us 1000]
                                   [--capture kernel|user] [--every 5]

A storm loads `rate` programs a second, each held `hold-us` (bench/storm.py --rate), for
`seconds`.  `textrace record -a` records it, and `perf record -a` records the same storm
at the same time; both recorders' resident heap (RssAnon, /proc/PID/status) is printed
every `every` seconds, then the growth of each over the second half of the storm (MiB per
minute: flat is ~0), textrace's peak while finishing the file, the programs each kept, and
the ratio.  `-a` records every program loaded on the machine, other loaders' too.  The issue's figure is a 30-minute run:
`--seconds 1800` (about 900k loads at the default rate).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STORM = os.path.join(HERE, "storm.py")
SRC = os.path.join(HERE, "..", "src")


def rss_mib(pid: int, key: str = "RssAnon:") -> float | None:
    """Resident anonymous memory (RssAnon: the heap; not the rings or the mapped file,
    which VmRSS also counts), MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def has_children(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return bool(f.read().split())
    except OSError:
        return False


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares MiB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points) or 1.0
    return 60 * sum((t - mx) * (v - my) for t, v in points) / var


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--hold-us", type=float, default=1000)
    ap.add_argument("--capture", default="auto")
    ap.add_argument("--every", type=float, default=5)
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get(
        "PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        tx_out, perf_out = os.path.join(tmp, "tx.data"), os.path.join(tmp, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-a", "-q", "-o", perf_out, "--",
                                 "sleep", str(args.seconds + 20)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        tx = subprocess.Popen([sys.executable, "-m", "textrace", "record", "-a", "--capture",
                               args.capture, "-o", tx_out, "--", sys.executable, STORM,
                               str(n), "--rate", str(args.rate), "--hold-us",
                               str(args.hold_us)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
        print(f"storm: {n} loads at {args.rate:g}/s, each held {args.hold_us:g} us, "
              f"{args.seconds:g} s; textrace pid {tx.pid}, perf pid {perf.pid}")
        print("RssAnon of each recorder (VmRSS of textrace in brackets), the file so far")
        print(f"{'t (s)':>7} {'textrace MiB':>13} {'(VmRSS)':>9} {'perf MiB':>9} "
              f"{'file MiB':>9}  phase")
        t0 = time.monotonic()
        tx_pts, perf_pts, finish = [], [], []
        while tx.poll() is None:
            time.sleep(args.every)
            t = time.monotonic() - t0
            a, b = rss_mib(tx.pid), rss_mib(perf.pid)
            vm = rss_mib(tx.pid, "VmRSS:")
            if a is None:
                break
            recording = has_children(tx.pid)  # the storm still runs
            (tx_pts if recording else finish).append((t, a))
            if b is not None and recording:
                perf_pts.append((t, b))
            size = os.path.getsize(tx_out) / (1 << 20) if os.path.exists(tx_out) else 0
            print(f"{t:7.0f} {a:13.1f} {vm or 0:9.1f} "
                  f"{b if b is not None else float('nan'):9.1f} {size:9.1f}  "
                  f"{'recording' if recording else 'finishing'}", flush=True)
        _out, err = tx.communicate()
        perf.terminate()
        perf.wait()
        summary = [line for line in err.splitlines() if "wrote" in line]
        print(summary[-1] if summary else err[-2000:])
        hp = subprocess.run(["perf", "report", "--header-only", "-i", perf_out],
                            capture_output=True, text=True).stdout
        perf_kept = len(re.findall(r"bpf_prog_info \d+:", hp))
        half = [p for p in tx_pts if p[0] >= tx_pts[-1][0] / 2] if tx_pts else []
        phalf = [p for p in perf_pts if p[0] >= perf_pts[-1][0] / 2] if perf_pts else []
        ts, ps = slope(half), slope(phalf)
        peak_tx = max(v for _, v in tx_pts) if tx_pts else 0
        peak_perf = max(v for _, v in perf_pts) if perf_pts else 0
        peak_fin = max((v for _, v in finish), default=0)
        print(f"textrace: RSS {tx_pts[0][1]:.1f} -> {tx_pts[-1][1]:.1f} MiB while recording "
              f"(peak {peak_tx:.1f}), second half {ts:+.2f} MiB/min; finishing peak "
              f"{peak_fin:.1f} MiB")
        print(f"perf:     RSS {perf_pts[0][1]:.1f} -> {perf_pts[-1][1]:.1f} MiB (peak "
              f"{peak_perf:.1f}), second half {ps:+.2f} MiB/min; {perf_kept} programs in "
              f"its HEADER_BPF_PROG_INFO")
        print(f"ratio textrace/perf: peak RSS {peak_tx / max(peak_perf, 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

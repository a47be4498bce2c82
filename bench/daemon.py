"""Benchmark: what textrace daemon costs, against perf record in the same run.

  - CPU when nothing loads (goal: < 0.1 % of a core), over --idle seconds, of the daemon
    and of `perf record -a -e dummy` (the sideband alone: KSYMBOL, BPF_EVENT, ...);
  - CPU under a paced storm of 1000 loads a second for --paced seconds (goal: < 10 %);
  - the delay capture adds to each load: a storm of --storm programs loaded and closed at
    full speed, alone and under each (goal: <= 1.2x alone);
  - store growth per 1000 loads: the same program over and over, and all distinct.
CPU is the time on CPU of every thread (and live child) of the process, from
/proc/PID/task/*/schedstat, as a share of one core over the same wall interval.

    python3 bench/daemon.py [--idle 20] [--paced 10] [--storm 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "src"))
sys.path.insert(0, SRC)
# `python3 -m textrace` in the children: this checkout's, not an installed one
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
from textrace.bpf.syscall import prog_load  # noqa: E402

RET0 = bytes.fromhex("b700000000000000" "9500000000000000")


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in ns precision (schedstat's time on CPU;
    /proc/PID/stat counts in 10 ms ticks, too coarse for 0.1 % of a core)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total / 1e9


def task_cpu(pid: int) -> float:
    """All threads and the live children of pid (the id scanner, kallsyms readers)."""
    total = cpu_seconds(pid)
    for child in _children(pid):
        try:
            total += cpu_seconds(child)
        except FileNotFoundError:
            pass
    return total


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


class Daemon:
    def __init__(self, store: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "textrace", "daemon", "--store",
                                      store], stderr=subprocess.PIPE, text=True)
        while "ready" not in (line := self.proc.stderr.readline()):
            if not line:
                raise RuntimeError("daemon exited")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


class Perf:
    def __init__(self, out: str):
        self.proc = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "dummy", "-o", out],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)  # perf has no ready line: its synthesis is done well within this

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)


def share_of_core(pid: int, seconds: float, during=None) -> float:
    c0, t0 = task_cpu(pid), time.monotonic()
    if during is not None:
        during(seconds)
    else:
        time.sleep(seconds)
    return (task_cpu(pid) - c0) / (time.monotonic() - t0)


IDLE_WINDOW = 5.0


def idle_share(pid: int, seconds: float, store: str) -> tuple[float, list]:
    """Median share of a core over windows of IDLE_WINDOW s, and per window (share, loads
    the daemon stored meanwhile): on a shared machine some windows are not idle."""
    windows = []
    for _ in range(max(1, round(seconds / IDLE_WINDOW))):
        n0 = store_summary(store)["programs"]
        c = share_of_core(pid, IDLE_WINDOW)
        windows.append((c, store_summary(store)["programs"] - n0))
    return statistics.median(c for c, _ in windows), windows


def paced(rate: int):
    """Load and close `rate` programs a second (in batches every 10 ms)."""
    def run(seconds: float) -> None:
        start = time.monotonic()
        done = 0
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while done < due:
                os.close(prog_load(RET0, name="paced"))
                done += 1
            time.sleep(0.01)
    return run


def storm(n: int) -> float:
    out = subprocess.run([sys.executable, os.path.join(HERE, "storm.py"), str(n)],
                         check=True, capture_output=True, text=True).stdout
    return float(out)


def distinct(n: int, start: int) -> None:
    for k in range(n):
        body = struct.pack("<BBhi", 0xb7, 0, 0, start + k) + RET0[8:]
        os.close(prog_load(body, name="distinct"))


def store_summary(store: str) -> dict:
    return json.loads(subprocess.run([sys.executable, "-m", "textrace", "store", store,
                                      "--json"], check=True, capture_output=True,
                                     text=True).stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--paced", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--storm", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="textrace-bench-daemon-")
    store = os.path.join(tmp, "store")
    print(f"{'measure':44}{'textrace daemon':>18}{'perf record':>14}")

    d = Daemon(store)
    time.sleep(3)
    idle_d, idle_windows = idle_share(d.proc.pid, args.idle, store)
    n1 = store_summary(store)["programs"]
    load_d = share_of_core(d.proc.pid, args.paced, paced(args.rate))
    n2 = store_summary(store)["programs"]
    d.stop()
    # this machine is shared: other processes load programs too, and the daemon (like
    # perf) sees them all; so say how many it saw and what each cost
    load_rate = (n2 - n1) / args.paced
    p = Perf(os.path.join(tmp, "perf.data"))
    idle_p, _ = idle_share(p.proc.pid, args.idle, store)
    load_p = share_of_core(p.proc.pid, args.paced, paced(args.rate))
    p.stop()
    print(f"{'CPU idle (% of a core)':44}{100 * idle_d:>17.3f}%{100 * idle_p:>13.3f}%")
    print(f"{f'CPU under {args.rate} loads/s (% of a core)':44}{100 * load_d:>17.2f}%"
          f"{100 * load_p:>13.2f}%")
    print(f"  idle: median of {len(idle_windows)} windows of {IDLE_WINDOW:.0f} s; each "
          f"(% of a core, loads the daemon saw in it, from other processes): "
          + ", ".join(f"{100 * c:.3f}% {n}" for c, n in idle_windows))
    print(f"  loads the daemon saw under the paced storm: {load_rate:.0f}/s")
    per_load = load_d / max(load_rate, 1)
    print(f"  daemon CPU per load {1e6 * per_load:.1f} us: at exactly {args.rate} loads/s "
          f"{100 * per_load * args.rate:.2f}% of a core")

    alone, under_d, under_p = [], [], []
    for _ in range(args.runs):
        alone.append(storm(args.storm))
        d = Daemon(store)
        under_d.append(storm(args.storm))
        d.stop()
        p = Perf(os.path.join(tmp, "perf.data"))
        under_p.append(storm(args.storm))
        p.stop()
    a = statistics.median(alone)
    ud, up = statistics.median(under_d), statistics.median(under_p)
    print(f"{f'storm of {args.storm}: wall s (alone {a:.3f} s)':44}{ud:>17.3f} {up:>13.3f}")
    print(f"{'  x alone (goal <= 1.2x)':44}{ud / a:>17.2f}x{up / a:>13.2f}x")
    print(f"{'  us added per load':44}{1e6 * (ud - a) / args.storm:>17.1f} "
          f"{1e6 * (up - a) / args.storm:>13.1f}")

    for label, work in (("the same program", lambda: storm(1000)),
                        ("distinct programs", lambda: distinct(1000, 1 << 20))):
        growth = os.path.join(tmp, "growth")
        shutil.rmtree(growth, ignore_errors=True)
        d = Daemon(growth)
        d.stop()                      # measured stopped: the log checkpointed into the file
        before = store_summary(growth)
        d = Daemon(growth)
        work()
        time.sleep(1.5)
        d.stop()
        after = store_summary(growth)
        seen = after["programs"] - before["programs"]
        per = 1000 / max(seen, 1)   # other processes' loads land in the store too
        print(f"{f'store growth per 1000 loads, {label}':44}"
              f"{per * (after['bytes'] - before['bytes']):>12.0f} B code, "
              f"{per * (after['disk_bytes'] - before['disk_bytes']):.0f} B on disk, "
              f"{per * (after['images'] - before['images']):.0f} images "
              f"({seen} loads seen for 1000 made)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

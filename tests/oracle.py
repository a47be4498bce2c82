"""perf as the oracle: run it on a file and parse what it prints into plain values.

Formats are perf 6.1's (Debian linux-perf): `perf report -D` prints every record with its
file offset, size and type; `perf script --show-*-events` prints sideband records sorted
the way perf delivers them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


def run_perf(*args: str) -> str:
    env = dict(os.environ, PAGER="cat")
    r = subprocess.run(["perf", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"perf {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


_EVENT = re.compile(r"^(0x[0-9a-f]+|0)@\S+ \[(0x[0-9a-f]+)\]: event: (\d+)$")
_SAMPLE = re.compile(
    r"^(?:(\d+) )?(\d+) (0x[0-9a-f]+) \[(0x[0-9a-f]+)\]: PERF_RECORD_SAMPLE\(IP, (0x[0-9a-f]+)\):"
    r" (-?\d+)/(-?\d+): (0x[0-9a-f]+) period: (\d+) addr: (0x[0-9a-f]+|0)")
_CHAIN_ENTRY = re.compile(r"^\.\.\.\.\.\s+\d+: ([0-9a-f]+)$")


def dump_index(path: Path) -> list[tuple[int, int, int]]:
    """(file offset, size, type) of every record, in perf's delivery order, from
    `perf report -D`.  In pipe mode perf counts offsets from the end of the pipe header."""
    out = []
    for line in run_perf("report", "-D", "-i", str(path)).splitlines():
        m = _EVENT.match(line)
        if m:
            out.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(3))))
    return out


def dump_samples(path: Path) -> dict[int, dict]:
    """SAMPLE fields by file offset from `perf report -D`: cpu (when sampled), time, misc,
    pid, tid, ip, period, addr and the callchain perf decoded."""
    samples: dict[int, dict] = {}
    current = None
    for line in run_perf("report", "-D", "-i", str(path)).splitlines():
        m = _SAMPLE.match(line)
        if m:
            cpu, time, off, _size, misc, pid, tid, ip, period, addr = m.groups()
            current = {"cpu": None if cpu is None else int(cpu), "time": int(time),
                       "misc": int(misc, 16), "pid": int(pid), "tid": int(tid),
                       "ip": int(ip, 16), "period": int(period), "addr": int(addr, 16),
                       "callchain": []}
            samples[int(off, 16)] = current
            continue
        if current is not None:
            c = _CHAIN_ENTRY.match(line)
            if c:
                current["callchain"].append(int(c.group(1), 16))
            elif not line.startswith("..."):
                current = None
    return samples


_SCRIPT_LINE = re.compile(r"^\s*(.*?)\s+(-?\d+)\s+(\d+)\.(\d{9}):\s+(.*)$")
SIDEBAND_FLAGS = ("--show-task-events", "--show-mmap-events", "--show-bpf-events",
                  "--show-text-poke-events", "--show-lost-events", "--show-switch-events",
                  "--show-namespace-events", "--show-cgroup-events")


def script_timeline(path: Path) -> list[dict]:
    """Every line of `perf script` with samples and sideband, in perf's delivery order:
    tid, time (ns), and `record` (PERF_RECORD_* name without prefix, or "SAMPLE")."""
    out = []
    text = run_perf("script", "-i", str(path), "--ns", "-F", "comm,tid,time,event,ip", "-G",
                    *SIDEBAND_FLAGS)
    for line in text.splitlines():
        m = _SCRIPT_LINE.match(line)
        if not m:
            continue
        _comm, tid, sec, ns, rest = m.groups()
        time = int(sec) * 1_000_000_000 + int(ns)
        kind = rest.split()[0]
        if kind.startswith("PERF_RECORD_"):
            name = re.match(r"PERF_RECORD_([A-Z_0-9]+)", kind).group(1)
        else:
            name = "SAMPLE"
        out.append({"tid": int(tid), "time": time, "record": name, "text": rest})
    return out


_KSYMBOL = re.compile(r"PERF_RECORD_KSYMBOL addr ([0-9a-f]+) len (\d+) type (\d+) "
                      r"flags (0x[0-9a-f]+) name (\S+)")
_BPF_EVENT = re.compile(r"PERF_RECORD_BPF_EVENT type (\d+), flags (\d+), id (\d+)")


def script_bpf_records(path: Path) -> list[dict]:
    """KSYMBOL and BPF_EVENT records as `perf script --show-bpf-events` prints them."""
    out = []
    for row in script_timeline(path):
        if row["record"] == "KSYMBOL":
            a, ln, t, fl, name = _KSYMBOL.search(row["text"]).groups()
            out.append({"type": "KSYMBOL", "time": row["time"], "tid": row["tid"],
                        "addr": int(a, 16), "len": int(ln), "ksym_type": int(t),
                        "flags": int(fl, 16), "name": name})
        elif row["record"] == "BPF_EVENT":
            t, fl, i = _BPF_EVENT.search(row["text"]).groups()
            out.append({"type": "BPF_EVENT", "time": row["time"], "tid": row["tid"],
                        "event_type": int(t), "flags": int(fl), "prog_id": int(i)})
    return out


_DUMP_SIDEBAND = {
    "MMAP2": re.compile(r"PERF_RECORD_MMAP2 (-?\d+)/(-?\d+): \[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) "
                        r"@ (0x[0-9a-f]+|0) ([0-9a-f]+):([0-9a-f]+) (\d+) (\d+)\]: (\S+) (.*)$"),
    "COMM": re.compile(r"PERF_RECORD_COMM(?: exec)?: (.*):(-?\d+)/(-?\d+)$"),
    "FORK": re.compile(r"PERF_RECORD_FORK\((-?\d+):(-?\d+)\):\((-?\d+):(-?\d+)\)$"),
    "EXIT": re.compile(r"PERF_RECORD_EXIT\((-?\d+):(-?\d+)\):\((-?\d+):(-?\d+)\)$"),
}
_DUMP_HEAD = re.compile(r"^(?:\d+ )?\d+ (0x[0-9a-f]+) \[0x[0-9a-f]+\]: (PERF_RECORD_\w+.*)$")


def dump_sideband(path: Path) -> dict[int, tuple[str, tuple]]:
    """MMAP2, COMM, FORK and EXIT fields by file offset, from `perf report -D`."""
    out = {}
    for line in run_perf("report", "-D", "-i", str(path)).splitlines():
        m = _DUMP_HEAD.match(line)
        if not m:
            continue
        off, rest = int(m.group(1), 16), m.group(2)
        for kind, rx in _DUMP_SIDEBAND.items():
            if rest.startswith(f"PERF_RECORD_{kind}"):
                f = rx.search(rest)
                if f:
                    out[off] = (kind, f.groups())
    return out

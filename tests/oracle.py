"""perf as the oracle: run it on a file and parse what it prints into plain values.

The formats are perf 6.1's (Debian's linux-perf 6.1.x), read off its output on real files:

`perf report -D` (`perf_report_dump`) prints, per record,
    <offset>@<file> [<size>]: event: <type>          offset "0" or "0x..", size hex
    .  0000:  04 00 00 00 ...   <ascii>              the record's bytes, 16 a line
    [<cpu> ][<time> ]<offset> [<size>]: PERF_RECORD_<NAME><rest>
    ... detail lines (" ... ", "..... ", " . ", ".... ")
  The prefix before the offset is `evlist__print_tstamp`: the cpu if the combined
  sample_type has CPU, then the time if it has TIME; "-1 -1 " when the file has no
  sample_id_all yet (pipe-mode HEADER_ATTR); user records (type >= 64) show time 0.
  Kernel records are printed in delivery order (sorted at each FINISHED_ROUND), user records
  (ID_INDEX, FINISHED_ROUND, ...) as they are read, so the list is not in file order.
  In pipe mode offsets count from the end of the 16-byte pipe header and the file is "pipe".
  In `-z` files COMPRESSED records are not printed; the records inflated from them carry
  the offset of a COMPRESSED record (not unique, not their own) but their own size, type
  and bytes.  The dump ends with "Aggregated stats:" counts per record type and per event.

`perf script --show-*-events` (`perf_script_sideband`) prints one line per record:
    <pid>/<tid> [<cpu>] <sec>.<ns>: PERF_RECORD_<NAME><rest>
  where pid/tid/cpu/time are the record's sample_id (0 for records perf synthesized at
  start), in delivery order; TEXT_POKE and NAMESPACES continue on indented lines and
  FINISHED_ROUND has no prefix.  KSYMBOL is shown by --show-bpf-events (perf 6.1 has no
  --show-ksymbol-events).

`perf script -F` (`perf_script_samples`) prints samples; with callchains each frame is a
line "\\t<ip> <sym>+0x<off> (<dso>)" where user-space ips are printed relative to their
binary (kernel ips are raw) and PERF_CONTEXT_* markers are dropped.  Raw chains come from
`perf_report_dump` (with the markers) or `perf_script_raw_samples` (perf's own Python
engine: the resolved chain with raw ips).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PERF_TIMEOUT_S = 300

# perf 6.1's perf_event__name() table: perf's own names, which for 64-67 and 80 are not
# textrace's (ATTR is HEADER_ATTR there, FEATURE is HEADER_FEATURE); compare types by number.
RECORD_NAMES = {
    1: "MMAP", 2: "LOST", 3: "COMM", 4: "EXIT", 5: "THROTTLE", 6: "UNTHROTTLE", 7: "FORK",
    8: "READ", 9: "SAMPLE", 10: "MMAP2", 11: "AUX", 12: "ITRACE_START", 13: "LOST_SAMPLES",
    14: "SWITCH", 15: "SWITCH_CPU_WIDE", 16: "NAMESPACES", 17: "KSYMBOL", 18: "BPF_EVENT",
    19: "CGROUP", 20: "TEXT_POKE", 21: "AUX_OUTPUT_HW_ID",
    64: "ATTR", 65: "EVENT_TYPE", 66: "TRACING_DATA", 67: "BUILD_ID", 68: "FINISHED_ROUND",
    69: "ID_INDEX", 70: "AUXTRACE_INFO",
    71: "AUXTRACE", 72: "AUXTRACE_ERROR", 73: "THREAD_MAP", 74: "CPU_MAP", 75: "STAT_CONFIG",
    76: "STAT", 77: "STAT_ROUND", 78: "EVENT_UPDATE", 79: "TIME_CONV", 80: "FEATURE",
    81: "COMPRESSED", 82: "FINISHED_INIT",
}

# every --show-*-events switch perf 6.1 has
SIDEBAND_FLAGS = ("--show-task-events", "--show-mmap-events", "--show-bpf-events",
                  "--show-text-poke-events", "--show-lost-events", "--show-switch-events",
                  "--show-namespace-events", "--show-cgroup-events", "--show-on-off-events")


class PerfFailed(RuntimeError):
    pass


# the perf every function here runs: the machine's (6.1), or another release's through
# `using` (testbed/perfroot.py: 6.12, 7.2)
PERF = ["perf"]
PERF_ENV: dict[str, str] = {}


@contextlib.contextmanager
def using(argv: list[str], env: dict[str, str] | None = None):
    """Run the oracle functions with the perf at argv (and its environment) inside."""
    global PERF, PERF_ENV
    saved = PERF, PERF_ENV
    PERF, PERF_ENV = list(argv), dict(env or {})
    try:
        yield
    finally:
        PERF, PERF_ENV = saved


def perf_env() -> dict[str, str]:
    """perf without a pager, in the C locale."""
    return dict(PERF_ENV or os.environ, PAGER="cat", PERF_PAGER="cat", LC_ALL="C")


def run_perf(*args: str) -> str:
    """stdout of `perf ARGS`; raises PerfFailed with the command and stderr if perf fails."""
    cmd = [*PERF, *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                           env=perf_env(), stdin=subprocess.DEVNULL, timeout=PERF_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise PerfFailed(f"`{' '.join(cmd)}` ran over {PERF_TIMEOUT_S} s") from e
    if r.returncode != 0:
        raise PerfFailed(f"`{' '.join(cmd)}` exited {r.returncode}:\n{r.stderr[-2000:]}")
    return r.stdout


def _ns(sec: str, frac: str) -> int:
    return int(sec) * 1_000_000_000 + int(frac)


# ---------------------------------------------------------------------------------------
# record fields as perf_event__fprintf() prints them (shared by perf script and perf report -D)

_H = r"(0x[0-9a-f]+|0)"  # "%#lx": zero prints as "0"
_FIELD_RX = {
    "COMM": re.compile(r"^(?P<exec> exec)?: (?P<comm>.*):(?P<pid>-?\d+)/(?P<tid>-?\d+)$"),
    "FORK": re.compile(r"^\((?P<pid>-?\d+):(?P<tid>-?\d+)\):\((?P<ppid>-?\d+):(?P<ptid>-?\d+)\)$"),
    "MMAP": re.compile(rf"^ (?P<pid>-?\d+)/(?P<tid>-?\d+): \[(?P<addr>{_H})\((?P<len>{_H})\) "
                       rf"@ (?P<pgoff>{_H})\]: (?P<perm>[xr]) (?P<filename>.*)$"),
    "MMAP2": re.compile(rf"^ (?P<pid>-?\d+)/(?P<tid>-?\d+): \[(?P<addr>{_H})\((?P<len>{_H})\) "
                        rf"@ (?P<pgoff>{_H}) (?:(?P<maj>[0-9a-f]+):(?P<min>[0-9a-f]+) "
                        r"(?P<ino>\d+) (?P<ino_generation>\d+)|<(?P<build_id>[0-9a-f]*)>)\]: "
                        r"(?P<perm>[r-][w-][x-][sp]) (?P<filename>.*)$"),
    "KSYMBOL": re.compile(r"^ addr (?P<addr>[0-9a-f]+) len (?P<len>\d+) type (?P<ksym_type>\d+) "
                          r"flags (?P<flags>0x[0-9a-f]+) name (?P<name>.*)$"),
    "BPF_EVENT": re.compile(r"^ type (?P<event_type>\d+), flags (?P<flags>\d+), "
                            r"id (?P<prog_id>\d+)$"),
    "TEXT_POKE": re.compile(r"^ (?P<addr>[0-9a-f]+) (?:(?P<symbol>\S.*?) )?old len "
                            r"(?P<old_len>\d+) new len (?P<new_len>\d+)$"),
    "SWITCH": re.compile(r"^ (?P<dir>IN|OUT)\s*(?P<preempt>preempt)?\s*$"),
    "SWITCH_CPU_WIDE": re.compile(r"^ (?P<dir>IN|OUT)\s*(?P<preempt>preempt)?\s+(?:next|prev) "
                                  r"pid/tid:\s*(?P<next_prev_pid>-?\d+)/"
                                  r"(?P<next_prev_tid>-?\d+)\s*$"),
    "NAMESPACES": re.compile(r"^ (?P<pid>-?\d+)/(?P<tid>-?\d+) - nr_namespaces: "
                             r"(?P<nr_namespaces>\d+)"),
    "CGROUP": re.compile(r"^ cgroup: (?P<cgroup_id>\d+) (?P<path>.*)$"),
    "LOST": re.compile(r"^ lost (?P<lost>\d+)$"),
}
_FIELD_RX["EXIT"] = _FIELD_RX["FORK"]
# perf report -D prints these through its own dump_printf()s, not perf_event__fprintf();
# perf script does not show LOST_SAMPLES at all
_DUMP_RX = {
    "LOST": re.compile(r"^: id:(?P<id>\d+): lost:(?P<lost>\d+)$"),
    "LOST_SAMPLES": re.compile(r"^: id:(?P<id>\d+): lost samples :(?P<lost>\d+)$"),
}
_NAMESPACE = re.compile(r"(\d+)/(\w+): (\d+)/(0x[0-9a-f]+|0)")
# which printed fields are hex ("%#lx", "%lx", "0x%x"); the rest are decimal or strings
_HEX = {"MMAP": {"addr", "len", "pgoff"}, "MMAP2": {"addr", "len", "pgoff", "maj", "min"},
        "KSYMBOL": {"addr", "flags"}, "TEXT_POKE": {"addr"}}
_STR_FIELDS = {"comm", "filename", "name", "perm", "symbol", "path", "build_id", "dir",
               "exec", "preempt"}


def record_fields(name: str, rest: str, more: list[str] = ()) -> dict:
    """The fields perf printed for a record of kind `name` (e.g. "KSYMBOL"), as ints where
    they are numbers, named as textrace names them (ksym_type, event_type, prog_id,
    next_prev_pid, ...).  `rest` is the text after PERF_RECORD_<NAME>, `more` the record's
    continuation lines.  Kinds perf prints nothing for, or that are not known here, give {}."""
    m = None
    for rx in (_FIELD_RX.get(name), _DUMP_RX.get(name)):
        m = m or (rx.match(rest) if rx else None)
    if m is None:
        return {}
    hex_fields = _HEX.get(name, set())
    out: dict = {}
    for key, val in m.groupdict().items():
        if val is None or key in ("exec", "preempt"):
            continue
        if key in _STR_FIELDS:
            out[key] = val
        else:
            out[key] = int(val, 16 if key in hex_fields else 10)
    if name == "COMM":
        out["exec"] = bool(m["exec"])
    if name in ("SWITCH", "SWITCH_CPU_WIDE"):
        out["out"] = out.pop("dir") == "OUT"
        out["preempt"] = bool(m["preempt"])
    if name == "MMAP2" and m["build_id"] is not None:
        out["build_id"] = bytes.fromhex(m["build_id"])
    if name == "TEXT_POKE":
        old, new = bytearray(), bytearray()
        for line in more:
            words = line.split()
            if words[:2] == ["Old", "bytes:"]:
                old += bytes.fromhex("".join(words[2:]))
            elif words[:2] == ["New", "bytes:"]:
                new += bytes.fromhex("".join(words[2:]))
        out["old_bytes"], out["new_bytes"] = bytes(old), bytes(new)
    if name == "NAMESPACES":
        found = sorted((int(i), kind, int(dev), int(ino, 16))
                       for i, kind, dev, ino in _NAMESPACE.findall(" ".join([rest, *more])))
        out["namespace_names"] = [kind for _, kind, _, _ in found]
        out["namespaces"] = [(dev, ino) for _, _, dev, ino in found]
    return out


# ---------------------------------------------------------------------------------------
# perf evlist -v: which sample fields each event has

def perf_evlist(path: Path) -> list[dict]:
    """Events of the file: name, sample_type (set of PERF_SAMPLE_* names) and every other
    "key: value" perf evlist -v prints, as strings."""
    out = []
    for line in run_perf("evlist", "-v", "-i", str(path)).splitlines():
        if ": type: " not in line:
            continue
        name, rest = line.split(": type: ", 1)
        ev = {"name": name}
        for m in re.finditer(r"(\{[^}]*\}|\w+): ([^,]*)", "type: " + rest):
            ev[m.group(1)] = m.group(2).strip()
        ev["sample_type"] = set(ev.get("sample_type", "").split("|")) - {""}
        out.append(ev)
    return out


def _common_sample_type(path: Path) -> set[str]:
    evs = perf_evlist(path)
    return set.intersection(*(e["sample_type"] for e in evs)) if evs else set()


# ---------------------------------------------------------------------------------------
# perf script: samples

SAMPLE_FIELDS = ("pid", "tid", "time", "cpu", "period", "event", "addr", "ip", "sym",
                 "symoff", "dso", "callchain")
_FRAME = re.compile(r"^\s*([0-9a-f]+)(?: (?!\()(.*?))?(?: \(([^()]*)\))?\s*$")


def _frame(text: str, want_sym: bool, want_off: bool, want_dso: bool) -> dict:
    m = _FRAME.match(text)
    if m is None:
        raise ValueError(f"cannot parse a perf script frame: {text!r}")
    ip, sym, dso = m.groups()
    f: dict = {"ip": int(ip, 16)}
    if want_sym:
        f["sym"] = sym
        if want_off:
            o = re.match(r"^(.*)\+0x([0-9a-f]+)$", sym or "")
            f["sym"], f["symoff"] = (o.group(1), int(o.group(2), 16)) if o else (sym, None)
    if want_dso:
        f["dso"] = dso
    return f


def _script_samples(path: Path, fields: set[str], chains: bool, stype: set[str]) -> list[dict]:
    has_cpu, has_addr = "CPU" in stype and "cpu" in fields, "ADDR" in stype and "addr" in fields
    want_sym, want_off, want_dso = "sym" in fields, "symoff" in fields, "dso" in fields
    f = ["pid", "tid", "time", "period", "event", "ip"]
    f += ["cpu"] * has_cpu + ["addr"] * has_addr + ["sym"] * (want_sym or want_off)
    f += ["symoff"] * want_off + ["dso"] * want_dso
    args = ["script", "-i", str(path), "--ns", "--no-inline", "-F", ",".join(f)]
    if not chains:
        args.append("-G")
    head = re.compile(r"^\s*(-?\d+)/(-?\d+)\s+" + (r"\[(\d+)\]\s+" if has_cpu else r"()")
                      + r"(\d+)\.(\d{9}):\s+(\d+)\s+(\S+):\s?" +
                      (r"\s*([0-9a-f]+)" if has_addr else r"()") + r"(.*)$")
    out: list[dict] = []
    cur = None
    for line in run_perf(*args).splitlines():
        if line.startswith("\t") and cur is not None and chains:
            cur["callchain"].append(_frame(line, want_sym or want_off, want_off, want_dso))
            continue
        if not line.strip():
            continue
        m = head.match(line)
        if m is None:
            raise ValueError(f"cannot parse a perf script sample line: {line!r}")
        pid, tid, cpu, sec, frac, period, event, addr, rest = m.groups()
        cur = {"pid": int(pid), "tid": int(tid), "cpu": int(cpu) if cpu else None,
               "time": _ns(sec, frac), "period": int(period), "event": event,
               "addr": int(addr, 16) if addr else None}
        if chains:
            cur["callchain"] = []
            if rest.strip():  # a sample without a chain prints its ip on the line
                cur["callchain"].append(_frame(rest, want_sym or want_off, want_off,
                                               want_dso))
        else:
            cur.update(_frame(rest, want_sym or want_off, want_off, want_dso))
        out.append(cur)
    return out


def perf_script_samples(path: Path, fields=SAMPLE_FIELDS) -> list[dict]:
    """One dict per sample from `perf script -F ... --ns`, in perf's delivery order, with
    the requested keys among SAMPLE_FIELDS: pid, tid, cpu, time (ns), period, event (name),
    addr, ip (raw), sym, symoff, dso (of ip) and callchain (list of frames {ip, sym, symoff,
    dso} as perf prints them: user ips relative to their binary, context markers dropped).
    cpu and addr are None when the file's samples do not carry them.  sym is "[unknown]"
    when perf cannot name it."""
    fields = set(fields)
    unknown = fields - set(SAMPLE_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; known: {SAMPLE_FIELDS}")
    stype = _common_sample_type(path)
    chains = "callchain" in fields and bool(stype & {"CALLCHAIN", "STACK_USER"})
    rows = _script_samples(path, fields, chains=False, stype=stype)
    if "callchain" in fields:
        if chains:
            with_chain = _script_samples(path, fields, chains=True, stype=stype)
            if len(with_chain) != len(rows):
                raise ValueError(f"perf script printed {len(rows)} samples of {path} without "
                                 f"callchains and {len(with_chain)} with them")
            for row, c in zip(rows, with_chain):
                row["callchain"] = c["callchain"]
        else:
            for row in rows:
                row["callchain"] = None
    return [{k: v for k, v in row.items() if k in fields} for row in rows]


_RAW_SCRIPT = r'''
import json, sys
def process_event(p):
    s = p["sample"]
    row = {"event": p["ev_name"], "pid": s["pid"], "tid": s["tid"], "cpu": s["cpu"],
           "time": s["time"], "period": s["period"], "ip": s["ip"], "addr": s.get("addr"),
           "callchain": [c["ip"] for c in p.get("callchain", ())]}
    sys.stdout.write(json.dumps(row) + "\n")
'''


def perf_script_raw_samples(path: Path) -> list[dict]:
    """Samples as perf's embedded Python engine (`perf script -s`) hands them over, in
    delivery order: event, pid, tid (-1 for no task), cpu (0xffffffff when not sampled),
    time, period, ip, addr (0 when not sampled), and callchain: raw ips of the chain perf
    resolved (markers dropped, DWARF-unwound for dwarf files; [] without callchains)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_RAW_SCRIPT)
    try:
        text = run_perf("script", "-i", str(path), "-s", f.name)
    finally:
        os.unlink(f.name)
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    for row in rows:  # the engine hands pid and tid over as u32
        for k in ("pid", "tid"):
            row[k] = row[k] - (1 << 32) if row[k] >= 1 << 31 else row[k]
    return rows


# ---------------------------------------------------------------------------------------
# perf script: sideband records and the timeline

_TIMELINE = re.compile(r"^\s*(-?\d+)/(-?\d+)\s+(?:\[(\d+)\]\s+)?(\d+)\.(\d{9}):\s+(.*)$")
_RECORD = re.compile(r"^PERF_RECORD_([A-Z0-9_]+)(.*)$")


def perf_script_timeline(path: Path, *, rounds: bool = False) -> list[dict]:
    """Samples and sideband records, one dict each, in the order perf delivers them:
    type ("SAMPLE" or the record's name without PERF_RECORD_), time (ns), cpu (None without
    PERF_SAMPLE_CPU), sample_pid and sample_tid (the sample_id perf printed), event (for
    samples), text (what perf printed after the name, continuation lines joined with
    newlines) and the record's own fields (see record_fields).  rounds=True adds the
    FINISHED_ROUND lines (no time, no cpu)."""
    has_cpu = "CPU" in _common_sample_type(path)
    f = "pid,tid,time,event" + (",cpu" if has_cpu else "")
    args = ["script", "-i", str(path), "--ns", "-G", "-F", f, *SIDEBAND_FLAGS]
    if rounds:
        args.append("--show-round-events")
    out: list[dict] = []
    more: list[str] = []

    def close():
        if out and more:
            last = out[-1]
            last["text"] = "\n".join([last["text"], *more])
            if last["type"] != "SAMPLE":
                last.update(record_fields(last["type"], last["_rest"], more))
        more.clear()

    for line in run_perf(*args).splitlines():
        if line.startswith((" ", "\t")) and out and not _TIMELINE.match(line):
            more.append(line.strip())  # TEXT_POKE bytes, NAMESPACES list
            continue
        close()
        if not line.strip():
            continue
        m = _TIMELINE.match(line)
        if m:
            pid, tid, cpu, sec, frac, rest = m.groups()
            row = {"time": _ns(sec, frac), "cpu": int(cpu) if cpu else None,
                   "sample_pid": int(pid), "sample_tid": int(tid)}
        else:  # FINISHED_ROUND, or a record perf found no event for: no prefix
            rest = line.strip()
            row = {"time": None, "cpu": None, "sample_pid": None, "sample_tid": None}
        r = _RECORD.match(rest)
        if r:
            row.update(type=r.group(1), text=r.group(2).strip(), _rest=r.group(2))
            row.update(record_fields(r.group(1), r.group(2)))
        else:
            event = rest.rstrip().rstrip(":").strip()
            if not m or not event or " " in event:
                raise ValueError(f"cannot parse a perf script line: {line!r}")
            row.update(type="SAMPLE", event=event, text="", _rest="")
        out.append(row)
    close()
    for row in out:
        del row["_rest"]
    return out


def perf_script_sideband(path: Path, *, rounds: bool = False) -> list[dict]:
    """Every non-sample record perf script shows (--show-*-events), in delivery order; the
    dicts of perf_script_timeline."""
    return [r for r in perf_script_timeline(path, rounds=rounds) if r["type"] != "SAMPLE"]


# ---------------------------------------------------------------------------------------
# perf report -D

@dataclass
class Dump:
    """What `perf report -D` printed: records in perf's print order, and its counts."""
    records: list[dict]
    stats: dict[str, int]                   # "Aggregated stats": record name -> count, TOTAL
    event_stats: dict[str, dict[str, int]] = field(default_factory=dict)  # per event name

    def by_type(self, name: str) -> list[dict]:
        return [r for r in self.records if r["type_name"] == name]


_AT = re.compile(r"^(0x[0-9a-f]+|0)@.*? \[(0x[0-9a-f]+)\]: event: (\d+)$")
_SUMMARY = re.compile(r"^(-?\d+ )?(-?\d+ )?(0x[0-9a-f]+|0) \[(0x[0-9a-f]+)\]: "
                      r"PERF_RECORD_([A-Z0-9_]+)(.*)$")
_SAMPLE = re.compile(r"^\(IP, (0x[0-9a-f]+)\): (-?\d+)/(-?\d+): (0x[0-9a-f]+|0) period: (\d+) "
                     r"addr: (0x[0-9a-f]+|0)$")
_CHAIN_NR = re.compile(r"^\.\.\. (?:FP|LBR|\w+) chain: nr:(\d+)$")
_CHAIN = re.compile(r"^\.\.\.\.\.\s+\d+: ([0-9a-f]+)")
_USTACK = re.compile(r"^\.\.\. ustack: size (\d+), offset (0x[0-9a-f]+)$")
_UREGS = re.compile(r"^\.\.\.\. (\w+)\s+(0x[0-9a-f]+)$")
_STAT = re.compile(r"^\s*([A-Z0-9_]+) events:\s+(\d+)")


def perf_report_dump(path: Path) -> Dump:
    """Every record `perf report -D` prints: offset (see the module note for pipe mode and
    -z), size, type (number), type_name, cpu and time (None where perf printed none; time
    is 0 for user records), text (after the name), details (the lines after it), raw (the
    record's bytes as perf read them: the strongest check of a reader).  SAMPLE records add
    misc, pid, tid, ip, period, addr, callchain (raw, with PERF_CONTEXT_* markers; None
    without), user_regs ({name: value}), ustack_size (dyn_size)."""
    records: list[dict] = []
    stats: dict[str, int] = {}
    event_stats: dict[str, dict[str, int]] = {}
    cur: dict | None = None
    section = None
    for line in run_perf("report", "-D", "--stdio", "-i", str(path)).splitlines():
        m = _AT.match(line)
        if m:
            off, size, typ = int(m.group(1), 16), int(m.group(2), 16), int(m.group(3))
            cur = {"offset": off, "size": size, "type": typ,
                   "type_name": RECORD_NAMES.get(typ), "cpu": None, "time": None,
                   "text": None, "details": [], "raw": bytearray()}
            records.append(cur)
            continue
        if cur is not None and line.startswith(".  ") and line[7:9] == ": ":
            cur["raw"] += bytes.fromhex(line[9:57])
            continue
        s = _SUMMARY.match(line)
        if s and cur is not None and int(s.group(3), 16) == cur["offset"]:
            a, b, _, _, name, rest = s.groups()
            nums = [int(x) for x in (a, b) if x is not None]
            if nums == [-1, -1]:
                cpu, time = None, None
            elif len(nums) == 2:
                cpu, time = nums
            else:
                cpu, time = None, (nums[0] if nums else None)
            cur.update(type_name=name, cpu=cpu, time=time, text=rest.strip(), _rest=rest)
            if name == "SAMPLE":
                sm = _SAMPLE.match(rest)
                if sm is None:
                    raise ValueError(f"cannot parse a perf report -D sample: {line!r}")
                misc, pid, tid, ip, period, addr = sm.groups()
                cur.update(misc=int(misc, 16), pid=int(pid), tid=int(tid), ip=int(ip, 16),
                           period=int(period), addr=int(addr, 16), callchain=None,
                           user_regs=None, ustack_size=None)
            else:
                cur.update(record_fields(name, rest))
            continue
        if line.startswith("Aggregated stats:"):
            section, cur = stats, None
            continue
        if line.endswith(" stats:") and section is not None:
            section = event_stats.setdefault(line[:-len(" stats:")].strip(), {})
            continue
        if section is not None:
            st = _STAT.match(line)
            if st:
                section[st.group(1)] = int(st.group(2))
            continue
        if cur is None or not line.strip() or line == "." or line.startswith(". ... raw event"):
            continue
        cur["details"].append(line)
        if cur["type_name"] == "SAMPLE":
            if _CHAIN_NR.match(line):
                cur["callchain"] = []
            elif (c := _CHAIN.match(line)) and cur["callchain"] is not None:
                cur["callchain"].append(int(c.group(1), 16))
            elif line.startswith("... user regs:"):
                cur["user_regs"] = {}
            elif (u := _UREGS.match(line)) and cur["user_regs"] is not None:
                cur["user_regs"][u.group(1)] = int(u.group(2), 16)
            elif u := _USTACK.match(line):
                cur["ustack_size"] = int(u.group(1))
    for r in records:
        r["raw"] = bytes(r["raw"])
        rest = r.pop("_rest", None)
        if rest is not None and r["type_name"] in ("TEXT_POKE", "NAMESPACES"):
            more = [d.strip() for d in r["details"] if d.startswith((" ", "\t"))]
            r.update(record_fields(r["type_name"], rest, more))
    return Dump(records=records, stats=stats, event_stats=event_stats)


# ---------------------------------------------------------------------------------------
# perf report --header-only -I

def perf_header(path: Path) -> dict[str, list[str]]:
    """`perf report --header-only -I` as key -> values, in perf's order.  A line
    "# key : value" adds value to key (keys repeat: "event", "sibling threads"); the first
    ':' splits, so "CPU 0: Core ID 0, ..." has key "CPU 0" and "bpf_prog_info 42: ..." key
    "bpf_prog_info 42".  Indented lines belong to the key above them ("CPU cache info",
    "memory nodes (nr 1, block size 0x8000000)"), whose own value is empty."""
    out: dict[str, list[str]] = {}
    last = None
    for line in run_perf("report", "--header-only", "-I", "--stdio", "-i",
                         str(path)).splitlines():
        if not line.startswith("# ") or line.startswith("# ========"):
            continue
        body = line[2:]
        if body.startswith(" ") and last is not None:
            out[last].append(body.strip())
            continue
        if ":" not in body:
            continue
        key, value = body.split(":", 1)
        key, value = key.strip(), value.strip()
        if value:
            out.setdefault(key, []).append(value)
        else:
            out.setdefault(key, [])
        last = key
    return out


# ---------------------------------------------------------------------------------------
# earlier helpers, kept for the tests that use them

def dump_index(path: Path) -> list[tuple[int, int, int]]:
    """(file offset, size, type) of every record, in perf's print order."""
    return [(r["offset"], r["size"], r["type"]) for r in perf_report_dump(path).records]


def dump_samples(path: Path) -> dict[int, dict]:
    """SAMPLE fields by file offset from `perf report -D`: cpu (None when not sampled), time,
    misc, pid, tid, ip, period, addr and the raw callchain ([] without one)."""
    keys = ("cpu", "time", "misc", "pid", "tid", "ip", "period", "addr")
    return {r["offset"]: {**{k: r[k] for k in keys}, "callchain": r["callchain"] or []}
            for r in perf_report_dump(path).by_type("SAMPLE")}


def dump_sideband(path: Path) -> dict[int, tuple[str, tuple]]:
    """MMAP2, COMM, FORK and EXIT fields by file offset from `perf report -D`, as the
    strings perf printed (MMAP2: pid, tid, addr, len, pgoff, maj, min, ino, generation,
    prot, filename; COMM: comm, pid, tid; FORK/EXIT: pid, tid, ppid, ptid)."""
    out = {}
    for r in perf_report_dump(path).records:
        k = r["type_name"]
        if k == "MMAP2" and "maj" in r:
            out[r["offset"]] = (k, (str(r["pid"]), str(r["tid"]), hex(r["addr"]),
                                    hex(r["len"]), hex(r["pgoff"]), format(r["maj"], "x"),
                                    format(r["min"], "x"), str(r["ino"]),
                                    str(r["ino_generation"]), r["perm"], r["filename"]))
        elif k == "COMM" and "comm" in r:
            out[r["offset"]] = (k, (r["comm"], str(r["pid"]), str(r["tid"])))
        elif k in ("FORK", "EXIT") and "ppid" in r:
            out[r["offset"]] = (k, tuple(str(r[x]) for x in ("pid", "tid", "ppid", "ptid")))
    return out


def script_timeline(path: Path) -> list[dict]:
    """Samples and sideband in perf's delivery order: tid (sample_id tid), time (ns),
    record ("SAMPLE" or the record's name) and text."""
    return [{"tid": r["sample_tid"], "time": r["time"], "record": r["type"],
             "text": r["text"]} for r in perf_script_timeline(path)]


def script_bpf_records(path: Path) -> list[dict]:
    """KSYMBOL and BPF_EVENT records as `perf script --show-bpf-events` prints them."""
    out = []
    for r in perf_script_sideband(path):
        if r["type"] == "KSYMBOL":
            out.append({"type": "KSYMBOL", "time": r["time"], "tid": r["sample_tid"],
                        **{k: r[k] for k in ("addr", "len", "ksym_type", "flags", "name")}})
        elif r["type"] == "BPF_EVENT":
            out.append({"type": "BPF_EVENT", "time": r["time"], "tid": r["sample_tid"],
                        **{k: r[k] for k in ("event_type", "flags", "prog_id")}})
    return out

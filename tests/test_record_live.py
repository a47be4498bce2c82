"""`textrace record`, the live perf side: rings, rounds, synthesis, header, signals, losses.

Real kernel, root; perf (and /proc/kallsyms, bpftool, clock_gettime) are the oracles.  Other
processes may load BPF programs while these tests run, so every check picks out the
programs and processes the test made itself.
"""

from __future__ import annotations

import json
import mmap
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpfprogs import load_trivial, load_with_subprograms
from oracle import run_perf, script_bpf_records, script_timeline
from textrace.bpf.prog_info import read_prog_info
from textrace.perf import live
from textrace.perf.abi import RecordType, SampleType
from textrace.perf.attr import EventAttr, flag_mask
from textrace.perf.header import RECORD_HEADER
from textrace.perf.reader import PerfData

TEXTRACE = [sys.executable, "-m", "textrace"]
TESTS = os.path.dirname(os.path.abspath(__file__))
SIDEBAND_FLAGS = ("--show-task-events", "--show-mmap-events", "--show-bpf-events",
                  "--show-text-poke-events", "--show-lost-events")


def record(out, *args, timeout=120, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([*TEXTRACE, "record", "-o", str(out), *args], capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def perf_clean(*args: str) -> str:
    """perf's stdout; perf must exit 0 and say nothing on stderr (no warnings either)."""
    r = subprocess.run(["perf", *args], capture_output=True, text=True,
                       env=dict(os.environ, PAGER="cat"))
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr[-2000:]
    return r.stdout


def events_json(path) -> list[dict]:
    r = subprocess.run([*TEXTRACE, "events", "-i", str(path), "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def start_recorder(out: Path, *args: str) -> subprocess.Popen:
    """A system-wide recorder in the background, returned once its events are enabled and
    its rounds reach the file: a process this test runs shows up in it."""
    p = subprocess.Popen([*TEXTRACE, "record", "-a", "-o", str(out), *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stderr.read()
        probe = subprocess.run(["true"])
        time.sleep(0.3)
        if probe.returncode == 0 and out.exists():
            try:
                data = PerfData.open(out)
                pids = {r.pid for r in data.records(frozenset({RecordType.EXIT}))}
            except Exception:
                continue
            if pids:  # some process exited after enabling: the rings are live
                return p
    p.kill()
    raise AssertionError("the recorder did not start within 60 s")


# --- perf/live.py on its own ------------------------------------------------------------

def _own_mmap_event() -> EventAttr:
    return EventAttr(type=live.PERF_TYPE_SOFTWARE, config=live.SW_DUMMY, sample_period=1,
                     sample_type=SampleType.TID | SampleType.TIME | SampleType.IDENTIFIER,
                     flags=flag_mask("mmap", "sample_id_all", "exclude_kernel"))


def _exec_mmaps(n: int) -> None:
    """n anonymous executable mappings of this process: one MMAP record each."""
    for _ in range(n):
        m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)
        m.close()


def test_ring_returns_every_record_across_the_ring_end_and_set_output_shares_it():
    """A one-page ring wraps many times; every record comes back whole, and SET_OUTPUT sends
    a second event's records into the first one's ring, told apart by PERF_EVENT_IOC_ID."""
    attr = _own_mmap_event()
    fd1 = live.perf_event_open(attr, 0, -1)
    fd2 = live.perf_event_open(attr, 0, -1)
    ring = live.Ring(fd1, -1, pages=1)
    try:
        live.set_output(fd2, fd1)
        id1, id2 = live.event_id(fd1), live.event_id(fd2)
        assert id1 != id2
        got = []
        for _ in range(200):  # 200 x 2 records of ~88 bytes through a 4 KiB ring
            _exec_mmaps(1)
            got.extend(ring.read())
        got.extend(ring.read())
        assert ring.bytes_read > 4 * ring.size  # wrapped several times
        kinds = [RECORD_HEADER.unpack_from(r, 0) for r in got]
        assert all(t == RecordType.MMAP and size == len(r) for (t, _m, size), r in
                   zip(kinds, got))
        ids = [int.from_bytes(r[-8:], "little") for r in got]  # IDENTIFIER ends the trailer
        assert ids.count(id1) == ids.count(id2) == 200
        assert all(b"/dev/zero" in r for r in got)  # a shared anonymous mapping
    finally:
        ring.close()
        os.close(fd2)
        os.close(fd1)


def test_ring_is_empty_after_reading_and_data_tail_gives_space_back():
    fd = live.perf_event_open(_own_mmap_event(), 0, -1)
    ring = live.Ring(fd, -1, pages=1)
    try:
        _exec_mmaps(3)
        assert ring.pending()
        assert len(ring.read()) == 3
        assert not ring.pending() and ring.read() == []
        # with the tail given back, 10 rings' worth of records arrive and nothing is lost
        total = 0
        for _ in range(40):
            _exec_mmaps(10)
            recs = ring.read()
            assert all(RECORD_HEADER.unpack_from(r, 0)[0] == RecordType.MMAP for r in recs)
            total += len(recs)
        assert total == 400
    finally:
        ring.close()
        os.close(fd)


def test_online_cpus_are_the_kernels():
    assert len(live.online_cpus()) == os.sysconf("SC_NPROCESSORS_ONLN")


# --- a recording of a command -----------------------------------------------------------

def test_recording_of_sleep_is_read_by_perf_without_a_warning(tmp_path):
    out = tmp_path / "sleep.data"
    record(out, "--", "sleep", "0.2")
    assert (out.stat().st_mode & 0o777) == 0o600
    text = perf_clean("script", "-i", str(out), *SIDEBAND_FLAGS)
    sleep = [line for line in text.splitlines() if line.lstrip().startswith("sleep ")]
    assert any("PERF_RECORD_COMM exec: sleep:" in line for line in sleep)
    assert any("PERF_RECORD_MMAP2" in line and line.endswith("/sleep") for line in sleep)
    assert any("PERF_RECORD_EXIT" in line for line in sleep)


def test_kernel_map_is_the_one_perf_synthesizes(tmp_path):
    ours, theirs = tmp_path / "ours.data", tmp_path / "perf.data"
    record(ours, "--", "true")
    subprocess.run(["perf", "record", "-q", "-a", "-e", "dummy", "-o", str(theirs), "--",
                    "true"], check=True, capture_output=True)

    def kernel_mmap(path):
        lines = [line.split(": ", 1)[1] for line in
                 run_perf("script", "-i", str(path), "--show-mmap-events").splitlines()
                 if "[kernel.kallsyms]" in line]
        assert len(lines) == 1, lines
        return lines[0]

    assert kernel_mmap(ours) == kernel_mmap(theirs)
    text = {p.split()[2]: int(p.split()[0], 16) for p in open("/proc/kallsyms")
            if p.split()[2] in ("_text", "_etext")}
    assert f"[{text['_text']:#x}({text['_etext'] - text['_text']:#x}) @ {text['_text']:#x}]" \
        in kernel_mmap(ours)


def test_textrace_events_shows_the_records_perf_shows_in_the_same_order(tmp_path):
    out = tmp_path / "sleep.data"
    record(out, "--", "sh", "-c", "sleep 0.1; true")
    # (perf script's tid column is the sample_id's: the parent for FORK; textrace events
    # shows the record's own pid/tid, so only kind and time are compared here)
    theirs = [(r["record"], r["time"]) for r in script_timeline(out)]
    ours = [(r["type"], r["time"] or 0) for r in events_json(out)
            if not r["type"].startswith("FINISHED_")]
    assert ours == theirs and len(ours) > 5
    assert [t for _k, t in ours] == sorted(t for _k, t in ours)


def test_command_exit_status_is_textraces(tmp_path):
    r = record(tmp_path / "x.data", "--", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3
    r = record(tmp_path / "y.data", "--", str(tmp_path / "no-such-command"), check=False)
    assert r.returncode == 127 and "cannot run" in r.stderr


@pytest.mark.parametrize("args, fragment", [
    (["-e", "no-such-event", "-a"], "unknown event"),
    (["--clockid", "no-such-clock", "-a"], "unknown clock"),
    ([], "give a command"),
])
def test_bad_arguments_fail_in_one_line_without_a_file(tmp_path, args, fragment):
    out = tmp_path / "bad.data"
    r = record(out, *args, check=False)
    assert r.returncode == 2 and fragment in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not out.exists()


def test_file_is_0600_whatever_the_umask(tmp_path):
    out = tmp_path / "u.data"
    r = subprocess.run(["sh", "-c", 'umask 0; exec "$@"', "sh", *TEXTRACE, "record", "-o",
                        str(out), "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (out.stat().st_mode & 0o777) == 0o600


def test_unprivileged_root_without_capabilities_fails_in_one_line(tmp_path):
    """uid 0 with every capability dropped: perf_event_paranoid applies as for anyone."""
    out = tmp_path / "x.data"
    r = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                        "--ambient-caps=-all", "--securebits=+noroot,+noroot_locked",
                        *TEXTRACE, "record", "-a", "--duration", "0.2", "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    paranoid = int(open("/proc/sys/kernel/perf_event_paranoid").read())
    assert paranoid > 0  # else system-wide events need no capability and this is no test
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "CAP_PERFMON" in r.stderr and f"is {paranoid}" in r.stderr
    assert not out.exists()


# --- the header ---------------------------------------------------------------------------

def _header(path) -> dict[str, str]:
    out = {}
    for line in perf_clean("report", "--header-only", "-i", str(path)).splitlines():
        m = re.match(r"^# ([a-z][a-z ]*?)\s*: (.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


def test_header_names_the_machine_the_events_and_the_clock(tmp_path):
    out = tmp_path / "h.data"
    record(out, "--", "true")
    h = _header(out)
    assert h["hostname"] == socket.gethostname()
    assert h["os release"] == os.uname().release
    assert h["arch"] == os.uname().machine
    assert int(h["nrcpus online"]) == len(live.online_cpus())
    assert int(h["nrcpus avail"]) == os.cpu_count()
    assert "record" in h["cmdline"] and "true" in h["cmdline"]
    assert h["clockid"] == "monotonic (1)"
    event = h["event"]
    for flag in ("ksymbol = 1", "bpf_event = 1", "text_poke = 1", "sample_id_all = 1",
                 "use_clockid = 1", "mmap2 = 1", "comm_exec = 1", "task = 1"):
        assert flag in event, flag
    assert "sample_type = TID|TIME|CPU|IDENTIFIER" in event


@pytest.mark.parametrize("clock, clockid, name", [("monotonic_raw", 4, "monotonic_raw"),
                                                   ("7", 7, "boottime")])
def test_clockid_sets_the_clock_of_every_record(tmp_path, clock, clockid, name):
    out = tmp_path / "c.data"
    before = time.clock_gettime_ns(clockid)
    record(out, "--clockid", clock, "--", "sh", "-c", "true")
    after = time.clock_gettime_ns(clockid)
    assert _header(out)["clockid"] == f"{name} ({clockid})"
    times = [r["time"] for r in events_json(out) if r["time"]]
    assert times and all(before <= t <= after for t in times)


# --- BPF programs: synthesized and live -------------------------------------------------

LOADER = """
import json, os, subprocess, sys, time
sys.path.insert(0, {tests!r})
from bpfprogs import load_with_subprograms
from textrace.bpf.prog_info import read_prog_info
fd = load_with_subprograms(2, name="tr_live")
info = read_prog_info(fd)
kallsyms = {{int(p[0], 16): p[2] for p in map(str.split, open("/proc/kallsyms"))
             if p[2].startswith("bpf_prog_")}}
bpftool = json.loads(subprocess.run(["bpftool", "prog", "show", "id", str(info.id),
                                     "--json"], capture_output=True, check=True).stdout)
json.dump({{"id": info.id, "tag": info.tag.hex(), "pid": os.getpid(),
            "funcs": [(a, n, kallsyms.get(a)) for a, n, _ in info.funcs()],
            "bpftool": bpftool}}, open({out!r}, "w"))
os.close(fd)
time.sleep(0.2)
"""


def _kallsyms_bpf() -> dict[int, str]:
    return {int(p[0], 16): p[2] for p in map(str.split, open("/proc/kallsyms"))
            if p[2].startswith("bpf_prog_")}


def test_bpf_ksymbols_have_the_kernels_addresses_lengths_and_names(tmp_path):
    """One program loaded before the recording (synthesized) and one during it (the
    kernel's own records): perf lists KSYMBOL/BPF_EVENT with the addresses, lengths and
    names of /proc/kallsyms and bpf_prog_info, and ids/tags of bpftool."""
    pre_fd = load_with_subprograms(1, name="tr_pre")
    try:
        pre = read_prog_info(pre_fd)
        pre_syms = _kallsyms_bpf()
        out, facts = tmp_path / "bpf.data", tmp_path / "live.json"
        record(out, "-a", "--", sys.executable, "-c", LOADER.format(tests=TESTS, out=str(facts)))
    finally:
        os.close(pre_fd)
    live_prog = json.loads(facts.read_text())
    theirs = script_bpf_records(out)

    def ksyms(event: dict, n: int) -> list[tuple]:
        """The n KSYMBOLs announcing `event`'s program: the kernel sends them just before
        the BPF_EVENT, from the same task (other programs may reuse the addresses later)."""
        unregister = event["event_type"] == 2
        before = [r for r in theirs if r["type"] == "KSYMBOL" and r["tid"] == event["tid"]
                  and r["time"] <= event["time"] and bool(r["flags"] & 1) == unregister]
        return [(r["addr"], r["len"], r["name"]) for r in before[-n:]]

    # synthesized, at time 0, before everything the kernel sent
    want = [(a, n, pre_syms[a]) for a, n, _ in pre.funcs()]
    loads = [r for r in theirs if r["type"] == "BPF_EVENT" and r["prog_id"] == pre.id]
    assert [(r["event_type"], r["time"]) for r in loads] == [(1, 0)]
    assert ksyms(loads[0], len(want)) == want

    # live: load then unload, with the names the kernel gave in kallsyms
    want = [tuple(f) for f in live_prog["funcs"]]
    assert all(name for _, _, name in want) and len(want) == 3
    bpf = [r for r in theirs if r["type"] == "BPF_EVENT" and r["prog_id"] == live_prog["id"]]
    assert [r["event_type"] for r in bpf] == [1, 2] and all(r["time"] > 0 for r in bpf), bpf
    assert bpf[0]["tid"] == live_prog["pid"]  # the unload is whoever let go last
    assert ksyms(bpf[0], 3) == want and ksyms(bpf[1], 3) == want
    assert live_prog["bpftool"]["id"] == live_prog["id"]
    assert live_prog["bpftool"]["tag"] == live_prog["tag"]
    assert live_prog["bpftool"]["bytes_jited"] == sum(n for _, n, _ in want)
    ours = [r for r in events_json(out) if r["type"] == "BPF_EVENT"
            and r["prog_id"] == live_prog["id"]]
    assert [r["tag"] for r in ours] == [live_prog["tag"]] * 2


def test_every_program_loaded_around_the_start_is_recorded(tmp_path):
    """Programs keep loading (and stay loaded) while the recorder starts: each one is in the
    file, synthesized or announced by the kernel; none falls between the two."""
    import threading
    fds, stop = [], threading.Event()

    def loader():
        while not stop.is_set():
            fds.append(load_trivial("tr_startgap"))
            time.sleep(0.0005)

    t = threading.Thread(target=loader)
    t.start()
    try:
        time.sleep(0.3)
        record(tmp_path / "gap.data", "-a", "--duration", "1.5")
    finally:
        stop.set()
        t.join()
    try:
        ids = [read_prog_info(fd).id for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)
    data = PerfData.open(tmp_path / "gap.data")
    seen = {r.prog_id for r in data.records(frozenset({RecordType.BPF_EVENT}))}
    ours = [i for i in ids if i in seen]
    assert len(ours) > 100
    missing = [i for i in ids if min(ours) <= i <= max(ours) and i not in seen]
    lost = sum(r.lost for r in data.records(frozenset({RecordType.LOST})))
    assert missing == [], f"{len(missing)} of {len(ids)} programs missing; {lost} records lost"


def test_trim_inflated_cuts_each_kind_to_body_and_trailer():
    trailer = bytes(range(32))
    ks = struct.pack("<QIHH", 0xffffffffc0001000, 40, 1, 0) + b"bpf_prog_x_y\0".ljust(16, b"\0")
    be = struct.pack("<HHI8s", 1, 0, 7, b"T" * 8)
    tp = struct.pack("<QHH", 0xffffffff81000000, 5, 5) + b"A" * 5 + b"B" * 5
    tp = tp.ljust(8 + 16, b"\0")  # addr, then lens and bytes padded to 8
    for rtype, body in ((RecordType.KSYMBOL, ks), (RecordType.BPF_EVENT, be),
                        (RecordType.TEXT_POKE, tp)):
        right = RECORD_HEADER.pack(rtype, 0, 8 + len(body) + 32) + body + trailer
        assert live.trim_inflated(right, 32) == right
        inflated = RECORD_HEADER.pack(rtype, 0, len(right) + 24) + right[8:] + b"\xee" * 24
        assert live.trim_inflated(inflated, 32) == right
    mmap_rec = RECORD_HEADER.pack(RecordType.MMAP, 0, 16) + b"\0" * 8
    assert live.trim_inflated(mmap_rec, 32) == mmap_rec


def test_ksymbols_stay_whole_while_another_perf_session_listens(tmp_path):
    """With a second listener for KSYMBOL/BPF_EVENT on the CPUs (a perf record started
    after ours), the kernel hands our event records too long for their trailer; the recorder
    trims them, so time, tid and event id read back right, in perf too."""
    out = tmp_path / "two.data"
    p = start_recorder(out)
    other = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "dummy", "-o",
                              str(tmp_path / "other.data"), "--", "sleep", "3"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        fd = load_with_subprograms(1, name="tr_two")
        info = read_prog_info(fd)
        prog_id, addrs = info.id, set(info.jited_ksyms)
        os.close(fd)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        time.sleep(0.5)
    finally:
        other.wait(timeout=60)
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    assert p.returncode == 0
    data = PerfData.open(out)
    ids = set(data.attrs[0].ids)
    recs = list(data.records_by_time(frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT})))
    unload = [r for r in recs if r.type == RecordType.BPF_EVENT and r.prog_id == prog_id][-1]
    ours = [r for r in recs if (r.type == RecordType.BPF_EVENT and r.prog_id == prog_id) or
            (r.type == RecordType.KSYMBOL and r.addr in addrs
             and before <= r.time <= unload.time)]  # later programs may reuse the addresses
    assert len(ours) == 6  # 2 KSYMBOL + BPF_EVENT, at load and at unload
    loads = [r for r in ours if (r.type == RecordType.KSYMBOL and not r.unregister) or
             (r.type == RecordType.BPF_EVENT and r.event_type == 1)]
    assert len(loads) == 3
    for r in loads:  # the unload is in the task that lets go last: maybe the recorder
        assert r.sample_id.pid == r.sample_id.tid == os.getpid()
        assert before <= r.sample_id.time <= after
    assert all(r.sample_id.id in ids and r.sample_id.time >= before for r in ours)
    theirs = [r for r in script_bpf_records(out) if r.get("prog_id") == prog_id
              or (r.get("addr") in addrs and before <= r["time"] <= unload.time)]
    assert [(r["type"], r["time"], r["tid"]) for r in theirs] == \
        [(r.type_name, r.sample_id.time, r.sample_id.tid) for r in ours]


# --- rounds, order, signals, losses -------------------------------------------------------

TWO_CPU_WORK = """
import os, sys
for _ in range(2):
    if os.fork() == 0:
        for _ in range(30):
            if os.fork() == 0:
                os._exit(sum(range(20000)) and 0)
            os.wait()
        os._exit(0)
for _ in range(2):
    os.wait()
"""


def test_rounds_keep_perf_from_seeing_records_out_of_order(tmp_path):
    """Samples and sideband from every CPU, drained round by round: perf sorts them
    without one out-of-order complaint, and the file has many rounds."""
    out = tmp_path / "o.data"
    record(out, "-a", "-e", "cpu-clock", "-F", "999", "--", sys.executable, "-c",
           TWO_CPU_WORK)
    r = subprocess.run(["perf", "script", "-i", str(out), "--ns", *SIDEBAND_FLAGS],
                       capture_output=True, text=True, env=dict(os.environ, PAGER="cat"))
    assert r.returncode == 0 and "out of order" not in r.stderr, r.stderr[-2000:]
    timeline = script_timeline(out)
    times = [row["time"] for row in timeline]
    assert times == sorted(times)
    assert {row["record"] for row in timeline} >= {"SAMPLE", "FORK", "EXIT", "COMM"}
    rounds = sum(1 for rec in events_json(out) if rec["type"] == "FINISHED_ROUND")
    assert rounds >= 2
    assert len({row["text"] for row in timeline if row["record"] == "FORK"}) >= 60


def test_duration_ends_the_recording_with_a_complete_file(tmp_path):
    out = tmp_path / "d.data"
    t0 = time.monotonic()
    record(out, "-a", "--duration", "0.5")
    assert time.monotonic() - t0 < 30
    assert _header(out)["hostname"] == socket.gethostname()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_end_the_recording_with_a_complete_file(tmp_path, sig):
    out = tmp_path / "s.data"
    p = start_recorder(out)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "wrote" in err
    assert _header(out)["hostname"] == socket.gethostname()


def test_sigkill_leaves_a_readable_file_and_no_process_behind(tmp_path):
    out = tmp_path / "k.data"
    p = start_recorder(out)
    children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                              text=True).stdout.split()
    p.kill()
    p.wait()
    time.sleep(0.5)
    for pid in children:  # gone, or a zombie nobody reaps
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"process {pid} outlived the killed recorder"
    perf_clean("script", "-i", str(out), *SIDEBAND_FLAGS)
    rows = events_json(out)
    assert any(r["type"] == "EXIT" for r in rows)


@pytest.fixture(scope="session")
def mmap_storm(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("storm") / "storm.c"
    src.write_text("""
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    for (long i = 0; i < n; i++) {
        void *p = mmap(0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 1;
        munmap(p, 4096);
    }
    return 0;
}
""")
    exe = src.with_suffix("")
    subprocess.run(["clang", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def test_lost_records_are_kept_counted_and_warned_about(tmp_path, mmap_storm):
    """A stopped reader and 20000 exec mmaps overflow the rings: the kernel's LOST records
    are in the file as it sent them, and the count is printed at exit."""
    out = tmp_path / "lost.data"
    p = start_recorder(out, "-m", "128")
    os.kill(p.pid, signal.SIGSTOP)
    try:
        subprocess.run([str(mmap_storm), "20000"], check=True)
    finally:
        os.kill(p.pid, signal.SIGCONT)
    time.sleep(0.5)
    # the kernel writes LOST into a ring only with the next record that fits: give each
    # CPU one more (a process started and ended there)
    for cpu in live.online_cpus():
        subprocess.run(["taskset", "-c", str(cpu), "true"], check=True)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    lost_recs = [r for r in events_json(out) if r["type"] == "LOST"]
    total = sum(r["lost"] for r in lost_recs)
    assert total > 0
    assert f"lost {total} records" in err
    dumped = [int(m) for m in re.findall(r"PERF_RECORD_LOST: id:\d+: lost:(\d+)",
                                         run_perf("report", "-D", "-i", str(out)))]
    assert sum(dumped) == total and len(dumped) == len(lost_recs)


def test_progress_line_on_a_terminal(tmp_path):
    """On a TTY, stderr gets a live count line, rewritten in place at most 4 times a
    second; into a pipe, only the summary."""
    master, slave = pty.openpty()
    p = subprocess.Popen([*TEXTRACE, "record", "-o", str(tmp_path / "p.data"), "-a",
                          "--duration", "1.5"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=30)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    updates = [u for u in text.split("\r") if u.startswith("textrace record: ")]
    assert 1 <= len(updates) <= 1.5 * 4 + 3, text
    assert "programs seen" in updates[-1] and "wrote" in text

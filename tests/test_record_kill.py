"""A recorder killed at any moment keeps every capture it flushed, and `textrace recover`
finishes the file so that perf reads it whole.

Real kernel, real BPF programs (bench/storm.py, a clang-built object), real SIGKILL; perf
is the oracle of the finished files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpfobj import build
from textrace.perf.header import FILE_HEADER
from textrace.perf.reader import PerfData

TEXTRACE = [sys.executable, "-m", "textrace"]
TESTS = os.path.dirname(os.path.abspath(__file__))
STORM = os.path.join(os.path.dirname(TESTS), "bench", "storm.py")

HOLD = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
from bpfobj import LoadedObject
from textrace.bpf.prog_info import read_prog_info
obj = LoadedObject({obj!r})
info = read_prog_info(obj.prog_fd("tr_calls"))
print(json.dumps({{"id": info.id}}), flush=True)
time.sleep(600)
"""


def tx(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([*TEXTRACE, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r


def progs(path) -> list[dict]:
    return [json.loads(line) for line in tx("progs", "-i", str(path), "--json")
            .stdout.splitlines()]


def perf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["perf", *args], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PAGER="cat"))


def header_prog_ids(path) -> set[int]:
    """Programs `perf report --header-only` lists from HEADER_BPF_PROG_INFO."""
    r = perf("report", "--header-only", "-i", str(path))
    assert r.returncode == 0, r.stderr
    return {int(m) for m in re.findall(r"bpf_prog_info (\d+):", r.stdout)}


def kill_recording(out: Path, workload: list[str], after: float, *opts: str,
                   wait_for: str | None = None) -> str:
    """`textrace record -a` of the workload, SIGKILLed (with the workload: one process
    group) `after` seconds after it starts, or after the workload prints its first line."""
    p = subprocess.Popen([*TEXTRACE, "record", "-a", *opts, "-o", str(out), "--",
                          *workload], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    first = ""
    try:
        if wait_for is not None:
            first = p.stdout.readline()
            time.sleep(after)
        else:
            time.sleep(after)
        assert p.poll() is None, p.stderr.read()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    return first


@pytest.fixture(scope="module")
def storm_kill(tmp_path_factory):
    """The issue's case: a storm of 20000 programs, each held 500 us, SIGKILL at 4 s."""
    out = tmp_path_factory.mktemp("kill") / "storm.data"
    kill_recording(out, [sys.executable, STORM, "20000", "--hold-us", "500"], 4.0,
                   "-e", "cpu-clock")
    return out


@pytest.fixture(scope="module")
def held_kill(tmp_path_factory):
    """A clang-built program with subprograms, BTF and line info, loaded and held while
    the recorder is killed."""
    tmp = tmp_path_factory.mktemp("killcalls")
    obj = build("calls", str(tmp))
    out = tmp / "calls.data"
    line = kill_recording(out, [sys.executable, "-c", HOLD.format(tests=TESTS, obj=obj)],
                          1.0, "-e", "cpu-clock", wait_for="id")
    return out, json.loads(line)["id"]


def test_sigkill_in_a_storm_keeps_the_captures(storm_kill):
    rows = [r for r in progs(storm_kill) if r["name"] == "storm"]
    captured = sum(r["captured"] for r in rows)
    assert len(rows) >= 200, len(rows)
    assert captured >= 0.95 * len(rows), (captured, len(rows))
    # the captures are the programs' JIT images, not just a flag
    assert all(f["jited"] for r in rows if r["captured"] for f in r["funcs"])
    # the killed file is still ordinary perf.data for perf
    r = perf("report", "--stdio", "-i", str(storm_kill))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_views_work_on_a_killed_file(held_kill):
    path, prog_id = held_kill
    row = next(r for r in progs(path) if r["id"] == prog_id)
    assert row["captured"] and row["capture"] in ("kernel", "user")
    ann = [json.loads(x) for x in tx("annotate", "-i", str(path), str(prog_id),
                                     "--json").stdout.splitlines()]
    assert ann and any(a["source"] for a in ann)  # line info and BTF came through
    calls = [json.loads(x) for x in tx("callsites", "-i", str(path), str(prog_id),
                                       "--json").stdout.splitlines()]
    assert calls and all(c["symbol"] for c in calls)
    addr = row["funcs"][0]["addr"]
    versions = [json.loads(x) for x in tx("show", "-i", str(path), hex(addr),
                                          "--json").stdout.splitlines()]
    mine = [v for v in versions if v["prog_id"] == prog_id]
    assert mine and mine[0]["bytes"] and row["funcs"][0]["jited"].startswith(mine[0]["bytes"])


def test_recover_finishes_a_killed_file_for_perf(storm_kill, tmp_path):
    out = tmp_path / "recovered.data"
    r = tx("recover", str(storm_kill), "-o", str(out))
    assert "no end of recording" in r.stderr and str(storm_kill) in r.stderr
    captured = {row["id"] for row in progs(storm_kill) if row["captured"]}
    assert header_prog_ids(out) >= captured
    assert {row["id"] for row in progs(out) if row["captured"]} == captured
    rep = perf("report", "--stdio", "-i", str(out))
    assert rep.returncode == 0 and "Error" not in rep.stderr, rep.stderr[-2000:]
    assert os.stat(out).st_mode & 0o777 == 0o600
    # recovering the recovered file finds nothing damaged
    again = tx("recover", str(out), "-o", str(tmp_path / "again.data"))
    assert "nothing damaged" in again.stderr


def test_a_kill_while_finishing_leaves_a_file_recover_repairs(held_kill, tmp_path):
    """Finishing writes the end after the data and the header last: the states a kill can
    leave are the finished file cut anywhere after its data, under the last round's header.
    Each reads as the unfinished file did, and recover finishes it."""
    path, prog_id = held_kill
    done = tmp_path / "done.data"
    tx("recover", str(path), "-o", str(done))
    whole = done.read_bytes()
    h = PerfData(whole, path="done").header
    old_header = struct.pack("<8sQQQQQQQQ", *FILE_HEADER.unpack_from(whole, 0)[:9]) \
        + bytes(32)  # no feature bits: the header of the last round
    end = h.data.end
    for cut in (end, end + 7, end + 16 * 5, (end + len(whole)) // 2, len(whole) - 1,
                len(whole)):
        f = tmp_path / f"cut{cut}.data"
        f.write_bytes(old_header + whole[FILE_HEADER.size:cut])
        row = next(r for r in progs(f) if r["id"] == prog_id)
        assert row["captured"]
        fixed = tmp_path / f"fixed{cut}.data"
        tx("recover", str(f), "-o", str(fixed))
        assert prog_id in header_prog_ids(fixed)


def test_recover_says_where_a_cut_file_was_damaged(held_kill, tmp_path):
    path, prog_id = held_kill
    done = tmp_path / "done.data"
    tx("recover", str(path), "-o", str(done))
    whole = done.read_bytes()
    h = PerfData(whole, path="done").header
    cut = tmp_path / "cut.data"
    cut.write_bytes(whole[:h.data.offset + h.data.size - 5])  # inside the last record
    r = tx("recover", str(cut))   # in place
    assert "cut" in r.stderr and re.search(r"offset 0x[0-9a-f]+", r.stderr), r.stderr
    assert any(row["id"] == prog_id for row in progs(cut))
    assert perf("report", "--header-only", "-i", str(cut)).returncode == 0

"""textrace inject: perf's own recordings completed from a daemon's store (real perf, real
daemon, real program loads); perf is the oracle for the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from textrace.load import captured_programs
from textrace.perf.abi import BpfEventType, Feature, RecordType
from textrace.perf.header import FILE_HEADER
from textrace.perf.reader import PerfData

from daemon_proc import DaemonProc
from oracle import perf_header, run_perf

HERE = os.path.dirname(os.path.abspath(__file__))
STORM = os.path.join(HERE, "..", "bench", "storm.py")
BITMAP = slice(72, FILE_HEADER.size)   # adds_features: the only header bytes inject changes


def textrace_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textrace", *argv], capture_output=True,
                          text=True)


def loaded_ids(path) -> set[int]:
    data = PerfData.open(path)
    return {r.prog_id for r in data.records(frozenset({RecordType.BPF_EVENT}))
            if r.event_type == BpfEventType.PROG_LOAD and r.time}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """perf record -a (file mode, and -z) of the feature probe and a storm of 1000
    programs, while a daemon runs: perf loses many of them."""
    tmp = tmp_path_factory.mktemp("inject")
    store = str(tmp / "store")
    workload = ["sh", "-c", f"bpftool feature probe kernel >/dev/null; "
                            f"{sys.executable} {STORM} 1000 >/dev/null"]
    with DaemonProc(store) as d:
        plain, zstd = tmp / "perf.data", tmp / "perfz.data"
        run_perf("record", "-q", "-a", "-e", "dummy", "-o", str(plain), "--", *workload)
        run_perf("record", "-q", "-a", "-e", "dummy", "-z", "-o", str(zstd), "--", *workload)
        d.settle()
        assert d.stop()[0] == 0
    return tmp, store, plain, zstd


def test_inject_completes_every_program_the_file_saw_load(recorded):
    tmp, store, plain, _ = recorded
    out = tmp / "injected.data"
    r = textrace_cli("inject", "-i", str(plain), "-o", str(out), "--store", store)
    assert r.returncode == 0, r.stderr
    loaded = loaded_ids(plain)
    had = set(captured_programs(PerfData.open(plain)))
    assert len(loaded - had) >= 50          # perf lost these (storm programs live ~1 us)
    # perf itself lists a bpf_prog_info for every program loaded during the recording
    header = perf_header(out)
    listed = {int(k.split()[1]) for k in header if k.startswith("bpf_prog_info ")}
    assert loaded <= listed, sorted(loaded - listed)[:10]
    assert f"{len(loaded - had)} completed, 0 not" in r.stderr, r.stderr
    # perf's own bpf_prog_info entries are unchanged
    before = {int(k.split()[1]): v for k, v in perf_header(plain).items()
              if k.startswith("bpf_prog_info ")}
    assert all(header[f"bpf_prog_info {i}"] == v for i, v in before.items())


def test_inject_leaves_everything_else_byte_identical(recorded):
    tmp, store, plain, _ = recorded
    out = tmp / "same.data"
    assert textrace_cli("inject", "-i", str(plain), "-o", str(out), "--store",
                        store).returncode == 0
    a, b = PerfData.open(plain), PerfData.open(out)
    raw_a, raw_b = plain.read_bytes(), out.read_bytes()
    end = a.header.data.end
    assert raw_a[:BITMAP.start] == raw_b[:BITMAP.start]
    assert raw_a[FILE_HEADER.size:end] == raw_b[FILE_HEADER.size:end]   # attrs, ids, data
    for feat in a.features:
        if feat not in (Feature.BPF_PROG_INFO, Feature.BPF_BTF):
            assert bytes(a.feature_bytes(feat)) == bytes(b.feature_bytes(feat)), feat
    assert os.stat(out).st_mode & 0o077 == 0
    # perf reads it as it read the original
    for args in (("script", "--show-bpf-events"), ("report", "--stdio", "--sort", "pid")):
        assert run_perf(*args, "-i", str(out)) == run_perf(*args, "-i", str(plain))


def test_annotate_and_callsites_work_for_a_program_perf_lost(recorded):
    tmp, store, plain, _ = recorded
    out = tmp / "views.data"
    assert textrace_cli("inject", "-i", str(plain), "-o", str(out), "--store",
                        store).returncode == 0
    lost = sorted(loaded_ids(plain) - set(captured_programs(PerfData.open(plain))))
    prog = str(lost[-1])
    before = textrace_cli("annotate", prog, "-i", str(plain), "--json")
    assert before.returncode == 2 and "not captured" in before.stderr
    rows = [json.loads(x) for x in textrace_cli("annotate", prog, "-i", str(out),
                                                "--json").stdout.splitlines()]
    assert rows and rows[-1]["asm"].startswith("jmp")     # the return thunk
    calls = textrace_cli("callsites", prog, "-i", str(out), "--json")
    assert calls.returncode == 0, calls.stderr
    addr = rows[0]["addr"]
    shown = [json.loads(x) for x in textrace_cli("show", hex(addr), "-i", str(out),
                                                 "--json").stdout.splitlines()]
    mine = [v for v in shown if v["prog_id"] == int(prog)]
    assert mine and mine[0]["bytes"]
    progs = [json.loads(x) for x in textrace_cli("progs", "-i", str(out),
                                                 "--json").stdout.splitlines()]
    assert {p["id"]: p for p in progs}[int(prog)]["capture"] == "store"


def test_inject_a_compressed_recording(recorded):
    tmp, store, _, zstd = recorded
    out = tmp / "z-injected.data"
    r = textrace_cli("inject", "-i", str(zstd), "-o", str(out), "--store", store)
    assert r.returncode == 0, r.stderr
    listed = {int(k.split()[1]) for k in perf_header(out) if k.startswith("bpf_prog_info ")}
    assert loaded_ids(zstd) <= listed
    assert run_perf("script", "--show-bpf-events", "-i", str(out)) == \
        run_perf("script", "--show-bpf-events", "-i", str(zstd))


def test_inject_says_which_it_could_not_complete_and_why(recorded, tmp_path):
    _, _, plain, _ = recorded
    empty = str(tmp_path / "empty")
    with DaemonProc(empty) as d:     # a store that saw none of the file's programs
        assert d.stop()[0] == 0
    r = textrace_cli("inject", "-i", str(plain), "-o", str(tmp_path / "o.data"), "--store",
                     empty)
    assert r.returncode == 0
    assert " 0 completed" in r.stderr
    assert "not in the store (no load of this id and tag)" in r.stderr


def test_pipe_mode_input_is_a_clear_error(recorded, tmp_path):
    tmp, store, _, _ = recorded
    pipe = tmp_path / "pipe.data"
    with open(pipe, "wb") as f:
        subprocess.run(["perf", "record", "-q", "-a", "-e", "dummy", "-o", "-", "--",
                        "true"], stdout=f, check=True)
    r = textrace_cli("inject", "-i", str(pipe), "-o", str(tmp_path / "o.data"), "--store",
                     store)
    assert r.returncode == 2 and "pipe-mode" in r.stderr and "Traceback" not in r.stderr


def test_inject_from_a_textrace_recording_made_at_the_same_time(tmp_path):
    """--from: textrace record runs perf record, which runs the storm; the programs perf
    lost come from textrace's recording (matched by id and tag)."""
    tr, pd = tmp_path / "textrace.data", tmp_path / "perf.data"
    r = textrace_cli("record", "-a", "-o", str(tr), "--", "perf", "record", "-q", "-a",
                     "-e", "dummy", "-o", str(pd), "--", sys.executable, STORM, "500")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "from.data"
    r = textrace_cli("inject", "-i", str(pd), "-o", str(out), "--from", str(tr))
    assert r.returncode == 0, r.stderr
    lost = loaded_ids(pd) - set(captured_programs(PerfData.open(pd)))
    assert lost
    listed = {int(k.split()[1]) for k in perf_header(out) if k.startswith("bpf_prog_info ")}
    assert lost <= listed
    progs = {p["id"]: p for p in map(json.loads, textrace_cli(
        "progs", "-i", str(out), "--json").stdout.splitlines())}
    assert all(progs[i]["capture"] == "from" for i in lost)

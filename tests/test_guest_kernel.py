"""textrace on Debian's stock 6.1 kernel, in the qemu testbed: real TEXT_POKE records, a
/proc/kcore to check them against, and the capture program on a kernel other than the
host's (CO-RE).

One guest boot runs everything (tests/guest/pokes_workload.py): under `textrace record
--kernel-text`, a tracepoint toggle (jump labels), the function tracer (ftrace), a kprobe
(int3, then optimised), an fentry attach and detach (a BPF trampoline) and a tail-call map
update; after each change the workload copies the kernel's own memory (kcore).  Then a
`bpftool feature probe` recording and the capture program's code reads against kcore.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from textrace import open as open_recording
from textrace.history.build import build_history, kernel_code_images
from textrace.perf.private import Kind, private_section
from textrace.recorded import recorded
from textrace.views.show import program_images

TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(TESTS), "src")

SCRIPT = """
set -e
export PYTHONPATH={src}
python3 -m textrace record -a --kernel-text -o pokes.data -- \\
    python3 {tests}/guest/pokes_workload.py {shared} 2> pokes.err
python3 {tests}/guest/pokes_workload.py --extract {shared}
python3 -m textrace record -a -o probe.data -- bpftool feature probe kernel \\
    > /dev/null 2> probe.err
python3 {tests}/guest/pokes_workload.py --code-reads > code_reads.json
uname -r > release
"""


@pytest.fixture(scope="module")
def run(guest, tmp_path_factory):
    shared = tmp_path_factory.mktemp("guest-kernel")
    script = SCRIPT.format(src=SRC, tests=TESTS, shared=shared)
    r = guest.run(["sh", "-c", script], shared=shared, timeout=600)
    assert r.returncode == 0, f"{r.stderr}\n{_read(shared / 'pokes.err')}" \
                              f"\n{_read(shared / 'probe.err')}"
    return shared


def _read(path) -> str:
    return path.read_text() if path.exists() else ""


def test_the_guest_runs_debians_61(run):
    assert _read(run / "release").startswith("6.1.")


def _history(rec, images):
    history, programs = build_history(rec.data.records_by_time())
    history.add_images(program_images(rec.data, programs))
    history.add_images(images)
    return history


def test_history_equals_kcore_after_every_change_forwards_and_backwards(run):
    """At each step's time, the history's bytes at every poked address equal kcore's:
    once from the kernel text read at the start (forwards through the pokes), once from
    the functions read at the end (backwards)."""
    rec = open_recording(run / "pokes.data")
    steps = json.loads((run / "kcore.json").read_text())
    start = steps[0]["time"]
    images = kernel_code_images(recorded(rec.data).kernel_code)
    base = [im for im in images if im.time < start]
    later = [im for im in images if im.time > steps[-1]["done"]]
    assert sum(len(im.data) for im in base) > 8 << 20  # all of _text.._etext
    assert later
    pokes = [r for r in rec.records() if r.type_name == "TEXT_POKE"]
    assert len(pokes) >= 20
    for chosen in (base, later):
        history = _history(rec, chosen)
        checked = 0
        for step in steps:
            for key, want in step["bytes"].items():
                addr, want = int(key.split(":")[0]), bytes.fromhex(want)
                if not any(p.addr == addr and len(want) == max(p.old_len, p.new_len)
                           for p in pokes):
                    continue  # an out-of-line symbol's image: the next test
                region = history.table.at(addr, step["time"])
                in_text = any(im.addr <= addr < im.end for im in base)
                if not in_text and region is None:
                    continue  # no code there at that time (a program not loaded yet)
                assert history.read(addr, len(want), step["time"]) == want, \
                    (step["step"], hex(addr))
                checked += 1
        assert checked >= 100


def test_out_of_line_code_is_read_when_registered(run):
    """BPF trampolines, ftrace trampolines and kprobe instruction pages: no record
    carries their bytes; the recorder read each when its KSYMBOL arrived, and the bytes
    equal kcore's at the next step."""
    rec = open_recording(run / "pokes.data")
    steps = json.loads((run / "kcore.json").read_text())
    images = kernel_code_images(recorded(rec.data).kernel_code)
    ksyms = [r for r in rec.records() if r.type_name == "KSYMBOL" and not r.flags
             and not r.name.startswith("bpf_prog_")]
    names = {r.name.rstrip("0123456789") for r in ksyms}
    assert {"bpf_trampoline_", "ftrace_trampoline", "kprobe_insn_page"} <= names
    for k in ksyms:
        image = next(im for im in images if im.addr == k.addr and im.time >= k.time)
        after = next(s for s in steps if s["time"] > image.time)
        want = bytes.fromhex(after["bytes"][f"{k.addr}:{min(k.len, 4096)}"])
        if k.name.startswith("kprobe"):
            continue  # instruction slots fill as probes come and go
        assert image.data[:len(want)] == want, k.name


def test_pokes_of_every_kind_are_recorded(run):
    r = subprocess.run([sys.executable, "-m", "textrace", "pokes", "-i",
                        str(run / "pokes.data"), "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    kinds = {json.loads(line)["kind"] for line in r.stdout.splitlines()}
    assert {"jump_label", "ftrace", "kprobe", "bpf_trampoline", "tail_call"} <= kinds, kinds


def test_tail_call_patches_the_kernel_reports_are_not_reported_twice(run):
    """6.1 emits TEXT_POKE for tail-call sites (6.18 does not): the recorder's re-reads
    must then find nothing unreported."""
    rec = open_recording(run / "pokes.data")
    tail = [p for p in rec.programs if p.name == "tr_tail"]
    assert len(tail) == 1
    addr = tail[0].funcs[0]["addr"]
    size = tail[0].funcs[0]["len"]
    pokes = [r for r in rec.records() if r.type_name == "TEXT_POKE"
             and addr <= r.addr < addr + size]
    assert len(pokes) >= 3  # target and bypass set, then cleared
    assert private_section(rec.data).get(Kind.UNREPORTED) == []


def test_the_capture_program_works_on_61(run):
    """CO-RE: the object built on this host loads on 6.1, captures every program of the
    feature probe, and reads kernel code exactly as kcore has it."""
    r = subprocess.run([sys.executable, "-m", "textrace", "progs", "-i",
                        str(run / "probe.data"), "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) > 200
    assert all(row["captured"] and row["capture"] == "kernel" for row in rows)
    reads = json.loads((run / "code_reads.json").read_text())
    assert len(reads) >= 6 and all(v["equal"] for v in reads.values()), reads

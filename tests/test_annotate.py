"""`textrace annotate` from the recording alone: source lines checked against bpftool's
`dump xlated linum` taken while the program was loaded, samples against the report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from bpfobj import build, record_workload
from textrace.sources.kallsyms import read_proc_kallsyms

TESTS = os.path.dirname(os.path.abspath(__file__))

# Load the clang -g program, dump bpftool's view of it, run it in the kernel for a while
# (BPF_PROG_TEST_RUN) so that cpu-clock samples land in its JIT code, then unload it.
WORKLOAD = r"""
import json, subprocess, sys, time
sys.path.insert(0, {tests!r})
from bpfobj import LoadedObject
from textrace.bpf.prog_info import read_prog_info
from textrace.bpf.syscall import prog_test_run
obj = LoadedObject({obj!r})
fd = obj.prog_fd("tr_spin")
info = read_prog_info(fd)
dump = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(info.id), "linum"],
                      capture_output=True, text=True, check=True).stdout
t0 = time.monotonic()
while time.monotonic() - t0 < 1.0:
    prog_test_run(fd, bytes(64), 50_000)
print(json.dumps({{"id": info.id, "dump": dump}}))
obj.close()
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("annotate")
    obj = build("spin", str(tmp))
    out = tmp / "spin.data"
    facts = record_workload(out, WORKLOAD.format(tests=TESTS, obj=obj), "-e", "cpu-clock",
                            "-F", "999")
    a = subprocess.run([sys.executable, "-m", "textrace", "annotate", "-i", str(out),
                        str(facts["id"]), "--json"], capture_output=True, text=True,
                       timeout=120)
    assert a.returncode == 0, a.stderr
    return out, facts, [json.loads(l) for l in a.stdout.splitlines()]


def bpftool_lines(dump: str) -> dict[int, tuple[str, int]]:
    """BPF instruction index -> (file, line) as bpftool's linum dump gives them."""
    out, current = {}, None
    for line in dump.splitlines():
        m = re.search(r"\[file:(\S+) line_num:(\d+)", line)
        if m:
            current = (m.group(1), int(m.group(2)))
            continue
        m = re.match(r"\s*(\d+): \(", line)
        if m and current is not None:
            out[int(m.group(1))] = current
    return out


def test_source_lines_are_bpftools(recorded):
    _, facts, rows = recorded
    truth = bpftool_lines(facts["dump"])
    checked = 0
    for row in rows:
        if not row["source"]:
            continue
        path, line = row["source"].rsplit(":", 1)
        for text in row["insns"]:
            index = int(text.split(":")[0])
            assert truth[index] == (path, int(line)), text
            checked += 1
    assert checked >= 10


def test_every_sample_falls_on_an_instruction_and_the_loop_is_hottest(recorded):
    path, facts, rows = recorded
    total = sum(r["samples"] for r in rows)
    assert total >= 100  # a second in the program at 999 Hz
    report = subprocess.run([sys.executable, "-m", "textrace", "report", "-i", str(path),
                             "--json"], capture_output=True, text=True, timeout=120)
    ours = {r["symbol"]: r["samples"] for r in map(json.loads, report.stdout.splitlines())}
    in_program = sum(n for sym, n in ours.items()
                     if sym.startswith("bpf_prog_") and sym.endswith(("_tr_spin", "_fold")))
    assert total == in_program  # every sample in the program is on an instruction boundary
    by_line: dict[str, int] = {}
    current = None
    for r in rows:
        current = r["source"] or current
        by_line[current] = by_line.get(current, 0) + r["samples"]
    loop = sum(n for src, n in by_line.items()
               if src and src.endswith(("spin.bpf.c:17", "spin.bpf.c:18")))
    assert loop > total / 2  # the for loop and its body: where the program spends its time


def test_calls_are_named(recorded):
    _, _, rows = recorded
    targets = [r["target"] for r in rows if r["asm"].startswith("call") and r["target"]]
    kallsyms = read_proc_kallsyms()
    helper = next(t for t in targets if not t.startswith("bpf_prog_"))
    assert kallsyms.address_of(helper) is not None
    assert any(t.startswith("bpf_prog_") and t.endswith("_fold") for t in targets)


TAIL_WORKLOAD = r"""
import sys, time
sys.path.insert(0, {tests!r})
from bpfobj import LoadedObject
obj = LoadedObject({obj!r})
time.sleep(0.2)
print("{{}}")
obj.close()
"""


@pytest.mark.parametrize("capture", ["kernel", "user"])
def test_tail_call_site_is_marked(tmp_path, capture):
    """Both encodings: the kernel's own (kernel capture) and its user-space dump (user)."""
    obj = build("tail", str(tmp_path))
    out = tmp_path / "tail.data"
    record_workload(out, TAIL_WORKLOAD.format(tests=TESTS, obj=obj), "--capture", capture)
    a = subprocess.run([sys.executable, "-m", "textrace", "annotate", "-i", str(out),
                        "tr_tail", "--json"], capture_output=True, text=True, timeout=120)
    assert a.returncode == 0, a.stderr
    rows = [json.loads(l) for l in a.stdout.splitlines()]
    marked = [r for r in rows if "tail_call" in r["marks"]]
    assert marked and all("bpf_tail_call(" in r["line"] for r in marked)

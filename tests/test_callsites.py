"""`textrace callsites` from the recording alone, checked against bpftool's dump of the same
program taken while it was still loaded, and against kallsyms."""

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

WORKLOAD = r"""
import json, subprocess, sys
sys.path.insert(0, {tests!r})
from bpfobj import LoadedObject
from textrace.bpf.prog_info import read_prog_info
obj = LoadedObject({obj!r})
info = read_prog_info(obj.prog_fd("tr_calls"))
dump = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(info.id)],
                      capture_output=True, text=True, check=True).stdout
print(json.dumps({{"id": info.id, "dump": dump}}))
obj.close()
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calls")
    obj = build("calls", str(tmp))
    out = tmp / "calls.data"
    return out, record_workload(out, WORKLOAD.format(tests=TESTS, obj=obj))


def bpftool_calls(dump: str) -> list[tuple[int, str, str]]:
    """(insn index, callee, source line) of every call bpftool lists."""
    out, source = [], None
    for line in dump.splitlines():
        if line.startswith("; "):
            source = line[2:].strip()
            continue
        m = re.match(r"\s*(\d+): \(85\) call (\S+)", line)
        if m:
            callee = m.group(2).split("#")
            name = callee[1] if callee[0].startswith("pc") else callee[0]
            out.append((int(m.group(1)), name, source))
    return out


def test_calls_match_bpftool_and_kallsyms(recorded):
    path, facts = recorded
    r = subprocess.run([sys.executable, "-m", "textrace", "callsites", "-i", str(path),
                        str(facts["id"]), "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    expected = bpftool_calls(facts["dump"])
    assert len(rows) == len(expected) == 3  # two helpers and the subprogram
    kallsyms = read_proc_kallsyms()
    for row, (insn, callee, source) in zip(rows, expected):
        assert row["insn"] == insn
        assert row["symbol"] == callee            # helper or bpf_prog_<tag>_mix
        assert row["line"] == source
        assert row["source"].endswith("calls.bpf.c:" + row["source"].rsplit(":", 1)[1])
        assert row["ret"] > row["ip"]
        if not callee.startswith("bpf_prog_"):     # helpers are kernel functions
            assert kallsyms.address_of(callee) == row["target"]

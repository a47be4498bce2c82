"""Damaged recordings that textrace made: its own section, its stream, perf's features and
the records, for every verb.

Every entry of textrace's section is decoded through its codec: a damaged one is one line
naming the file, the offset and the entry, exit 2 — or with --salvage it is skipped and said.
A mutation campaign (mutate_verbs.py, in a child under a memory limit and an alarm) damages
a finished and a killed recording and runs events, report, progs, pokes, show, annotate,
callsites and recover on each mutant: nothing but TextraceErrors, no hang, bounded memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bpfobj import build, record_workload
from test_record_kill import HOLD, TESTS, kill_recording
from textrace.perf.private import FEATURE_BIT, Kind, PrivateSection
from textrace.perf.reader import PerfData

TEXTRACE = [sys.executable, "-m", "textrace"]
MUTANTS = int(os.environ.get("TEXTRACE_MUTANTS", "12"))   # per recording; more: env

FINISHED = r"""
import json, sys
sys.path.insert(0, {tests!r})
from bpfobj import LoadedObject
from textrace.bpf.prog_info import read_prog_info
obj = LoadedObject({obj!r})
info = read_prog_info(obj.prog_fd("tr_calls"))
print(json.dumps({{"id": info.id}}))
obj.close()
"""


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("badtx")
    obj = build("calls", str(tmp))
    done = tmp / "finished.data"
    facts = record_workload(done, FINISHED.format(tests=TESTS, obj=obj), "-e", "cpu-clock")
    killed = tmp / "killed.data"
    line = kill_recording(killed, [sys.executable, "-c", HOLD.format(tests=TESTS, obj=obj)],
                          1.0, "-e", "cpu-clock", wait_for="id")
    return {"finished": (done, facts["id"]), "killed": (killed, json.loads(line)["id"])}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TEXTRACE, *args], capture_output=True, text=True, timeout=120)


def entry_offsets(path) -> dict[int, tuple[int, int]]:
    """kind -> (file offset, size) of the first entry of that kind in textrace's section."""
    p = PerfData.open(path)
    sec = PrivateSection.parse(p.feature_bytes(FEATURE_BIT),
                               offset=p.feature_offset(FEATURE_BIT))
    out = {}
    for (kind, blob), off in zip(sec.entries, sec.offsets):
        out.setdefault(kind, (off, len(blob)))
    return out


@pytest.mark.parametrize("kind,verb,damage", [
    (Kind.CAPTURES, "progs", b"\xff\xfe"),           # not UTF-8
    (Kind.CAPTURES, "packs", b"{\"id\": \"x\""),     # not JSON (pokes reads no capture)
    (Kind.RECORD_INFO, "progs", b"[1, 2]     "),      # not an object
    (Kind.KERNEL_CODE, "show", b"\xff" * 8),          # sizes do not add up (zstd inside)
])
def test_damaged_entry_is_one_line_or_skipped_with_salvage(recordings, tmp_path, kind,
                                                          verb, damage):
    path, prog = recordings["finished"]
    where = entry_offsets(path)
    if kind not in where:
        pytest.fail(f"the recording has no {kind.name} entry")
    off, size = where[kind]
    raw = bytearray(path.read_bytes())
    raw[off:off + len(damage)] = damage
    bad = tmp_path / "bad.data"
    bad.write_bytes(bytes(raw))
    args = [verb, "-i", str(bad)] + (["0xffffffff81000000"] if verb == "show" else [])
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(bad) in r.stderr and "offset 0x" in r.stderr and "textrace." in r.stderr
    s = cli(*args, "--salvage")
    assert s.returncode in (0, 1) and "Traceback" not in s.stderr, s.stderr
    assert "warning" in s.stderr and "skipped" in s.stderr, s.stderr


def test_recover_says_which_entries_of_a_finished_file_were_damaged(recordings, tmp_path):
    """The stream holds what the section does: recover says what was damaged and where,
    and finishes the file from the stream."""
    path, prog = recordings["finished"]
    off, _size = entry_offsets(path)[Kind.KALLSYMS]
    raw = bytearray(path.read_bytes())
    raw[off:off + 4] = b"\0\0\0\0"   # not zstd any more
    bad = tmp_path / "bad.data"
    bad.write_bytes(bytes(raw))
    out = tmp_path / "fixed.data"
    r = cli("recover", str(bad), "-o", str(out))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"offset {off:#x}" in r.stderr and "KALLSYMS" in r.stderr, r.stderr
    fixed = PerfData.open(out)
    from textrace.recorded import recorded
    assert recorded(fixed).kallsyms   # from the stream's copy


def test_damaged_stream_chunk_is_said_and_the_rest_kept(recordings, tmp_path):
    """A chunk whose crc32 does not match is left out; every other capture is read."""
    path, prog = recordings["killed"]
    from textrace.perf.abi import RecordType
    from textrace.perf.stream import CHUNK
    p = PerfData.open(path)
    captures = [(off, rec) for off, rec in p.raw_records(frozenset({RecordType.FINISHED_INIT}))
                if len(rec) > 8 + CHUNK.size and CHUNK.unpack_from(rec, 8)[1] == Kind.CAPTURE]
    assert len(captures) > 2

    def captured(f):
        r = cli("progs", "-i", str(f), "--json")
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        return {row["id"] for row in map(json.loads, r.stdout.splitlines())
                if row["captured"]}, r.stderr
    good, _ = captured(path)
    off, rec = captures[len(captures) // 2]
    raw = bytearray(path.read_bytes())
    raw[off + 8 + CHUNK.size + 3] ^= 0x55
    bad = tmp_path / "bad.data"
    bad.write_bytes(bytes(raw))
    got, err = captured(bad)
    assert "crc32" in err and f"{off:#x}" in err, err
    assert got <= good and len(got) >= len(good) - 1


def test_mutated_textrace_recordings_fail_only_with_textrace_errors(recordings, tmp_path):
    files = []
    for path, prog in recordings.values():
        rows = [json.loads(x) for x in cli("progs", "-i", str(path), "--json")
                .stdout.splitlines()]
        addr = next(r for r in rows if r["id"] == prog)["funcs"][0]["addr"]
        files.append({"path": str(path), "prog": prog, "addr": addr})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"files": files, "mutants": MUTANTS, "seed": 13,
                                "tmp": str(tmp_path), "mem_gib": 3, "seconds": 60}))
    r = subprocess.run([sys.executable, os.path.join(TESTS, "mutate_verbs.py"), str(spec)],
                       capture_output=True, text=True, timeout=60 * 30)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["runs"] == 8 * MUTANTS * len(files)
    assert result["errors"] > 0   # the campaign did damage things
    assert not result["failures"], "\n".join(result["failures"][:5])


def test_damaged_program_info_fails_when_its_program_is_asked_for(recordings, tmp_path):
    """HEADER_BPF_PROG_INFO's entries are decoded when a view asks for their program (a
    view of one program in a recording of thousands decodes one): a damaged entry is the
    same one-line FormatError (file, offset, field) for annotate and show of its program as
    for progs, which reads every one; pokes, which needs no program's info, still works."""
    import struct

    from textrace.bpf.prog_info import bpil_id
    from textrace.errors import FormatError
    from textrace.perf.abi import Feature
    from textrace.recorded import recorded
    path, prog = recordings["finished"]
    rows = [json.loads(x) for x in cli("progs", "-i", str(path), "--json").stdout.splitlines()]
    addr = next(r for r in rows if r["id"] == prog)["funcs"][0]["addr"]
    p = PerfData.open(path)
    section = p.feature_offset(Feature.BPF_PROG_INFO)
    pos = 4                                   # past the count; then each entry's header
    for e in p.feature(Feature.BPF_PROG_INFO).programs:
        if bpil_id(e.info) == prog:
            break
        pos += 16 + e.info_len + e.data_len
    else:
        pytest.fail(f"program {prog} is not in HEADER_BPF_PROG_INFO")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<Q", raw, section + pos + 8, e.arrays | 1 << 12)  # an array perf lacks
    bad = tmp_path / "bad.data"
    bad.write_bytes(bytes(raw))

    errors = [cli(*args, "-i", str(bad)) for args in (["progs"], ["annotate", str(prog)],
                                                      ["show", hex(addr)])]
    for r in errors:
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors[0].stderr == errors[1].stderr == errors[2].stderr
    assert str(bad) in errors[0].stderr and f"offset {section:#x}" in errors[0].stderr
    assert "bpf_prog_info.arrays" in errors[0].stderr
    ok = cli("pokes", "-i", str(bad))
    assert ok.returncode == 0 and not ok.stderr, ok.stderr

    infos = recorded(PerfData.open(bad)).infos
    assert prog in infos and len(infos) == len(recorded(PerfData.open(path)).infos)
    with pytest.raises(FormatError) as got:
        infos[prog]
    assert f"textrace: {got.value}\n" == errors[0].stderr
    others = [k for k in infos if k != prog]
    assert all(infos[k].id == k for k in others)   # the rest decode as before

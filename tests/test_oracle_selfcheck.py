"""The corpus and the perf oracles, checked against each other before anything is checked
against them: every recording is made as recorded, and perf's three ways of printing a
file (report -D, script text, script's Python engine) agree on every record."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from corpus import RECIPES
from oracle import (RECORD_NAMES, perf_evlist, perf_header, perf_report_dump,
                    perf_script_raw_samples, perf_script_samples, perf_script_sideband,
                    record_fields)

ALL = list(RECIPES)
SAMPLED = [n for n in ALL if "dummy" not in RECIPES[n][0]]
PERF_CONTEXT_MAX = 2**64 - 4095  # PERF_CONTEXT_* markers sit above this in a callchain
KERNEL = 0xffff800000000000
PARSED = {"MMAP", "MMAP2", "COMM", "FORK", "EXIT", "KSYMBOL", "BPF_EVENT", "TEXT_POKE",
          "SWITCH", "SWITCH_CPU_WIDE", "NAMESPACES", "CGROUP", "LOST"}


@pytest.mark.parametrize("recording", ALL, indirect=True)
def test_entry_is_a_private_file_made_by_its_recorded_command(recording):
    mode = recording.path.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600 and recording.path.stat().st_size > 0
    assert recording.command[:2] == ("perf", "record")
    # perf saved the command line it ran (up to the workload's first newline)
    cmdline = perf_header(recording.path)["cmdline"][0]
    opts, workload = RECIPES[recording.name]
    assert cmdline.startswith("/usr/bin/perf record -q -o ")
    assert " ".join([*opts, "--", workload[0]]) in cmdline
    assert (" -o - " in cmdline) == recording.pipe
    assert recording.path.name in recording.shell


@pytest.mark.parametrize("recording", ALL, indirect=True)
def test_dump_prints_every_record_with_its_own_bytes(recording):
    dump = perf_report_dump(recording.path)
    assert len(dump.records) > 100
    for r in dump.records:
        rtype, _misc, size = struct.unpack_from("<IHH", r["raw"])
        assert (len(r["raw"]), rtype, size) == (r["size"], r["type"], r["size"]), r["offset"]
        assert r["type_name"] == RECORD_NAMES[r["type"]]
    # perf's own summary counts what it printed; it prints no COMPRESSED record
    counts = Counter(r["type_name"] for r in dump.records)
    assert counts == {k: v for k, v in dump.stats.items() if k not in ("TOTAL", "COMPRESSED")}
    assert dump.stats["TOTAL"] == len(dump.records) + dump.stats.get("COMPRESSED", 0)
    assert ("COMPRESSED" in dump.stats) == (recording.name == "compressed")


@pytest.mark.parametrize("recording", [n for n in ALL if n != "compressed"], indirect=True)
def test_dump_offsets_tile_the_data_section(recording):
    """Outside -z files, perf's offsets are the records' own: sorted, they cover the data
    section (or the pipe stream after its 16-byte header) end to end without a gap."""
    dump = perf_report_dump(recording.path)
    spans = sorted((r["offset"], r["size"]) for r in dump.records)
    if recording.pipe:
        start, end = 0, recording.path.stat().st_size - 16
    else:
        header = perf_header(recording.path)
        start = int(header["data offset"][0])
        end = start + int(header["data size"][0])
    assert spans[0][0] == start
    for (off, size), (nxt, _) in zip(spans, spans[1:]):
        assert off + size == nxt, hex(off)
    assert spans[-1][0] + spans[-1][1] == end


@pytest.mark.parametrize("recording", SAMPLED, indirect=True)
def test_script_samples_are_the_dumped_samples(recording):
    dump = perf_report_dump(recording.path)
    dumped = dump.by_type("SAMPLE")
    shown = perf_script_samples(recording.path)
    raw = perf_script_raw_samples(recording.path)
    assert len(shown) == len(raw) == len(dumped) == dump.stats["SAMPLE"] > 5
    assert sum(dump.event_stats[e]["SAMPLE"] for e in dump.event_stats) == len(shown)
    has_cpu = "CPU" in perf_evlist(recording.path)[0]["sample_type"]
    for d, s, r in zip(dumped, shown, raw):
        key = (d["time"], d["pid"], d["tid"], d["ip"], d["period"])
        assert key == (s["time"], s["pid"], s["tid"], s["ip"], s["period"])
        assert key == (r["time"], r["pid"], r["tid"], r["ip"], r["period"])
        assert s["event"] == r["event"]
        assert d["cpu"] == s["cpu"] and (s["cpu"] is not None) == has_cpu
        if has_cpu:
            assert r["cpu"] == s["cpu"]
    events = Counter(s["event"] for s in shown)
    assert set(events) == {e.split(":")[0] for e in dump.event_stats}


@pytest.mark.parametrize("recording", ["callchain"], indirect=True)
def test_frame_pointer_chains_three_ways(recording):
    dumped = perf_report_dump(recording.path).by_type("SAMPLE")
    shown = perf_script_samples(recording.path)
    raw = perf_script_raw_samples(recording.path)
    user_frames = 0
    for d, s, r in zip(dumped, shown, raw):
        chain = d["callchain"]
        assert chain and chain[0] >= PERF_CONTEXT_MAX  # starts with a context marker
        # the resolved chain is the raw one less its markers, with the sample's ip first
        assert r["callchain"] == [ip for ip in chain if ip < PERF_CONTEXT_MAX]
        assert r["callchain"][0] == d["ip"]
        assert len(s["callchain"]) == len(r["callchain"])
        for frame, ip in zip(s["callchain"], r["callchain"]):
            if ip >= KERNEL:
                assert frame["ip"] == ip  # kernel frames print raw
            else:
                user_frames += 1  # user frames print relative to their binary
                assert frame["ip"] <= ip
            assert frame["sym"] and frame["dso"]
    assert user_frames > 0


@pytest.mark.parametrize("recording", ["dwarf"], indirect=True)
def test_dwarf_samples_carry_registers_and_stack(recording):
    dumped = perf_report_dump(recording.path).by_type("SAMPLE")
    with_stack = [d for d in dumped if d["ustack_size"]]
    assert len(with_stack) > len(dumped) // 2
    for d in with_stack:
        assert d["ustack_size"] <= 4096 and d["size"] > 4096
        assert d["user_regs"] and {"IP", "SP", "BP"} <= d["user_regs"].keys()
    # perf unwinds the copied stacks into user frames
    shown = perf_script_samples(recording.path, ("time", "callchain"))
    assert sum(any(f["ip"] < KERNEL for f in s["callchain"]) for s in shown) > len(shown) // 2


@pytest.mark.parametrize("recording", ALL, indirect=True)
def test_sideband_the_same_in_script_and_dump(recording):
    """perf script --show-*-events and perf report -D print the same records, in the same
    order, with the same fields; every record of a kind printed with fields is parsed.
    (perf script shows no LOST_SAMPLES: perf writes them at the end when it lost samples.)"""
    shown = perf_script_sideband(recording.path)
    dumped = [r for r in perf_report_dump(recording.path).records
              if r["type"] < 64 and r["type_name"] not in ("SAMPLE", "LOST_SAMPLES")]
    assert len(shown) == len(dumped) > 10
    common = ("type", "time", "cpu", "sample_pid", "sample_tid", "text")
    for s, d in zip(shown, dumped):
        assert (s["type"], s["time"]) == (d["type_name"], d["time"])
        fields = {k: v for k, v in s.items() if k not in common}
        assert fields == {k: v for k, v in d.items() if k in fields}
        if s["type"] in PARSED:
            assert fields, s
    kinds = Counter(s["type"] for s in shown)
    assert kinds["COMM"] and kinds["MMAP2"] and kinds["MMAP"] == 1  # the kernel's own map
    kernel_map = next(s for s in shown if s["type"] == "MMAP")
    assert kernel_map["filename"].startswith("[kernel.kallsyms]") and kernel_map["pid"] == -1


@pytest.mark.parametrize("recording", ["bpf-probe", "bpf-sideband"], indirect=True)
def test_bpf_probe_loads_and_frees_programs_by_the_hundred(recording):
    records = perf_script_sideband(recording.path)
    ksyms = [r for r in records if r["type"] == "KSYMBOL"]
    events = [r for r in records if r["type"] == "BPF_EVENT"]
    assert len(ksyms) > 100 and len(events) > 100
    for k in ksyms:
        assert k["ksym_type"] == 1 and k["flags"] in (0, 1) and k["len"] > 0
        assert k["name"].startswith("bpf_") and k["addr"] >= KERNEL
    # bpftool loads each program in turn: the kernel registers its symbol, then reports the
    # load, both in bpftool's own context.  (Unloads are deferred to RCU and a workqueue, and
    # other processes' programs race perf's synthesis at start: neither pairs up reliably.)
    probe = next(r["tid"] for r in records if r["type"] == "COMM" and r["exec"]
                 and r["comm"] == "bpftool")
    mine = [r for r in records if r["sample_tid"] == probe and r["type"] in
            ("KSYMBOL", "BPF_EVENT")]
    loads = [i for i, r in enumerate(mine) if r["type"] == "BPF_EVENT" and r["event_type"] == 1]
    assert len(loads) > 100
    for i in loads:
        assert mine[i - 1]["type"] == "KSYMBOL" and mine[i - 1]["flags"] == 0
        assert mine[i - 1]["time"] < mine[i]["time"]
    assert {e["event_type"] for e in events} == {1, 2}  # PROG_LOAD, PROG_UNLOAD
    header = perf_header(recording.path)
    assert any(k.startswith("bpf_prog_info ") for k in header)


@pytest.mark.parametrize("recording", ["sideband-switch"], indirect=True)
def test_switch_namespace_and_cgroup_records(recording):
    records = perf_script_sideband(recording.path)
    kinds = Counter(r["type"] for r in records)
    assert kinds["SWITCH_CPU_WIDE"] > 10 and kinds["NAMESPACES"] > 10 and kinds["CGROUP"] >= 1
    for r in records:
        if r["type"] == "SWITCH_CPU_WIDE":
            assert isinstance(r["out"], bool) and r["next_prev_pid"] >= 0
        elif r["type"] == "NAMESPACES":
            assert r["nr_namespaces"] == len(r["namespaces"]) == 7
            assert r["namespace_names"] == ["net", "uts", "ipc", "pid", "user", "mnt",
                                            "cgroup"]
        elif r["type"] == "CGROUP":
            assert r["path"].startswith("/") and r["cgroup_id"] > 0
    assert {r["out"] for r in records if r["type"] == "SWITCH_CPU_WIDE"} == {True, False}


@pytest.mark.parametrize("recording", ALL, indirect=True)
def test_header_lines(recording):
    h = perf_header(recording.path)
    assert h["os release"] == [os.uname().release]
    assert h["perf version"][0].startswith("6.1.")
    assert int(h["nrcpus online"][0]) == os.cpu_count()
    assert len(h["event"]) == len(perf_evlist(recording.path))
    assert h["hostname"] and h["CPU 0"] and h["pmu mappings"]
    # pipe mode sends features as records and perf 6.1 sends no CACHE feature that way
    assert ("CPU cache info" in h) != recording.pipe
    assert ("compressed" in h) == (recording.name == "compressed")
    if recording.name == "compressed":
        assert h["compressed"][0].startswith("Zstd, level = ")
    if recording.name == "clockid":
        assert h["clockid"] == ["monotonic (1)"]


def _crafted_text_pokes(src: Path, dst: Path) -> list[tuple[int, bytes, bytes, int]]:
    """Append two TEXT_POKE records to a copy of a pipe-mode recording, with the sample_id
    of the file's last EXIT record and later times.  (This kernel build emits no TEXT_POKE
    for perf 6.1 to record: it has no /proc/kcore for `perf record --kcore`.)"""
    exit_rec = [r for r in perf_report_dump(src).records if r["type_name"] == "EXIT"][-1]
    stype = perf_evlist(src)[0]["sample_type"]
    id_fields = [f for f in ("TID", "TIME", "ID", "STREAM_ID", "CPU", "IDENTIFIER")
                 if f in stype]
    trailer = bytearray(exit_rec["raw"][-8 * len(id_fields):])
    addr = next(int(a, 16) for a, _t, name, *_ in
                (line.split() for line in open("/proc/kallsyms"))
                if name == "perf_event_text_poke") + 0x10
    pokes = [(addr, bytes.fromhex("0f1f440000"), bytes.fromhex("e9aabbccdd"), 1),
             (addr, bytes(range(20)), bytes(range(100, 120)), 2)]
    out = bytearray(src.read_bytes())
    for a, old, new, dt in pokes:
        body = struct.pack("<QHH", a, len(old), len(new)) + old + new
        body += bytes(-(4 + len(old) + len(new)) % 8)  # the kernel pads to 8 bytes
        tid_words = 8 if "TID" in id_fields else 0
        time = struct.unpack_from("<Q", trailer, tid_words)[0] + dt
        struct.pack_into("<Q", trailer, tid_words, time)
        out += struct.pack("<IHH", 20, 1, 8 + len(body) + len(trailer)) + body + trailer
    dst.write_bytes(bytes(out))
    return pokes


def test_text_poke_as_perf_prints_it(corpus, tmp_path):
    dst = tmp_path / "poked.data"
    pokes = _crafted_text_pokes(corpus.path("pipe"), dst)
    shown = [r for r in perf_script_sideband(dst) if r["type"] == "TEXT_POKE"]
    dumped = [r for r in perf_report_dump(dst).records if r["type_name"] == "TEXT_POKE"]
    assert len(shown) == len(dumped) == len(pokes)
    for s, d, (addr, old, new, _) in zip(shown, dumped, pokes):
        for r in (s, d):
            assert (r["addr"], r["old_len"], r["new_len"]) == (addr, len(old), len(new))
            assert (r["old_bytes"], r["new_bytes"]) == (old, new)  # 20 bytes: two lines each
            assert r["symbol"] == "perf_event_text_poke+0x10"
        assert s["time"] == d["time"]


def test_record_fields_for_kinds_the_corpus_lacks():
    """perf 6.1's formats for records no corpus file holds (util/event.c)."""
    assert record_fields("SWITCH", " OUT preempt") == {"out": True, "preempt": True}
    assert record_fields("SWITCH", " IN         ") == {"out": False, "preempt": False}
    assert record_fields("LOST", " lost 12") == {"lost": 12}
    # perf report -D's own words for the lost-record kinds
    assert record_fields("LOST", ": id:8897: lost:8694") == {"id": 8897, "lost": 8694}
    assert record_fields("LOST_SAMPLES", ": id:5: lost samples :2") == {"id": 5, "lost": 2}
    m = record_fields("MMAP2", " 1/2: [0x1000(0x2000) @ 0 <0a0b>]: r-xp /x")
    assert m["build_id"] == b"\x0a\x0b" and m["perm"] == "r-xp" and m["filename"] == "/x"
    assert record_fields("COMM", " exec: a:b:7/8") == {"exec": True, "comm": "a:b", "pid": 7,
                                                     "tid": 8}


def test_a_skip_fails_the_run(tmp_path):
    """The suite's conftest turns a skip into a failure."""
    here = Path(__file__).parent
    for name in ("conftest.py", "corpus.py"):
        shutil.copy(here / name, tmp_path / name)
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\ndef test_skips():\n    pytest.skip('no perf here')\n\n"
        "@pytest.mark.xfail(strict=True)\ndef test_xfails():\n    assert False\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 1 xfailed" in r.stdout, r.stdout
    assert "this suite does not skip; the test asked to: no perf here" in r.stdout

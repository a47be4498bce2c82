"""perf 6.1 (this machine's), 6.12 (Debian 13) and 7.2 (Debian unstable) as oracles, each
from a minimal root of its own release (testbed/perfroot.py): textrace reads what every one
writes (-a, -g, --call-graph dwarf, -z, pipe mode, with BPF programs loaded), compared with
that perf's own `report -D` and `--header-only`, and every one reads what textrace writes.

What the versions write differently is named by the tests: 7.2 writes COMPRESSED2 records
for -z (6.1 and 6.12: COMPRESSED), BPF_METADATA records (a program's bpf_metadata_*
strings) and the E_MACHINE and CLN_SIZE header features.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import oracle
from bpfobj import build
from textrace.perf.abi import Feature, RecordType
from textrace.perf.features import parse_feature
from textrace.perf.reader import PerfData
from textrace.perf.writer import pack_record
from testbed import perfroot

VERSIONS = ["6.1", "6.12", "7.2"]
TESTS = os.path.dirname(os.path.abspath(__file__))

# perf record options of each recording, and the workload: the host's binaries by full
# path (perf puts its own directory, the root's /usr/bin, first in the workload's PATH)
SLEEP, DD = shutil.which("sleep"), shutil.which("dd")
RECORDINGS = {
    "system-wide": (["-a"], [SLEEP, "0.3"]),
    "callchain": (["-a", "-g"], [SLEEP, "0.3"]),
    "dwarf": (["--call-graph", "dwarf", "-F", "499"],
              [DD, "if=/dev/zero", "of=/dev/null", "bs=4k", "count=100000"]),
    "compressed": (["-a", "-z"], [SLEEP, "0.3"]),
    "pipe": (["-a"], [SLEEP, "0.3"]),
}

# A loader that keeps a program with bpf_metadata_* variables loaded while perf records
HOLD = r"""
import sys, time
sys.path.insert(0, {tests!r})
from bpfobj import LoadedObject
obj = LoadedObject({obj!r})
print(obj.prog_fd("tr_metadata"), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def metadata_program(tmp_path_factory):
    """tr_metadata (tests/bpf/metadata.bpf.c) held loaded by another process."""
    out = tmp_path_factory.mktemp("metadata")
    obj = build("metadata", str(out))
    p = subprocess.Popen([sys.executable, "-c", HOLD.format(tests=TESTS, obj=obj)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip().isdigit()
    yield
    p.stdin.close()
    p.wait(timeout=30)


class Perf:
    """One perf version: its argv and environment."""

    def __init__(self, version: str):
        self.version = version
        self.argv = perfroot.perf_command(version)
        self.env = dict(perfroot.perf_env(version), PAGER="cat", LC_ALL="C")

    def run(self, *args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
        return subprocess.run([*self.argv, *args], stdout=stdout, stderr=subprocess.PIPE,
                              env=self.env, timeout=300, stdin=subprocess.DEVNULL)

    def oracle(self):
        return oracle.using(self.argv, self.env)


@pytest.fixture(scope="module", params=VERSIONS)
def perf(request) -> Perf:
    return Perf(request.param)


@pytest.fixture(scope="module")
def recordings(perf, metadata_program, tmp_path_factory) -> dict[str, Path]:
    """Each recording of RECORDINGS, made by this perf while tr_metadata is loaded."""
    out = tmp_path_factory.mktemp(f"perf-{perf.version}")
    paths = {}
    for name, (opts, workload) in RECORDINGS.items():
        path = out / f"{name}.data"
        if name == "pipe":
            with open(path, "wb") as f:
                r = perf.run("record", "-q", *opts, "-o", "-", "--", *workload, stdout=f)
        else:
            r = perf.run("record", "-q", *opts, "-o", str(path), "--", *workload)
        assert r.returncode == 0, (name, r.stderr.decode(errors="replace")[-2000:])
        paths[name] = path
    return paths


@pytest.mark.parametrize("name", [n for n in RECORDINGS if n != "compressed"])
def test_every_record_at_that_perfs_offset_size_and_type(perf, recordings, name):
    path = recordings[name]
    data = PerfData.open(path)
    base = 16 if data.mode == "pipe" else 0  # perf counts pipe offsets after the header
    ours = [(r.offset - base, len(pack_record(r, data.attrs)), r.type)
            for r in data.records()]
    with perf.oracle():
        theirs = sorted(oracle.dump_index(path))  # perf prints in delivery order
    assert len(ours) == len(theirs) > 0
    for (o_off, o_size, o_type), (t_off, t_size, t_type) in zip(ours, theirs):
        assert (o_off, o_size, o_type) == (t_off, t_size, t_type)


def test_compressed_records_inflate_to_what_that_perf_prints(perf, recordings):
    """-z: 6.1 and 6.12 write COMPRESSED (81) records; 7.2 COMPRESSED2 (83), whose
    data_size leaves out the padding."""
    path = recordings["compressed"]
    data = PerfData.open(path)
    packed = {r.type for r in data._walk(decompress=False)}
    want = RecordType.COMPRESSED2 if perf.version == "7.2" else RecordType.COMPRESSED
    assert want in packed and ({RecordType.COMPRESSED, RecordType.COMPRESSED2} - {want}
                               ).isdisjoint(packed)
    ours = sorted(r.type for r in data.records())
    with perf.oracle():
        theirs = sorted(t for _, _, t in oracle.dump_index(path))
    assert ours == theirs and ours.count(RecordType.SAMPLE) > 10


@pytest.mark.parametrize("name", ["callchain", "dwarf"])
def test_sample_fields_match_that_perf(perf, recordings, name):
    path = recordings[name]
    with perf.oracle():
        theirs = oracle.dump_samples(path)
    ours = {r.offset: r for r in PerfData.open(path).records() if r.type == RecordType.SAMPLE}
    assert ours.keys() == theirs.keys() and ours
    for off, t in theirs.items():
        o = ours[off]
        assert (o.time, o.pid, o.tid, o.ip, o.period) == \
               (t["time"], t["pid"], t["tid"], t["ip"], t["period"]), hex(off)
        assert list(o.callchain or ()) == t["callchain"], hex(off)


@pytest.mark.parametrize("name", ["system-wide", "pipe"])
def test_every_feature_decodes_and_packs_back_to_that_perfs_bytes(perf, recordings, name):
    data = PerfData.open(recordings[name])
    assert data.features
    for feat in data.features:
        raw = bytes(data.feature_bytes(feat))
        assert parse_feature(feat, raw).pack() == raw, feat
    if perf.version == "7.2":  # features past 6.1's: the ELF machine, the cache line
        assert data.feature(Feature.E_MACHINE).e_machine == 62  # EM_X86_64
        assert data.feature(Feature.CLN_SIZE).cacheline_size == 64


def test_bpf_programs_are_those_perf_lists(perf, recordings):
    data = PerfData.open(recordings["system-wide"])
    ours = {e.info_len and int.from_bytes(bytes(e.info[4:8]), "little")
            for e in data.feature(Feature.BPF_PROG_INFO).programs}
    with perf.oracle():
        header = oracle.perf_header(recordings["system-wide"])
    theirs = {int(k.split()[1]) for k in header if k.startswith("bpf_prog_info ")}
    assert ours == theirs and theirs


def test_bpf_metadata_is_shown_with_its_program(perf, recordings):
    """perf 7.2 writes tr_metadata's bpf_metadata_* variables as a BPF_METADATA record;
    `progs` shows them with the program, `events` with its ksym name.  perf 6.1 and
    6.12 write none (the record came in perf 6.16)."""
    path = recordings["system-wide"]
    recs = [r for r in PerfData.open(path).records() if r.type == RecordType.BPF_METADATA]
    if perf.version != "7.2":
        assert recs == []
        return
    mine = [r for r in recs if r.prog_name.endswith("_tr_metadata")]
    assert len(mine) == 1 and mine[0].metadata == {"owner": '"textrace"', "answer": "42"}
    with perf.oracle():
        dumped = [d for d in oracle.perf_report_dump(path).records if d["type"] == 84]
    assert sorted(d["offset"] for d in dumped) == sorted(r.offset for r in recs)
    rows = _textrace_json("progs", path)
    prog = next(r for r in rows if r["name"] == "tr_metadata")
    assert prog["metadata"] == {"owner": '"textrace"', "answer": "42"}
    events = [e for e in _textrace_json("events", path) if e["type"] == "BPF_METADATA"]
    assert any(e["prog_name"] == mine[0].prog_name and e["entries"] == prog["metadata"]
               for e in events)
    text = subprocess.run([sys.executable, "-m", "textrace", "progs", "-i", str(path)],
                          capture_output=True, text=True, timeout=120).stdout
    assert f'{prog["id"]} metadata: owner="textrace" answer=42' in text


def _textrace_json(verb: str, path: Path) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "textrace", verb, "-i", str(path), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.fixture(scope="module")
def textrace_recording(tmp_path_factory) -> Path:
    """`textrace record -a` of a few program loads (every version reads the same file)."""
    out = tmp_path_factory.mktemp("textrace-out") / "record.data"
    load = ("import os, sys; sys.path.insert(0, %r); from bpfprogs import load_trivial; "
            "[os.close(load_trivial('tr_v%%d' %% k)) for k in range(5)]" % TESTS)
    r = subprocess.run([sys.executable, "-m", "textrace", "record", "-a", "-o", str(out),
                        "--", sys.executable, "-c", load], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def test_that_perf_reads_what_textrace_records(perf, textrace_recording):
    data = PerfData.open(textrace_recording)
    ours = sorted((r.offset, len(pack_record(r, data.attrs)), r.type) for r in data.records())
    with perf.oracle():
        theirs = sorted(oracle.dump_index(textrace_recording))
        header = oracle.perf_header(textrace_recording)
    assert ours == theirs
    progs = {k for k in header if k.startswith("bpf_prog_info ")}
    assert len(progs) >= 5  # the programs textrace captured, listed by that perf
    r = perf.run("script", "--show-bpf-events", "-i", str(textrace_recording))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().count("PERF_RECORD_BPF_EVENT") >= 5


@pytest.mark.parametrize("feat", [Feature.BPF_PROG_INFO, Feature.BPF_BTF])
def test_a_program_section_without_its_count_is_empty_and_stays_so(feat):
    """Some perf versions write BPF_PROG_INFO and BPF_BTF with nothing in them, not even
    the count, when they saw no programs (no machine here is without programs, so the
    section is made by hand); 6.1 writes a zero count, which stays as it was."""
    empty = parse_feature(feat, b"")
    assert empty.count == 0 and empty.count_omitted and empty.pack() == b""
    zero = parse_feature(feat, b"\0\0\0\0")
    assert zero.count == 0 and not zero.count_omitted and zero.pack() == b"\0\0\0\0"

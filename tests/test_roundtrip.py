"""Writing: read -> write of perf's own files, and files built from records, read by perf."""

from __future__ import annotations

import subprocess

import pytest

from textrace.perf.abi import KsymbolType, RecordType, SampleType
from textrace.perf.reader import PerfData
from textrace.perf.records import KsymbolRecord, TextPokeRecord
from textrace.perf.sampleid import SampleId
from textrace.perf.writer import PerfDataWriter


def rewrite(src: PerfData, dst, *, decompress: bool = True) -> None:
    """Decode every record and pack it again; features copied as they are."""
    with PerfDataWriter(dst, src.attrs, pipe=src.mode == "pipe") as w:
        w.feature_table_slots = src.feature_table_slots
        for rec in src.records():
            if rec.type == RecordType.HEADER_ATTR:
                continue  # the pipe writer announces attrs itself
            w.write(rec)
        for fid in src.features if src.mode == "file" else ():
            w.add_feature(fid, src.feature_bytes(fid))


@pytest.mark.parametrize("name", ["cpu-clock", "sideband", "system-wide", "callchain",
                                  "dwarf", "clockid", "pipe", "bpf-probe"])
def test_rewrite_is_byte_identical(corpus, tmp_path, name):
    src_path = corpus.path(name)
    out = tmp_path / "out.data"
    rewrite(PerfData.open(src_path), out)
    assert out.read_bytes() == src_path.read_bytes()
    assert (out.stat().st_mode & 0o777) == 0o600


def perf_script(path, *extra) -> str:
    r = subprocess.run(["perf", "script", "-i", str(path), "--ns", *extra],
                       capture_output=True, text=True, check=True)
    return r.stdout


def test_compressed_file_rewritten_uncompressed_reads_the_same_in_perf(corpus, tmp_path):
    """zstd output cannot be reproduced byte for byte; the records inside can."""
    src = corpus.path("compressed")
    out = tmp_path / "plain.data"
    data = PerfData.open(src)
    with PerfDataWriter(out, data.attrs) as w:
        for rec in data.records():
            w.write(rec)
        for fid in data.features:
            if fid != 27:  # HEADER_COMPRESSED: the copy is not compressed
                w.add_feature(fid, data.feature_bytes(fid))
    fields = ["-F", "comm,tid,pid,time,cpu,ip,event,period"]
    assert perf_script(out, *fields) == perf_script(src, *fields)
    assert perf_script(out, *fields).count("\n") > 10


def test_crafted_ksymbol_and_text_poke_read_by_perf(corpus, tmp_path):
    """Records built from fields, in a file of our own making, as perf prints them."""
    base = PerfData.open(corpus.path("sideband"))
    attr = base.attrs[0].attr
    assert attr.sample_id_all and attr.sample_type & SampleType.TIME
    out = tmp_path / "crafted.data"
    t0 = 1_000_000_000
    recs = [
        KsymbolRecord(addr=0xffffffffc0001000, len=0x80, ksym_type=KsymbolType.BPF, flags=0,
                      name="bpf_prog_0123456789abcdef_crafted",
                      sample_id=SampleId(pid=0, tid=0, time=t0, cpu=0)),
        TextPokeRecord(addr=0xffffffffc0001010, old_bytes=bytes.fromhex("0f1f440000"),
                       new_bytes=bytes.fromhex("e9aabbccdd"),
                       sample_id=SampleId(pid=0, tid=0, time=t0 + 1000, cpu=0)),
    ]
    with PerfDataWriter(out, base.attrs[:1]) as w:
        for r in recs:
            w.write(r)
    # perf 6.1 prints KSYMBOL under --show-bpf-events (it has no --show-ksymbol-events)
    text = perf_script(out, "--show-text-poke-events", "--show-bpf-events")
    lines = text.splitlines()
    assert len(lines) == 4, text
    assert lines[0].endswith("1.000000000: PERF_RECORD_KSYMBOL addr ffffffffc0001000 len 128 "
                             "type 1 flags 0x0 name bpf_prog_0123456789abcdef_crafted")
    # perf resolves the poked address against the crafted symbol: both records arrived whole
    assert lines[1].endswith("1.000001000: PERF_RECORD_TEXT_POKE ffffffffc0001010 "
                             "bpf_prog_0123456789abcdef_crafted+0x10 old len 5 new len 5")
    assert lines[2].split() == ["Old", "bytes:", "0f", "1f", "44", "00", "00"]
    assert lines[3].split() == ["New", "bytes:", "e9", "aa", "bb", "cc", "dd"]
    # and textrace reads back exactly what it wrote
    back = [r for r in PerfData.open(out).records()]
    assert back == recs

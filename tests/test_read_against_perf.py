"""Reading perf.data: textrace's records against perf's own reading of the same files."""

from __future__ import annotations

import pytest

from oracle import dump_index, dump_samples, dump_sideband, script_bpf_records, \
    script_timeline
from textrace.perf.abi import RecordType
from textrace.perf.bulk import sample_arrays
from textrace.perf.reader import PerfData
from textrace.perf.writer import pack_record

ALL = ["cpu-clock", "sideband", "system-wide", "callchain", "dwarf", "clockid", "pipe",
       "bpf-probe", "multi-event"]


@pytest.mark.parametrize("name", ALL)
def test_every_record_at_perfs_offset_size_and_type(corpus, name):
    path = corpus.path(name)
    data = PerfData.open(path)
    base = 16 if data.mode == "pipe" else 0  # perf counts pipe offsets after the header
    ours = [(r.offset - base, len(pack_record(r, data.attrs)) if r.type not in
             (RecordType.AUXTRACE, RecordType.HEADER_TRACING_DATA) else None, r.type)
            for r in data.records()]
    theirs = sorted(dump_index(path))  # perf prints in delivery order
    assert len(ours) == len(theirs) > 0
    for (o_off, o_size, o_type), (t_off, t_size, t_type) in zip(ours, theirs):
        assert (o_off, o_type) == (t_off, t_type)
        assert o_size in (None, t_size)


def test_compressed_file_holds_the_records_perf_inflates(corpus):
    path = corpus.path("compressed")
    data = PerfData.open(path)
    ours = sorted(r.type for r in data.records())
    theirs = sorted(t for _, _, t in dump_index(path))
    assert ours == theirs and ours.count(RecordType.SAMPLE) > 10


@pytest.mark.parametrize("name", ["cpu-clock", "system-wide", "callchain", "dwarf",
                                  "clockid", "multi-event", "bpf-probe"])
def test_sample_fields_match_perf(corpus, name):
    path = corpus.path(name)
    data = PerfData.open(path)
    theirs = dump_samples(path)
    ours = {r.offset: r for r in data.records() if r.type == RecordType.SAMPLE}
    assert ours.keys() == theirs.keys() and ours
    for off, t in theirs.items():
        o = ours[off]
        assert (o.time, o.pid, o.tid, o.ip, o.period, o.misc) == \
               (t["time"], t["pid"], t["tid"], t["ip"], t["period"], t["misc"]), hex(off)
        if t["cpu"] is not None:
            assert o.cpu == t["cpu"]
        if o.callchain is not None:
            assert list(o.callchain) == t["callchain"], hex(off)
    # the bulk reader agrees with the per-record one, sample by sample
    arrays = sample_arrays(data)
    offsets = sorted(ours)
    assert len(arrays) == len(offsets)
    for i, off in enumerate(offsets):
        o = ours[off]
        assert (int(arrays.time[i]), int(arrays.ip[i]), int(arrays.pid[i]),
                int(arrays.tid[i]), int(arrays.period[i])) == (o.time, o.ip, o.pid, o.tid,
                                                                o.period)
        assert [int(x) for x in arrays.chain(i)] == list(o.callchain or ())


@pytest.mark.parametrize("name", ["callchain", "system-wide", "bpf-probe"])
def test_task_and_mmap_records_match_perf(corpus, name):
    path = corpus.path(name)
    data = PerfData.open(path)
    recs = {r.offset: r for r in data.records()}
    theirs = dump_sideband(path)
    assert len(theirs) > 5
    for off, (kind, f) in theirs.items():
        r = recs[off]
        assert r.type_name == kind
        if kind == "MMAP2":
            pid, tid, addr, ln, pgoff, maj, mnr, ino, gen, prot, name = f
            assert (r.pid, r.tid, r.addr, r.len, r.pgoff, r.maj, r.min, r.ino,
                    r.ino_generation) == (int(pid), int(tid), int(addr, 16), int(ln, 16),
                                          int(pgoff, 16), int(maj, 16), int(mnr, 16),
                                          int(ino), int(gen))
            assert r.filename == name
        elif kind == "COMM":
            comm, pid, tid = f
            assert (r.comm, r.pid, r.tid) == (comm, int(pid), int(tid))
        else:
            pid, tid, ppid, ptid = map(int, f)
            assert (r.pid, r.tid, r.ppid, r.ptid) == (pid, tid, ppid, ptid)


def test_bpf_records_match_perf(corpus):
    path = corpus.path("bpf-probe")
    data = PerfData.open(path)
    ours = [r for r in data.records_by_time()
            if r.type in (RecordType.KSYMBOL, RecordType.BPF_EVENT)]
    theirs = script_bpf_records(path)
    assert len(ours) == len(theirs) > 100  # bpftool loads hundreds of probe programs
    for o, t in zip(ours, theirs):
        assert o.type_name == t["type"] and o.time == t["time"] and o.tid == t["tid"]
        if t["type"] == "KSYMBOL":
            assert (o.addr, o.len, o.ksym_type, o.flags, o.name) == \
                   (t["addr"], t["len"], t["ksym_type"], t["flags"], t["name"])
        else:
            assert (o.event_type, o.flags, o.prog_id) == \
                   (t["event_type"], t["flags"], t["prog_id"])


@pytest.mark.parametrize("name", ["callchain", "system-wide", "bpf-probe", "compressed",
                                  "pipe"])
def test_time_order_is_perfs_delivery_order(corpus, name):
    """records_by_time() gives what perf script shows, in the order perf shows it."""
    path = corpus.path(name)
    # what perf 6.1's `perf script --show-*-events` prints (never LOST_SAMPLES)
    shown = {"SAMPLE", "MMAP", "MMAP2", "COMM", "FORK", "EXIT", "KSYMBOL", "BPF_EVENT",
             "TEXT_POKE", "LOST", "SWITCH", "SWITCH_CPU_WIDE", "NAMESPACES", "CGROUP"}
    ours = [(r.time, r.type_name) for r in PerfData.open(path).records_by_time()
            if r.type_name in shown]
    theirs = [(row["time"], row["record"]) for row in script_timeline(path)]
    assert len(theirs) > 10
    assert ours == theirs

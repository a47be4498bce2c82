"""Header features: every section of perf's files round-trips byte for byte, and the
decoded values are what `perf report --header-only -I` prints."""

from __future__ import annotations

import re

import pytest

from oracle import run_perf
from textrace.errors import FormatError
from textrace.perf.abi import Feature
from textrace.perf.features import parse_feature
from textrace.perf.reader import PerfData

ALL = ["cpu-clock", "sideband", "system-wide", "callchain", "dwarf", "compressed", "clockid",
       "pipe", "bpf-probe", "multi-event"]


def header(path) -> list[str]:
    return [line[2:] for line in run_perf("report", "--header-only", "-I", "-i",
                                          str(path)).splitlines() if line.startswith("# ")]


def value(lines: list[str], key: str) -> str:
    return next(l.split(":", 1)[1].strip() for l in lines if l.startswith(key))


@pytest.mark.parametrize("name", ALL)
def test_every_feature_packs_back_to_perfs_bytes(corpus, name):
    data = PerfData.open(corpus.path(name))
    assert data.features
    for fid in data.features:
        raw = bytes(data.feature_bytes(fid))
        assert data.feature(fid).pack() == raw, Feature(fid).name


@pytest.mark.parametrize("name", ["bpf-probe", "compressed", "clockid", "multi-event"])
def test_decoded_values_match_perf_header(corpus, name):
    path = corpus.path(name)
    data = PerfData.open(path)
    lines = header(path)
    f = data.feature
    assert f(Feature.HOSTNAME).value == value(lines, "hostname")
    assert f(Feature.OSRELEASE).value == value(lines, "os release")
    assert f(Feature.VERSION).value == value(lines, "perf version")
    assert f(Feature.ARCH).value == value(lines, "arch")
    assert f(Feature.NRCPUS).nr_cpus_online == int(value(lines, "nrcpus online"))
    assert f(Feature.NRCPUS).nr_cpus_available == int(value(lines, "nrcpus avail"))
    assert f(Feature.CPUDESC).value == value(lines, "cpudesc")
    assert f(Feature.CPUID).value == value(lines, "cpuid")
    assert f"{f(Feature.TOTAL_MEM).kib} kB" == value(lines, "total memory")
    # perf prints each argument and a space; an argument with a newline ends the line
    assert " ".join(f(Feature.CMDLINE).argv).splitlines()[0].strip() == \
        value(lines, "cmdline")
    events = [l for l in lines if l.startswith("event : ")]
    desc = f(Feature.EVENT_DESC).events
    assert len(events) == len(desc)
    for line, (attr, ev_name, ids) in zip(events, desc):
        assert f"name = {ev_name}," in line
        assert "id = { " + ", ".join(map(str, ids)) + " }" in line
        assert f"size = {attr.size}," in line
    topo = f(Feature.CPU_TOPOLOGY)
    assert list(topo.core_siblings) == [value([l], "sibling sockets") for l in lines
                                        if l.startswith("sibling sockets")]
    assert list(topo.thread_siblings) == [value([l], "sibling threads") for l in lines
                                          if l.startswith("sibling threads")]
    for cpu, (core, socket) in enumerate(topo.core_socket_ids):
        line = next(l for l in lines if l.startswith(f"CPU {cpu}:"))
        assert f"Core ID {core}," in line and line.endswith(f"Socket ID {socket}")
        if topo.die_ids:
            assert f"Die ID {topo.die_ids[cpu]}," in line
    for node in f(Feature.NUMA_TOPOLOGY).nodes:
        assert value(lines, f"node{node.node} meminfo") == \
            f"total = {node.mem_total_kib} kB, free = {node.mem_free_kib} kB"
        assert value(lines, f"node{node.node} cpu list") == node.cpus
    pmus = ", ".join(f"{n} = {t}" for t, n in f(Feature.PMU_MAPPINGS).pmus)
    assert value(lines, "pmu mappings") == pmus
    caches = f(Feature.CACHE).caches
    cache_lines = lines[lines.index("CPU cache info:") + 1:][:len(caches)]
    for c, line in zip(caches, cache_lines):
        assert line.split() == [f"L{c.level}", *c.type.split(), c.size, f"[{c.map}]"]
    mem = f(Feature.MEM_TOPOLOGY)
    assert f"memory nodes (nr {len(mem.nodes)}, block size {mem.block_size:#x}):" in lines


def test_compression_and_clock_features(corpus):
    z = PerfData.open(corpus.path("compressed"))
    comp = z.feature(Feature.COMPRESSED)
    assert value(header(corpus.path("compressed")), "compressed") == \
        f"Zstd, level = {comp.level}, ratio = {comp.ratio}"
    assert comp.type == 1 and comp.mmap_len > 0


def test_bpf_prog_info_lists_what_perf_lists(corpus):
    path = corpus.path("bpf-probe")
    data = PerfData.open(path)
    progs = data.feature(Feature.BPF_PROG_INFO).programs
    listed = [l for l in header(path) if l.startswith("bpf_prog_info ")]
    assert len(progs) == len(listed)
    for p, line in zip(progs, listed):
        prog_id = int.from_bytes(p.info[4:8], "little")  # bpf_prog_info.id
        # "bpf_prog_info N: bpf_prog_<tag> addr ..." or "bpf_prog_info N:" alone for a
        # program with subprograms
        assert line.split()[:2] == ["bpf_prog_info", f"{prog_id}:"]
    btf = data.feature(Feature.BPF_BTF)
    assert btf.pack() == bytes(data.feature_bytes(Feature.BPF_BTF))


def test_damaged_section_names_offset_and_field(corpus):
    data = PerfData.open(corpus.path("bpf-probe"))
    raw = bytearray(data.feature_bytes(Feature.CMDLINE))
    raw[0:4] = (10_000).to_bytes(4, "little")
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.CMDLINE, bytes(raw), file="f", offset=1000)
    assert e.value.offset == 1000 and e.value.field == "CMDLINE.nr"
    cut = bytes(data.feature_bytes(Feature.EVENT_DESC))[:40]
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.EVENT_DESC, cut, file="f", offset=500)
    assert e.value.field.startswith("EVENT_DESC.") and e.value.offset >= 500

"""Header features, against perf: every section of files perf just wrote parses and packs
back to the same bytes, and what is decoded is what `perf report --header-only -I` (and
`perf buildid-list`) print from the same file.  Damaged sections fail with a FormatError
naming the file, the absolute offset and the field."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from bpfprogs import load_trivial
from oracle import run_perf
from textrace.errors import FormatError
from textrace.perf.abi import Feature
from textrace.perf.features import (FEATURE_CLASSES, BpfBtf, BpfProgInfo, BpfProgInfoEntry,
                                    BranchStack, BtfEntry, BuildIdEntry, CpuPmuCaps,
                                    CpuTopology, HybridNode, HybridTopology, PerfStr, PmuCap,
                                    PmuCaps, PmuCapsEntry, RawFeature, feature_name,
                                    feature_to_json, pack_feature, parse_feature)
from textrace.perf.header import feature_sections, parse_file_header
from textrace.perf.reader import PerfData

# --- the recordings ----------------------------------------------------------------------

# made by tests/corpus.py (shared with other tests of the session)
FROM_CORPUS = ("cpu-clock", "system-wide", "compressed", "clockid", "pipe", "bpf-probe",
               "multi-event")

# made here: name -> (perf record options, workload)
OWN = {
    # GROUP_DESC
    "group": (["-a", "-e", "{cpu-clock,task-clock}"], ["sleep", "0.1"]),
    # a perf.data directory (DIR_FORMAT) whose header lives in DIR/data
    "threads-dir": (["--threads", "-e", "cpu-clock"], ["sleep", "0.1"]),
    # TRACING_DATA, kept raw
    "tracepoint": (["-a", "-e", "sched:sched_switch"], ["sleep", "0.1"]),
    # a pinned two-function program with BTF exists: perf writes its BTF in BPF_BTF
    "bpf-btf": (["-a", "-e", "cpu-clock", "-F", "99"], ["sleep", "0.2"]),
    # programs loaded and freed by the thousand while perf records (see load_storm)
    "bpf-storm": (["-a", "-e", "cpu-clock", "-F", "99"], ["sleep", "0.3"]),
}
ALL = FROM_CORPUS + tuple(OWN)


class load_storm:
    """Load and free trivial programs in a thread for as long as the block runs.  perf 6.1
    then writes more BPF_PROG_INFO entries than the count it announces."""

    def __enter__(self):
        self.stop = threading.Event()
        self.loaded = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        while self.loaded < 20:   # loading for real before perf starts
            time.sleep(0.01)
        return self

    def _run(self):
        while not self.stop.is_set():
            fds = [load_trivial(name="tr_feat_storm") for _ in range(10)]
            for fd in fds:
                os.close(fd)
            self.loaded += len(fds)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

BTF_PROGRAM = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int tr_feat_sub(int x)
{
	return x & 1;
}

SEC("socket")
int tr_feat_main(struct __sk_buff *skb)
{
	return tr_feat_sub(skb->len);
}

char LICENSE[] SEC("license") = "GPL";
"""


@dataclass(frozen=True)
class Source:
    name: str
    path: Path      # what perf -i takes
    header: Path    # the file holding the perf.data header (DIR/data for a directory)
    pipe: bool


@pytest.fixture(scope="module")
def btf_program(tmp_path_factory):
    """The id of a clang-built socket filter with BTF and a subprogram, pinned in bpffs
    for the module (perf's synthesis at start-up finds it and fetches its BTF)."""
    d = tmp_path_factory.mktemp("btfprog")
    (d / "p.bpf.c").write_text(BTF_PROGRAM)
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(d / "p.bpf.c"), "-o", str(d / "p.o")], check=True,
                   capture_output=True)
    pin = Path(f"/sys/fs/bpf/textrace_test_features_{os.getpid()}")
    subprocess.run(["bpftool", "prog", "load", str(d / "p.o"), str(pin)], check=True,
                   capture_output=True)
    try:
        show = subprocess.run(["bpftool", "prog", "show", "pinned", str(pin), "--json"],
                              check=True, capture_output=True, text=True)
        yield json.loads(show.stdout)["id"]
    finally:
        pin.unlink()


@pytest.fixture(scope="module")
def sources(corpus, tmp_path_factory, btf_program):
    """name -> Source, each recording made the first time a test asks for it."""
    root = tmp_path_factory.mktemp("features")
    made: dict[str, Source] = {}

    def get(name: str) -> Source:
        if name not in made:
            if name in FROM_CORPUS:
                p = corpus.path(name)
                made[name] = Source(name, p, p, pipe=name == "pipe")
            else:
                opts, workload = OWN[name]
                out = root / (name if name == "threads-dir" else f"{name}.data")
                with load_storm() if name == "bpf-storm" else contextlib.nullcontext():
                    run_perf("record", "-q", "-o", str(out), *opts, "--", *workload)
                header = out / "data" if out.is_dir() else out
                made[name] = Source(name, out, header, pipe=False)
        return made[name]
    return get


def sections(src: Source) -> dict[int, tuple[int, bytes]]:
    """feature id -> (absolute offset, the section's bytes) as perf wrote them."""
    if src.pipe:  # features travel as HEADER_FEATURE records
        data = PerfData.open(src.path)
        return {f: (0, bytes(data.feature_bytes(f))) for f in data.features}
    buf = src.header.read_bytes()
    return {f: (s.offset, buf[s.offset:s.end])
            for f, s in feature_sections(buf, parse_file_header(buf)).items()}


def decoded(src: Source) -> dict[int, object]:
    """Every section decoded, CPU_TOPOLOGY with NRCPUS's count as perf reads it."""
    secs = sections(src)
    nrcpus = secs.get(Feature.NRCPUS)
    nr_cpus = struct.unpack_from("<I", nrcpus[1])[0] if nrcpus else None
    return {f: parse_feature(f, raw, file=str(src.header), offset=off, nr_cpus=nr_cpus)
            for f, (off, raw) in secs.items()}


# --- what perf prints --------------------------------------------------------------------

@cache
def perf_header_text(path: Path) -> str:
    return run_perf("report", "--header-only", "-I", "-i", str(path))


def header_lines(src: Source) -> list[str]:
    return [l[2:] for l in perf_header_text(src.path).splitlines() if l.startswith("# ")]


def values(lines: list[str], key: str) -> list[str]:
    """What follows "key :" (or "key:") on every line that starts with key."""
    pat = re.compile(re.escape(key) + r" *: ?")
    return [pat.sub("", l, count=1) for l in lines if pat.match(l)]


def value(lines: list[str], key: str) -> str:
    found = values(lines, key)
    assert len(found) == 1, f"perf printed {len(found)} '{key}' lines"
    return found[0]


def need(feats: dict, fid: int):
    assert fid in feats, f"perf wrote no {Feature(fid).name} section"
    return feats[fid]


# --- every section: decode, pack, same bytes ---------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_every_section_packs_back_to_perfs_bytes(sources, name):
    src = sources(name)
    secs = sections(src)
    assert len(secs) >= 15
    for fid, (off, raw) in secs.items():
        obj = parse_feature(fid, raw, file=str(src.header), offset=off)
        assert type(obj) is FEATURE_CLASSES.get(fid, RawFeature), feature_name(fid)
        assert pack_feature(obj) == raw, feature_name(fid)
        as_json = json.loads(json.dumps(feature_to_json(obj)))
        assert as_json["feature"] == feature_name(fid)


@pytest.mark.parametrize("name", ALL)
def test_memoryview_input_decodes_like_bytes(sources, name):
    src = sources(name)
    buf = memoryview(src.header.read_bytes())
    for fid, (off, raw) in sections(src).items():
        view = buf[off:off + len(raw)] if not src.pipe else memoryview(raw)
        assert parse_feature(fid, view) == parse_feature(fid, raw), feature_name(fid)


# counts and lengths perf derives from the data, left out when rebuilding (BPF_PROG_INFO's
# and BPF_BTF's `count` stay: perf may announce fewer entries than it writes)
DERIVED = {"nr", "nr_ids", "nr_events", "nr_sibling_sockets", "nr_sibling_threads",
           "nr_sibling_dies", "pmu_num", "nr_groups", "cnt", "info_len", "data_len",
           "data_size", "nr_caps", "nr_pmu"}


def rebuild(v):
    """The same value built the way a writer would: plain str, counts left out."""
    if isinstance(v, PerfStr):
        return str(v)
    if isinstance(v, tuple):
        return tuple(rebuild(x) for x in v)
    if dataclasses.is_dataclass(v) and not isinstance(v, RawFeature) and \
            type(v).__module__.endswith("features"):
        skip = DERIVED | ({"size"} if isinstance(v, BuildIdEntry) else set())
        return type(v)(**{f.name: rebuild(getattr(v, f.name))
                          for f in dataclasses.fields(v) if f.name not in skip})
    return v


@pytest.mark.parametrize("name", ["system-wide", "bpf-btf", "bpf-storm", "group",
                                  "threads-dir", "pipe"])
def test_built_from_plain_values_packs_like_perf(sources, name):
    """Padding to 64 and every count, derived by us, are what perf wrote."""
    secs = sections(sources(name))
    for fid, obj in decoded(sources(name)).items():
        assert rebuild(obj).pack() == secs[fid][1], feature_name(fid)


def test_bpf_features_built_from_parts_are_perfs_bytes(sources):
    """What the recorder does: programs and BTF from their bytes, every length and the
    count left to us (perf's count word replaced by the true count: see bpf-storm)."""
    feats = decoded(sources("bpf-btf"))
    secs = sections(sources("bpf-btf"))
    progs = need(feats, Feature.BPF_PROG_INFO).programs
    btfs = need(feats, Feature.BPF_BTF).btfs
    assert len(progs) > 0 and len(btfs) > 0
    built = BpfProgInfo(programs=tuple(
        BpfProgInfoEntry(arrays=p.arrays, info=p.info, data=p.data) for p in progs))
    assert built.pack() == struct.pack("<I", len(progs)) + secs[Feature.BPF_PROG_INFO][1][4:]
    built = BpfBtf(btfs=tuple(BtfEntry(id=b.id, data=b.data) for b in btfs))
    assert built.pack() == struct.pack("<I", len(btfs)) + secs[Feature.BPF_BTF][1][4:]
    with pytest.raises(ValueError):
        BpfProgInfoEntry(info_len=1, arrays=0, info=b"\0" * 8, data=b"")
    with pytest.raises(ValueError):
        BpfProgInfo(count=len(progs) + 1, programs=progs)


def test_a_storm_of_loads_keeps_every_program_perf_wrote(sources):
    """perf 6.1 racing with thousands of loads: every entry is kept, the count as written;
    perf's own listing stops at the count (checked in test_bpf_prog_info_is_what_perf_lists)."""
    info = need(decoded(sources("bpf-storm")), Feature.BPF_PROG_INFO)
    ids = [prog_fields(p)["id"] for p in info.programs]
    assert ids == sorted(set(ids)) and len(ids) > 100
    assert info.count <= len(info.programs)
    printed = [l for l in header_lines(sources("bpf-storm")) if l.startswith("bpf_prog_info ")]
    assert len(printed) <= info.count


def test_json_is_plain_and_says_what_the_bytes_say(sources):
    feats = decoded(sources("bpf-btf"))
    out = json.loads(json.dumps({fid: feature_to_json(f) for fid, f in feats.items()}))
    host = out[str(int(Feature.HOSTNAME))]
    assert host == {"feature": "HOSTNAME", "value": feats[Feature.HOSTNAME].value}
    btf = feats[Feature.BPF_BTF].btfs[0]
    assert out[str(int(Feature.BPF_BTF))]["btfs"][0] == \
        {"id": btf.id, "data_size": btf.data_size, "data": btf.data.hex()}
    entry = feats[Feature.BUILD_ID].entries[0]
    row = out[str(int(Feature.BUILD_ID))]["entries"][0]
    assert (row["build_id"], row["filename"]) == (entry.build_id.hex(), entry.filename)
    ev = out[str(int(Feature.EVENT_DESC))]["events"][0]
    assert ev["attr"]["sample_type"] == feats[Feature.EVENT_DESC].events[0].attr.sample_type


def test_features_this_machine_cannot_record_pack_and_parse_back():
    """Not verified against perf: this VM has no PMU with capabilities, no hybrid CPU and no
    branch stack, so its perf writes no CPU_PMU_CAPS, HYBRID_TOPOLOGY, BRANCH_STACK or a
    non-empty PMU_CAPS.  Their layouts at least read back what they write."""
    objs = [
        CpuPmuCaps(caps=(PmuCap(name="branches", value="32"),
                         PmuCap(name="max_precise", value="3"))),
        PmuCaps(pmus=(PmuCapsEntry(caps=(PmuCap(name="slots", value="8"),),
                                   pmu_name="cpu_core"),
                      PmuCapsEntry(caps=(), pmu_name="cpu_atom"))),
        HybridTopology(nodes=(HybridNode(pmu_name="cpu_core", cpus="0-7"),
                              HybridNode(pmu_name="cpu_atom", cpus="8-15"))),
        BranchStack(),
    ]
    for obj in objs:
        data = obj.pack()
        assert type(obj).parse(data) == obj
        assert parse_feature(obj.feature_id, data).pack() == data
    assert objs[0].pack()[:8] == struct.pack("<II", 2, 64)  # nr_caps, then name's length
    with pytest.raises(FormatError) as e:
        BranchStack.parse(b"\0" * 8, offset=100)
    assert (e.value.offset, e.value.field) == (100, "BRANCH_STACK.trailing")


def test_cpu_topology_count_comes_from_nrcpus_or_from_the_section(sources):
    for name in ("cpu-clock", "bpf-btf", "pipe"):
        secs = sections(sources(name))
        off, raw = secs[Feature.CPU_TOPOLOGY]
        nr_cpus = struct.unpack_from("<I", secs[Feature.NRCPUS][1])[0]
        with_count = CpuTopology.parse(raw, nr_cpus=nr_cpus)
        assert CpuTopology.parse(raw) == with_count
        assert len(with_count.cpus) == nr_cpus


# --- decoded values against perf's own print-out ----------------------------------------

VALUES = ["cpu-clock", "compressed", "clockid", "pipe", "bpf-btf", "group", "threads-dir"]


@pytest.mark.parametrize("name", VALUES)
def test_strings_are_the_ones_perf_prints(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    for fid, key in ((Feature.HOSTNAME, "hostname"), (Feature.OSRELEASE, "os release"),
                     (Feature.VERSION, "perf version"), (Feature.ARCH, "arch"),
                     (Feature.CPUDESC, "cpudesc"), (Feature.CPUID, "cpuid")):
        assert need(feats, fid).value == value(lines, key), key


@pytest.mark.parametrize("name", VALUES)
def test_nrcpus_and_total_memory(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    nr = need(feats, Feature.NRCPUS)
    assert nr.nr_cpus_online == int(value(lines, "nrcpus online"))
    assert nr.nr_cpus_available == int(value(lines, "nrcpus avail"))
    assert f"{need(feats, Feature.TOTAL_MEM).total_mem_kb} kB" == value(lines, "total memory")


@pytest.mark.parametrize("name", VALUES)
def test_cmdline_is_perfs_argv(sources, name):
    src = sources(name)
    argv = need(decoded(src), Feature.CMDLINE).argv
    assert argv[0].endswith("perf") and "record" in argv
    # perf prints each argument and a space, quotes escaped; arguments may hold newlines
    printed = "".join(a.replace("'", "\\'") + " " for a in argv)
    assert "\n# cmdline : " + printed + "\n" in perf_header_text(src.path)


EVENT_LINE = re.compile(r"event : name = (.*?), (?:, id = \{ ([\d, ]*) \})?, (type = .*)$")
FLAG_NAMES = {"disabled", "inherit", "pinned", "exclusive", "exclude_user", "exclude_kernel",
              "exclude_hv", "exclude_idle", "mmap", "comm", "freq", "inherit_stat",
              "enable_on_exec", "task", "watermark", "mmap_data", "sample_id_all",
              "exclude_host", "exclude_guest", "exclude_callchain_kernel",
              "exclude_callchain_user", "mmap2", "comm_exec", "use_clockid", "context_switch",
              "write_backward", "namespaces", "ksymbol", "bpf_event", "aux_output", "cgroup",
              "text_poke", "build_id", "inherit_thread", "remove_on_exec", "sigtrap"}


@pytest.mark.parametrize("name", VALUES)
def test_event_desc_is_perfs_event_list(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    desc = need(feats, Feature.EVENT_DESC)
    printed = [EVENT_LINE.match(l) for l in lines if l.startswith("event : ")]
    assert len(printed) == len(desc.events) == desc.nr_events > 0
    for ev, m in zip(desc.events, printed):
        assert m, "perf's event line has an unexpected shape"
        name_, ids, rest = m.groups()
        fields = dict(re.findall(r"(\w+) = ([^,]+)", rest))
        attr = ev.attr
        assert ev.name == name_
        assert list(ev.ids) == [int(i) for i in (ids or "").split(",") if i.strip()]
        assert (attr.type, attr.size) == (int(fields["type"]), int(fields["size"]))
        assert attr.config == int(fields.get("config", "0"), 16)
        assert attr.sample_period == int(re.search(r"sample_freq \} = (\d+)", rest)[1])
        assert attr.precise_ip == int(fields.get("precise_ip", "0"))
        assert attr.clockid == int(fields.get("clockid", "0"))
        assert set(attr.flag_names()) == {k for k, v in fields.items()
                                          if k in FLAG_NAMES and v == "1"}


@pytest.mark.parametrize("name", VALUES)
def test_cpu_topology_is_perfs(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    topo = need(feats, Feature.CPU_TOPOLOGY)
    assert list(topo.sibling_sockets) == values(lines, "sibling sockets")
    assert list(topo.sibling_threads) == values(lines, "sibling threads")
    assert list(topo.sibling_dies or ()) == values(lines, "sibling dies")
    cpu_lines = [l for l in lines if re.match(r"CPU \d+: Core ID", l)]
    assert len(cpu_lines) == len(topo.cpus) == need(feats, Feature.NRCPUS).nr_cpus_available
    for i, (cpu, line) in enumerate(zip(topo.cpus, cpu_lines)):
        die = f"Die ID {topo.die_ids[i]}, " if topo.sibling_dies else ""
        assert line == f"CPU {i}: Core ID {cpu.core_id}, {die}Socket ID {cpu.socket_id}"


@pytest.mark.parametrize("name", VALUES)
def test_numa_nodes_are_perfs(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    numa = need(feats, Feature.NUMA_TOPOLOGY)
    assert len(numa.nodes) == numa.nr == len(values(lines, "node0 meminfo")) + \
        sum(1 for l in lines if re.match(r"node[1-9]\d* meminfo", l))
    for n in numa.nodes:
        assert value(lines, f"node{n.node} meminfo") == \
            f"total = {n.mem_total_kb} kB, free = {n.mem_free_kb} kB"
        assert value(lines, f"node{n.node} cpu list") == n.cpus


@pytest.mark.parametrize("name", VALUES)
def test_pmu_mappings_are_perfs(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    pmus = need(feats, Feature.PMU_MAPPINGS).pmus
    assert value(lines, "pmu mappings") == ", ".join(f"{p.name} = {p.type}" for p in pmus)


@pytest.mark.parametrize("name", ["cpu-clock", "bpf-btf", "group", "threads-dir"])
def test_cache_levels_are_perfs_lines(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    cache = need(feats, Feature.CACHE)
    assert cache.version == 1 and cache.cnt == len(cache.caches) > 0
    start = lines.index("CPU cache info:") + 1
    printed = lines[start:start + len(cache.caches)]
    # perf: "L%d %-15s %8s [%s]" after "#  "
    assert printed == [f" L{c.level} {c.type:<15} {c.size:>8} [{c.map}]"
                       for c in cache.caches]


def usec_stamp(ns: int) -> str:
    return f"{ns // 10**9}.{ns % 10**9 // 1000:06d}"


@pytest.mark.parametrize("name", VALUES)
def test_sample_time_is_perfs(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    t = need(feats, Feature.SAMPLE_TIME)
    assert value(lines, "time of first sample") == usec_stamp(t.first_sample_time)
    assert value(lines, "time of last sample") == usec_stamp(t.last_sample_time)
    ms = (t.last_sample_time - t.first_sample_time) / 1e6
    assert value(lines, "sample duration") == f"{ms:10.3f} ms"


def cpu_ranges(bits: list[int]) -> str:
    """bitmap_scnprintf's "0-23,32-199"."""
    out, i = [], 0
    while i < len(bits):
        j = i
        while j + 1 < len(bits) and bits[j + 1] == bits[j] + 1:
            j += 1
        out.append(str(bits[i]) if i == j else f"{bits[i]}-{bits[j]}")
        i = j + 1
    return ",".join(out)


def unit_number(n: int) -> str:
    """unit_number__scnprintf: divide by 1024 while more than 2048 is left, up to G."""
    i = 0
    while n // 1024 > 1 and i < 3:
        n //= 1024
        i += 1
    return f"{n}{'BKMG'[i]}"


@pytest.mark.parametrize("name", ["cpu-clock", "bpf-btf", "threads-dir"])
def test_memory_nodes_are_perfs(sources, name):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    mem = need(feats, Feature.MEM_TOPOLOGY)
    head = f"memory nodes (nr {len(mem.nodes)}, block size {mem.block_size:#x}):"
    start = lines.index(head) + 1
    assert lines[start:start + len(mem.nodes)] == [
        f" {n.node:3d} [{unit_number(mem.block_size * len(n.blocks()))}]: "
        f"{cpu_ranges(n.blocks())}" for n in mem.nodes]
    for n in mem.nodes:
        assert n.size == n.bitmap_size and len(n.bitmap) == -(-n.size // 64)


def test_clockid_and_clock_data_are_perfs(sources):
    feats, lines = decoded(sources("clockid")), header_lines(sources("clockid"))
    res = need(feats, Feature.CLOCKID).clockid_res_ns
    assert value(lines, "clockid frequency") == f"{res * 1000} MHz"
    clock = need(feats, Feature.CLOCK_DATA)
    assert clock.version == 1 and clock.clockid == 1  # CLOCK_MONOTONIC
    assert value(lines, "clockid") == "monotonic (1)"
    ref = value(lines, "reference time")
    assert ref.endswith(f" = {usec_stamp(clock.tod_ns)} (TOD) = {clock.clockid_ns // 10**9}."
                        f"{clock.clockid_ns % 10**9:09d} (monotonic)")


def test_compressed_is_perfs(sources):
    feats, lines = decoded(sources("compressed")), header_lines(sources("compressed"))
    comp = need(feats, Feature.COMPRESSED)
    assert comp.type == 1 and comp.mmap_len > 0
    assert value(lines, "compressed") == f"Zstd, level = {comp.level}, ratio = {comp.ratio}"


def test_group_desc_is_perfs(sources):
    feats, lines = decoded(sources("group")), header_lines(sources("group"))
    groups = need(feats, Feature.GROUP_DESC).groups
    names = [e.name for e in need(feats, Feature.EVENT_DESC).events]
    assert len(groups) == 1
    expected = []
    for g in groups:
        label = "" if g.name == "{anon_group}" else g.name
        members = names[g.leader_idx:g.leader_idx + g.nr_members]
        expected.append(f"{label}{{{','.join(members)}}}")
    assert values(lines, "group") == expected == ["{cpu-clock,task-clock}"]


def test_dir_format_is_perfs(sources):
    feats, lines = decoded(sources("threads-dir")), header_lines(sources("threads-dir"))
    assert f"{need(feats, Feature.DIR_FORMAT).version}" == \
        value(lines, "directory data version") == "1"


def test_tracing_data_stays_raw(sources):
    feats = decoded(sources("tracepoint"))
    raw = need(feats, Feature.TRACING_DATA)
    assert isinstance(raw, RawFeature) and raw.data.startswith(b"\x17\x08\x44tracing")


# struct bpf_prog_info (include/uapi/linux/bpf.h): offsets of the fields perf prints
INFO = {"id": 4, "tag": 8, "name": 64, "nr_jited_ksyms": 104, "nr_jited_func_lens": 108,
        "jited_ksyms": 112, "jited_func_lens": 120, "btf_id": 128, "nr_prog_tags": 180,
        "prog_tags": 184}


def prog_fields(p: BpfProgInfoEntry) -> dict:
    """What __bpf_event__print_bpf_prog_info uses; arrays via perf's offsets into data."""
    u32 = lambda k: struct.unpack_from("<I", p.info, INFO[k])[0]  # noqa: E731
    u64 = lambda k: struct.unpack_from("<Q", p.info, INFO[k])[0]  # noqa: E731
    n = u32("nr_jited_ksyms")
    return {
        "id": u32("id"), "btf_id": u32("btf_id"),
        "name": p.info[INFO["name"]:INFO["name"] + 16].split(b"\0")[0].decode(),
        "counts": (n, u32("nr_jited_func_lens"), u32("nr_prog_tags")),
        "addrs": struct.unpack_from(f"<{n}Q", p.data, u64("jited_ksyms")),
        "lens": struct.unpack_from(f"<{n}I", p.data, u64("jited_func_lens")),
        "tags": [p.data[u64("prog_tags") + 8 * i:][:8].hex() for i in range(n)],
    }


def perf_prog_lines(f: dict, with_btf: bool) -> list[tuple]:
    """What __bpf_event__print_bpf_prog_info prints for one program, as (head, tag, addr,
    size, short name): nothing when its array counts disagree; one line for one function;
    a bare head, then a line per function, for several.  The short name (after the tag) is
    the function's name in BTF (None here: not decoded), else the program's name for one
    function, else "F"."""
    n, nlens, ntags = f["counts"]
    if not n == nlens == ntags:
        return []
    head = f"bpf_prog_info {f['id']}:"
    if n == 1:
        return [(head, f["tags"][0], f["addrs"][0], f["lens"][0],
                 None if with_btf else f["name"])]
    return [(head, None, None, None, None)] + [
        (f"\tsub_prog {i}:", f["tags"][i], f["addrs"][i], f["lens"][i],
         None if with_btf else "F") for i in range(n)]


BPF_LINE = re.compile(r"(?:bpf_prog_info (\d+):|\tsub_prog (\d+):)(?: (\S+) addr 0x([0-9a-f]+) "
                      r"size (\d+))?$")


@pytest.mark.parametrize("name", ["bpf-probe", "bpf-btf", "bpf-storm"])
def test_bpf_prog_info_is_what_perf_lists(sources, name, btf_program):
    feats, lines = decoded(sources(name)), header_lines(sources(name))
    info = need(feats, Feature.BPF_PROG_INFO)
    assert 0 < info.count <= len(info.programs)
    printed = [BPF_LINE.match(l) for l in lines
               if l.startswith("bpf_prog_info ") or l.startswith("\tsub_prog ")]
    assert all(printed)
    btf_ids = {b.id for b in feats[Feature.BPF_BTF].btfs} if Feature.BPF_BTF in feats else set()
    expected, by_id = [], {}
    for p in info.programs[:info.count]:   # perf reads no further
        assert p.info_len == len(p.info) >= 192 and p.data_len == len(p.data)
        f = by_id[prog_fields(p)["id"]] = prog_fields(p)
        expected += perf_prog_lines(f, with_btf=f["btf_id"] in btf_ids)
    assert len(printed) == len(expected) > 0
    for m, (head, tag, addr, size, short) in zip(printed, expected):
        assert m[0].startswith(head)
        if tag is None:
            assert m[3] is None
            continue
        assert (int(m[4], 16), int(m[5])) == (addr, size)
        prefix = f"bpf_prog_{tag}"
        if short is None:
            assert m[3].startswith(prefix + "_") and len(m[3]) > len(prefix) + 1
        else:
            assert m[3] == prefix + (f"_{short}" if short else "")
    if name == "bpf-btf":  # ours: two functions, named from BTF
        ours = by_id[btf_program]
        assert ours["counts"] == (2, 2, 2) and ours["btf_id"]
        at = next(i for i, m in enumerate(printed) if m[1] == str(btf_program))
        assert printed[at + 1][3].endswith("_tr_feat_main")
        assert printed[at + 2][3].endswith("_tr_feat_sub")


def test_bpf_btf_is_what_perf_lists(sources, btf_program):
    feats, lines = decoded(sources("bpf-btf")), header_lines(sources("bpf-btf"))
    btf = need(feats, Feature.BPF_BTF)
    ids = [int(v) for v in re.findall(r"^btf info of id (\d+)$", "\n".join(lines), re.M)]
    assert ids == [b.id for b in btf.btfs[:btf.count]] and btf.count == len(ids) > 0
    for b in btf.btfs:
        assert b.data_size == len(b.data) and b.data[:2] == b"\x9f\xeb"  # BTF_MAGIC
    ours = next(p for p in need(feats, Feature.BPF_PROG_INFO).programs
                if prog_fields(p)["id"] == btf_program)
    assert prog_fields(ours)["btf_id"] in ids


@pytest.mark.parametrize("name", ["cpu-clock", "bpf-btf", "group"])
def test_build_ids_are_perfs_buildid_list(sources, name):
    src = sources(name)
    entries = need(decoded(src), Feature.BUILD_ID).entries
    listed = {tuple(l.split(None, 1)) for l in
              run_perf("buildid-list", "-i", str(src.path)).splitlines() if l.strip()}
    ours = {(e.build_id.hex(), e.filename) for e in entries}
    assert ours == listed and ("[kernel.kallsyms]" in {f for _, f in listed})
    for e in entries:
        assert e.size == 36 + len(e.filename.raw) and e.size % 4 == 0
        assert e.misc & (1 << 15) and 0 < e.id_size == len(e.build_id) <= 20


# --- damaged sections --------------------------------------------------------------------

def damaged(raw: bytes, at: int, value: int, fmt: str = "<I") -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def test_a_count_past_the_section_names_the_count(sources):
    src = sources("bpf-btf")
    off, raw = sections(src)[Feature.CMDLINE]
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.CMDLINE, damaged(raw, 0, 10_000), file="x.data", offset=off)
    assert (e.value.file, e.value.offset, e.value.field) == ("x.data", off, "CMDLINE.nr")


def test_a_string_length_past_the_section_names_the_string(sources):
    off, raw = sections(sources("bpf-btf"))[Feature.HOSTNAME]
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.HOSTNAME, damaged(raw, 0, len(raw)), file="x", offset=off)
    assert (e.value.offset, e.value.field) == (off, "HOSTNAME.value")


def test_a_bpf_data_len_past_the_section_names_that_program(sources):
    # a recording made while a program was pinned: perf always lists that one
    off, raw = sections(sources("bpf-btf"))[Feature.BPF_PROG_INFO]
    programs = BpfProgInfo.parse(raw).programs
    assert programs
    last = len(programs) - 1                             # the one damaged
    start = 4 + sum(16 + p.info_len + p.data_len for p in programs[:last])
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.BPF_PROG_INFO, damaged(raw, start + 4, len(raw)), file="x",
                      offset=off)
    assert (e.value.offset, e.value.field) == (off + start + 4,
                                               f"BPF_PROG_INFO.programs[{last}].data_len")


def test_a_btf_size_past_the_section_names_it(sources):
    off, raw = sections(sources("bpf-btf"))[Feature.BPF_BTF]
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.BPF_BTF, damaged(raw, 8, 1 << 30), file="x", offset=off)
    assert (e.value.offset, e.value.field) == (off + 8, "BPF_BTF.btfs[0].data_size")


def test_bytes_after_the_last_field_are_an_error(sources):
    off, raw = sections(sources("cpu-clock"))[Feature.NRCPUS]
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.NRCPUS, raw + b"\0" * 4, file="x", offset=off)
    assert (e.value.offset, e.value.field) == (off + 8, "NRCPUS.trailing")


def cut_points(n: int) -> list[int]:
    """Every 4th byte of a small section; for a big one, 300 points spread over it."""
    if n <= 4096:
        return list(range(0, n, 4)) + [n - 1]
    return sorted({n * k // 300 for k in range(300)} | {1, 2, 3, n - 1, n - 4})


def parses_or_fails_cleanly(fid: int, data: bytes, off: int, name: str) -> None:
    """Either a FormatError pointing inside the bytes given, or a valid shorter section
    that packs back to exactly those bytes.  Nothing else (no IndexError, struct.error,
    MemoryError)."""
    try:
        obj = parse_feature(fid, data, file=name, offset=off)
    except FormatError as e:
        assert e.file == name and off <= e.offset <= off + len(data), (e.offset, str(e))
        assert e.field.startswith(Feature(fid).name + "."), e.field
        return
    assert obj.pack() == data


@pytest.mark.parametrize("name", ["bpf-btf", "group", "compressed", "clockid"])
def test_every_cut_section_fails_with_offset_and_field(sources, name):
    for fid, (off, raw) in sections(sources(name)).items():
        if FEATURE_CLASSES.get(fid) is None:
            continue
        for k in cut_points(len(raw)):
            parses_or_fails_cleanly(fid, raw[:k], off, name)


@pytest.mark.parametrize("name", ["bpf-btf", "group", "compressed", "clockid"])
def test_every_garbled_word_fails_with_offset_and_field(sources, name):
    for fid, (off, raw) in sections(sources(name)).items():
        if FEATURE_CLASSES.get(fid) is None:
            continue
        for k in cut_points(len(raw) - 3) if len(raw) >= 4 else ():
            for junk in (0xFFFFFFFF, 0x7FFFFFFF, 0x00010000):
                parses_or_fails_cleanly(fid, damaged(raw, k, junk), off, name)


def test_a_section_cut_inside_an_attr_names_the_attr_size(sources):
    src = sources("cpu-clock")
    off, raw = sections(src)[Feature.EVENT_DESC]
    with pytest.raises(FormatError) as e:
        parse_feature(Feature.EVENT_DESC, raw[:40], file=str(src.header), offset=off)
    assert (e.value.file, e.value.offset, e.value.field) == \
        (str(src.header), off + 4, "EVENT_DESC.attr_size")
    assert "overruns" in str(e.value)


def test_entries_read_by_plan_are_those_the_codecs_read(monkeypatch):
    """BPF_PROG_INFO's entries (numbers, and bytes they count) are read by a plan without
    a codec call per field; the objects, and the error for each damage, are the codecs'."""
    from textrace.perf import features
    assert BpfProgInfoEntry._plan() is not None
    built = BpfProgInfo(programs=tuple(
        BpfProgInfoEntry(arrays=k, info=bytes(range(k, k + 40)), data=b"\xab" * (8 * k))
        for k in range(5)))
    raw = built.pack()
    damaged = [raw[:-3],                                   # the last data cut short
               raw[:4 + 16 + 40 + 2],                      # cut inside the next header
               raw[:4] + struct.pack("<I", 1 << 20) + raw[8:],      # info_len overruns
               raw[:8] + struct.pack("<I", 0xFFFFFFF0) + raw[12:]]  # data_len overruns

    def parse_all():
        out = [BpfProgInfo.parse(raw, file="f", offset=0x100)]
        for bad in damaged:
            with pytest.raises(FormatError) as e:
                BpfProgInfo.parse(bad, file="f", offset=0x100)
            out.append(str(e.value))
        return out
    planned = parse_all()
    monkeypatch.setattr(features._Layout, "_read_planned",
                        classmethod(lambda cls, cur, plan: None))
    assert parse_all() == planned
    assert planned[0] == built and planned[0].pack() == raw

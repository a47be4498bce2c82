"""perf.data header features: one dataclass per feature, parsed and packed from one layout.

Formats are perf's (tools/perf/util/header.c): strings are `u32 len; char str[len]` with
len the string plus NUL rounded up to 64; counts precede their entries.  Every count and
length is checked against the section before anything is allocated.  Features this module
does not decode (TRACING_DATA, AUXTRACE, unknown ids) stay RawFeature, kept byte for byte.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

from ..errors import FormatError
from .abi import Feature
from .attr import EventAttr

NAME_ALIGN = 64


class _In:
    """A bounds-checked cursor over one feature section; errors name the absolute offset."""

    def __init__(self, buf, feat: str, file: str | None, base: int):
        self.buf = memoryview(buf)
        self.pos = 0
        self.feat = feat
        self.file = file
        self.base = base

    def fail(self, msg: str, field: str, at: int | None = None):
        raise FormatError(msg, file=self.file, offset=self.base + (self.pos if at is None
                                                                   else at),
                          field=f"{self.feat}.{field}")

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or n > self.left():
            self.fail(f"needs {n} bytes, {self.left()} left in the section", field)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size, field))

    def u32(self, field: str) -> int:
        return self.unpack("<I", field)[0]

    def u64(self, field: str) -> int:
        return self.unpack("<Q", field)[0]

    def count(self, field: str, min_entry: int, wide: bool = False) -> int:
        """A count of entries each at least `min_entry` bytes: must fit what is left."""
        at = self.pos
        n = self.u64(field) if wide else self.u32(field)
        if n * min_entry > self.left():
            self.fail(f"count {n} cannot fit in the {self.left()} bytes left", field, at)
        return n

    def string(self, field: str) -> str:
        at = self.pos
        n = self.u32(field)
        if n > self.left():
            self.fail(f"string of {n} bytes overruns the section", field, at)
        raw = self.take(n, field)
        nul = raw.find(b"\0")
        return (raw if nul < 0 else raw[:nul]).decode("utf-8", "surrogateescape")


class _Out:
    def __init__(self):
        self.parts: list[bytes] = []

    def pack(self, fmt: str, *values) -> None:
        self.parts.append(struct.pack(fmt, *values))

    def raw(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def string(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape") + b"\0"
        n = -(-len(data) // NAME_ALIGN) * NAME_ALIGN
        self.parts.append(struct.pack("<I", n) + data.ljust(n, b"\0"))

    def bytes(self) -> bytes:
        return b"".join(self.parts)


@dataclass(frozen=True)
class RawFeature:
    feature_id: int
    data: bytes

    def pack(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class StringFeature:
    """HOSTNAME, OSRELEASE, VERSION, ARCH, CPUDESC, CPUID: one string."""

    feature_id: int
    value: str

    @classmethod
    def parse_from(cls, fid: int, i: _In) -> "StringFeature":
        return cls(fid, i.string("value"))

    def pack(self) -> bytes:
        o = _Out()
        o.string(self.value)
        return o.bytes()


@dataclass(frozen=True)
class NrCpus:
    nr_cpus_available: int
    nr_cpus_online: int

    @classmethod
    def parse_from(cls, fid, i):
        return cls(*i.unpack("<II", "nr"))

    def pack(self):
        return struct.pack("<II", self.nr_cpus_available, self.nr_cpus_online)


@dataclass(frozen=True)
class TotalMem:
    kib: int

    @classmethod
    def parse_from(cls, fid, i):
        return cls(i.u64("kib"))

    def pack(self):
        return struct.pack("<Q", self.kib)


@dataclass(frozen=True)
class Cmdline:
    """argv of the recording command; perf puts its own binary's path first."""

    argv: tuple[str, ...]

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("nr", 4)
        return cls(tuple(i.string(f"argv[{k}]") for k in range(n)))

    def pack(self):
        o = _Out()
        o.pack("<I", len(self.argv))
        for a in self.argv:
            o.string(a)
        return o.bytes()


@dataclass(frozen=True)
class EventDesc:
    """Each event's attr, name and ids."""

    attr_size: int
    events: tuple[tuple[EventAttr, str, tuple[int, ...]], ...]

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("nr_events", 8)
        size = i.u32("attr_size")
        if size < 64 or size > 4096:
            i.fail(f"attr size {size} is not a perf_event_attr size", "attr_size", i.pos - 4)
        events = []
        for k in range(n):
            raw = i.take(size, f"event[{k}].attr")
            attr = EventAttr.parse(raw.ljust(max(size, 8), b"\0"), 0, file=i.file)
            nr_ids = i.count(f"event[{k}].nr_ids", 8)
            name = i.string(f"event[{k}].name")
            ids = i.unpack(f"<{nr_ids}Q", f"event[{k}].ids")
            events.append((attr, name, tuple(ids)))
        return cls(size, tuple(events))

    def pack(self):
        o = _Out()
        o.pack("<II", len(self.events), self.attr_size)
        for attr, name, ids in self.events:
            o.raw(attr.replace(size=attr.size).pack()[:self.attr_size].ljust(self.attr_size,
                                                                             b"\0"))
            o.pack("<I", len(ids))
            o.string(name)
            o.pack(f"<{len(ids)}Q", *ids)
        return o.bytes()


@dataclass(frozen=True)
class CpuTopology:
    """Sibling lists, then per-cpu core and socket ids, then (newer perf) die siblings and
    per-cpu die ids.  The per-cpu parts are as long as the section says."""

    core_siblings: tuple[str, ...]
    thread_siblings: tuple[str, ...]
    core_socket_ids: tuple[tuple[int, int], ...] = ()
    die_siblings: tuple[str, ...] | None = None
    die_ids: tuple[int, ...] = ()

    @classmethod
    def parse_from(cls, fid, i, nr_cpus: int | None = None):
        cores = tuple(i.string("core_siblings") for _ in range(i.count("nr_core_sib", 4)))
        threads = tuple(i.string("thread_siblings")
                        for _ in range(i.count("nr_thread_sib", 4)))
        if nr_cpus is None:
            # without NRCPUS, take per-cpu ids while the rest cannot be a die part
            nr_cpus = i.left() // 8
        ids = tuple(i.unpack("<II", "core_socket_id") for _ in range(min(nr_cpus,
                                                                        i.left() // 8)))
        if not i.left():
            return cls(cores, threads, ids)
        dies = tuple(i.string("die_siblings") for _ in range(i.count("nr_die_sib", 4)))
        die_ids = tuple(i.u32("die_id") for _ in range(min(nr_cpus, i.left() // 4)))
        return cls(cores, threads, ids, dies, die_ids)

    def pack(self):
        o = _Out()
        for group in (self.core_siblings, self.thread_siblings):
            o.pack("<I", len(group))
            for s in group:
                o.string(s)
        for core, socket in self.core_socket_ids:
            o.pack("<II", core, socket)
        if self.die_siblings is not None:
            o.pack("<I", len(self.die_siblings))
            for s in self.die_siblings:
                o.string(s)
            for d in self.die_ids:
                o.pack("<I", d)
        return o.bytes()


@dataclass(frozen=True)
class NumaNode:
    node: int
    mem_total_kib: int
    mem_free_kib: int
    cpus: str


@dataclass(frozen=True)
class NumaTopology:
    nodes: tuple[NumaNode, ...]

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("nr", 24)
        return cls(tuple(NumaNode(*i.unpack("<IQQ", "node"), i.string("cpus"))
                         for _ in range(n)))

    def pack(self):
        o = _Out()
        o.pack("<I", len(self.nodes))
        for nd in self.nodes:
            o.pack("<IQQ", nd.node, nd.mem_total_kib, nd.mem_free_kib)
            o.string(nd.cpus)
        return o.bytes()


@dataclass(frozen=True)
class PmuMappings:
    pmus: tuple[tuple[int, str], ...]  # (type, name)

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("nr", 8)
        return cls(tuple((i.u32("type"), i.string("name")) for _ in range(n)))

    def pack(self):
        o = _Out()
        o.pack("<I", len(self.pmus))
        for t, name in self.pmus:
            o.pack("<I", t)
            o.string(name)
        return o.bytes()


@dataclass(frozen=True)
class GroupDesc:
    groups: tuple[tuple[str, int, int], ...]  # (name, leader index, members)

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("nr", 12)
        return cls(tuple((i.string("name"), *i.unpack("<II", "leader")) for _ in range(n)))

    def pack(self):
        o = _Out()
        o.pack("<I", len(self.groups))
        for name, leader, nr in self.groups:
            o.string(name)
            o.pack("<II", leader, nr)
        return o.bytes()


@dataclass(frozen=True)
class CacheLevel:
    level: int
    line_size: int
    sets: int
    ways: int
    type: str
    size: str
    map: str


@dataclass(frozen=True)
class CacheFeature:
    version: int
    caches: tuple[CacheLevel, ...]

    @classmethod
    def parse_from(cls, fid, i):
        version = i.u32("version")
        n = i.count("cnt", 28)
        return cls(version, tuple(CacheLevel(*i.unpack("<IIII", "level"), i.string("type"),
                                             i.string("size"), i.string("map"))
                                  for _ in range(n)))

    def pack(self):
        o = _Out()
        o.pack("<II", self.version, len(self.caches))
        for c in self.caches:
            o.pack("<IIII", c.level, c.line_size, c.sets, c.ways)
            o.string(c.type)
            o.string(c.size)
            o.string(c.map)
        return o.bytes()


@dataclass(frozen=True)
class SampleTime:
    first_ns: int
    last_ns: int

    @classmethod
    def parse_from(cls, fid, i):
        return cls(*i.unpack("<QQ", "time"))

    def pack(self):
        return struct.pack("<QQ", self.first_ns, self.last_ns)


@dataclass(frozen=True)
class MemTopology:
    version: int
    block_size: int
    nodes: tuple[tuple[int, int, int, tuple[int, ...]], ...]  # (node, size, nbits, words)

    @classmethod
    def parse_from(cls, fid, i):
        version, block = i.unpack("<QQ", "version")
        n = i.count("nr", 24, wide=True)
        nodes = []
        for k in range(n):
            node, size, nbits = i.unpack("<QQQ", f"node[{k}]")
            words = -(-nbits // 64)
            if words * 8 > i.left():
                i.fail(f"bitmap of {nbits} bits overruns the section", f"node[{k}].bitmap")
            nodes.append((node, size, nbits, i.unpack(f"<{words}Q", f"node[{k}].bitmap")))
        return cls(version, block, tuple(nodes))

    def pack(self):
        o = _Out()
        o.pack("<QQQ", self.version, self.block_size, len(self.nodes))
        for node, size, nbits, words in self.nodes:
            o.pack("<QQQ", node, size, nbits)
            o.pack(f"<{len(words)}Q", *words)
        return o.bytes()


@dataclass(frozen=True)
class U64Feature:
    """CLOCKID (the clock's resolution in ns, perf's "clockid frequency") and DIR_FORMAT."""

    feature_id: int
    value: int

    @classmethod
    def parse_from(cls, fid, i):
        return cls(fid, i.u64("value"))

    def pack(self):
        return struct.pack("<Q", self.value)


@dataclass(frozen=True)
class ClockData:
    version: int
    clockid: int
    wall_clock_ns: int
    clockid_time_ns: int

    @classmethod
    def parse_from(cls, fid, i):
        return cls(*i.unpack("<IIQQ", "clock_data"))

    def pack(self):
        return struct.pack("<IIQQ", self.version, self.clockid, self.wall_clock_ns,
                           self.clockid_time_ns)


@dataclass(frozen=True)
class Compressed:
    version: int
    type: int       # 1 = zstd
    level: int
    ratio: int
    mmap_len: int

    @classmethod
    def parse_from(cls, fid, i):
        return cls(*i.unpack("<IIIII", "compressed"))

    def pack(self):
        return struct.pack("<IIIII", self.version, self.type, self.level, self.ratio,
                           self.mmap_len)


@dataclass(frozen=True)
class BpfProgInfoEntry:
    """One program in perf's bpf_prog_info_linear layout (tools/perf/util/bpf-utils.h):
    the struct bpf_prog_info bytes, with array pointers rewritten as offsets into `data`.
    Decoding the info is bpf/'s business; perf/ keeps the bytes exact."""

    info_len: int
    data_len: int
    arrays: int
    info: bytes
    data: bytes


@dataclass(frozen=True)
class BpfProgInfo:
    programs: tuple[BpfProgInfoEntry, ...]

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("count", 16)
        progs = []
        for k in range(n):
            info_len, data_len, arrays = i.unpack("<IIQ", f"prog[{k}]")
            info = i.take(info_len, f"prog[{k}].info_len")
            data = i.take(data_len, f"prog[{k}].data_len")
            progs.append(BpfProgInfoEntry(info_len, data_len, arrays, info, data))
        return cls(tuple(progs))

    def pack(self):
        o = _Out()
        o.pack("<I", len(self.programs))
        for p in self.programs:
            o.pack("<IIQ", len(p.info), len(p.data), p.arrays)
            o.raw(p.info)
            o.raw(p.data)
        return o.bytes()


@dataclass(frozen=True)
class BpfBtf:
    blobs: tuple[tuple[int, bytes], ...]  # (btf id, BTF data)

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("count", 8)
        out = []
        for k in range(n):
            btf_id, size = i.unpack("<II", f"btf[{k}]")
            out.append((btf_id, i.take(size, f"btf[{k}].data_size")))
        return cls(tuple(out))

    def pack(self):
        o = _Out()
        o.pack("<I", len(self.blobs))
        for btf_id, data in self.blobs:
            o.pack("<II", btf_id, len(data))
            o.raw(data)
        return o.bytes()


@dataclass(frozen=True)
class PmuCaps:
    """CPU_PMU_CAPS: the cpu PMU's capabilities.  PMU_CAPS: the same per PMU, each
    followed by the PMU's name."""

    feature_id: int
    pmus: tuple[tuple[str | None, tuple[tuple[str, str], ...]], ...]

    @classmethod
    def parse_from(cls, fid, i):
        per_pmu = fid == Feature.PMU_CAPS
        n_pmus = i.count("nr_pmu", 4) if per_pmu else 1
        pmus = []
        for _ in range(n_pmus):
            n = i.count("nr_caps", 8)
            caps = tuple((i.string("cap"), i.string("value")) for _ in range(n))
            pmus.append((i.string("pmu") if per_pmu else None, caps))
        return cls(fid, tuple(pmus))

    def pack(self):
        o = _Out()
        if self.feature_id == Feature.PMU_CAPS:
            o.pack("<I", len(self.pmus))
        for name, caps in self.pmus:
            o.pack("<I", len(caps))
            for k, v in caps:
                o.string(k)
                o.string(v)
            if self.feature_id == Feature.PMU_CAPS:
                o.string(name or "")
        return o.bytes()


@dataclass(frozen=True)
class HybridTopology:
    pmus: tuple[tuple[str, str], ...]  # (pmu name, cpus)

    @classmethod
    def parse_from(cls, fid, i):
        n = i.count("nr", 8)
        return cls(tuple((i.string("pmu"), i.string("cpus")) for _ in range(n)))

    def pack(self):
        o = _Out()
        o.pack("<I", len(self.pmus))
        for name, cpus in self.pmus:
            o.string(name)
            o.string(cpus)
        return o.bytes()


@dataclass(frozen=True)
class BuildIdEntry:
    misc: int
    pid: int
    build_id: bytes
    filename: str
    size_byte: int = 0
    record_size: int = 0


@dataclass(frozen=True)
class BuildIds:
    """A run of perf_record_header_build_id records (header, pid, 24-byte build id whose
    byte 20 holds the id's length in perf >= 5.11, filename padded to 64)."""

    entries: tuple[BuildIdEntry, ...]

    @classmethod
    def parse_from(cls, fid, i):
        out = []
        while i.left():
            at = i.pos
            _type, misc, size = i.unpack("<IHH", "header")
            if size < 36 or size - 8 > i.left():
                i.fail(f"build id record size {size} is impossible here", "header.size", at)
            pid, bid = i.unpack("<i24s", "build_id")
            name = i.take(size - 36, "filename")
            nul = name.find(b"\0")
            n = bid[20] if 0 < bid[20] <= 20 else 20
            out.append(BuildIdEntry(misc, pid, bid[:n],
                                    (name if nul < 0 else name[:nul]).decode(
                                        "utf-8", "surrogateescape"), bid[20], size))
        return cls(tuple(out))

    def pack(self):
        o = _Out()
        for e in self.entries:
            name = e.filename.encode("utf-8", "surrogateescape") + b"\0"
            size = e.record_size or 36 + -(-len(name) // NAME_ALIGN) * NAME_ALIGN
            bid = e.build_id.ljust(20, b"\0") + bytes([e.size_byte, 0, 0, 0])
            o.pack("<IHHi24s", 0, e.misc, size, e.pid, bid)
            o.raw(name.ljust(size - 36, b"\0"))
        return o.bytes()


_STRING = {Feature.HOSTNAME, Feature.OSRELEASE, Feature.VERSION, Feature.ARCH,
           Feature.CPUDESC, Feature.CPUID}
_DECODERS = {
    Feature.BUILD_ID: BuildIds, Feature.NRCPUS: NrCpus, Feature.TOTAL_MEM: TotalMem,
    Feature.CMDLINE: Cmdline, Feature.EVENT_DESC: EventDesc,
    Feature.CPU_TOPOLOGY: CpuTopology, Feature.NUMA_TOPOLOGY: NumaTopology,
    Feature.PMU_MAPPINGS: PmuMappings, Feature.GROUP_DESC: GroupDesc,
    Feature.CACHE: CacheFeature, Feature.SAMPLE_TIME: SampleTime,
    Feature.MEM_TOPOLOGY: MemTopology, Feature.CLOCKID: U64Feature,
    Feature.DIR_FORMAT: U64Feature, Feature.CLOCK_DATA: ClockData,
    Feature.BPF_PROG_INFO: BpfProgInfo, Feature.BPF_BTF: BpfBtf,
    Feature.COMPRESSED: Compressed, Feature.CPU_PMU_CAPS: PmuCaps,
    Feature.PMU_CAPS: PmuCaps, Feature.HYBRID_TOPOLOGY: HybridTopology,
}


def parse_feature(feature_id: int, data, *, file: str | None = None, offset: int = 0,
                  nr_cpus: int | None = None):
    """The decoded feature, or RawFeature for kinds kept as bytes (empty ones included)."""
    try:
        name = Feature(feature_id).name
    except ValueError:
        return RawFeature(feature_id, bytes(data))
    if feature_id in _STRING:
        cls = StringFeature
    else:
        cls = _DECODERS.get(feature_id)
    if cls is None:
        return RawFeature(feature_id, bytes(data))
    cursor = _In(data, name, file, offset)
    if cls is CpuTopology:
        return CpuTopology.parse_from(feature_id, cursor, nr_cpus)
    return cls.parse_from(feature_id, cursor)


def pack_feature(obj) -> bytes:
    return obj.pack()


def feature_to_json(obj) -> dict:
    def plain(v):
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, EventAttr):
            return v.to_dict()
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(obj)

"""Every perf record kind as a frozen dataclass with one declared layout for parse and pack.

A record's bytes are `perf_event_header` (u32 type, u16 misc, u16 size), a body, and for
kernel records of an attr with sample_id_all, the sample_id trailer (see sampleid.py).
Bodies are declared as a fixed `struct.Struct` plus at most one variable tail (those the
bulk reader and the live loops read too are layouts.py's); kinds whose body is not of that
shape override `_parse_body` / `_pack_body`.  Unknown kinds become RawRecord.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import FormatError
from .abi import (KSYMBOL_FLAG_UNREGISTER, MISC_CPUMODE_MASK, MISC_MMAP_BUILD_ID,
                  RecordType, record_type_name)
from .attr import EventAttr
from . import layouts
from .read_format import pack_read_values, parse_read_values
from .sampleid import SampleId

from .header import RECORD_HEADER as HEADER


def align8(n: int) -> int:
    """n rounded up to 8: perf pads every record and string to 8 bytes."""
    return (n + 7) & ~7


def cstring(raw: bytes | memoryview) -> str:
    """Bytes up to the first NUL, decoded leniently (kernel strings are not always UTF-8)."""
    raw = bytes(raw)
    nul = raw.find(b"\0")
    return (raw if nul < 0 else raw[:nul]).decode("utf-8", "surrogateescape")


def pack_cstring(text: str, padded_len: int | None = None, align: int = 8) -> bytes:
    """`text` NUL-terminated and zero-padded to `padded_len` (default: the next `align`)."""
    raw = text.encode("utf-8", "surrogateescape") + b"\0"
    if padded_len is None or padded_len < len(raw):
        padded_len = (len(raw) + align - 1) // align * align
    return raw.ljust(padded_len, b"\0")


@dataclass(frozen=True, kw_only=True)
class Record:
    """Fields every record has.  `sample_id` is the sample_id_all trailer of kernel records;
    `time`, `cpu`, `pid`, `tid` read from it unless the body has its own field of that name.
    `attr_index` is the attr (event) the record belongs to, when it can be told."""

    TYPE: ClassVar[int] = -1
    BODY: ClassVar[struct.Struct | None] = None
    FIELDS: ClassVar[tuple[str, ...]] = ()
    TAIL: ClassVar[str | None] = None       # name of a variable tail field
    TAIL_KIND: ClassVar[str] = "cstring"    # "cstring" (padded to 8) or "bytes"

    misc: int = 0
    sample_id: SampleId | None = None
    offset: int | None = field(default=None, compare=False)
    attr_index: int | None = field(default=None, compare=False)

    @property
    def time(self) -> int | None:
        """The sample_id trailer's time (ns, on the event's clock); None without sample_id_all."""
        return self.sample_id.time if self.sample_id else None

    @property
    def cpu(self) -> int | None:
        """The CPU the record was written on (sample_id's CPU); None without it."""
        return self.sample_id.cpu if self.sample_id else None

    @property
    def pid(self) -> int | None:
        """The process it came from (sample_id's TID field); None without it."""
        return self.sample_id.pid if self.sample_id else None

    @property
    def tid(self) -> int | None:
        """The thread it came from (sample_id's TID field); None without it."""
        return self.sample_id.tid if self.sample_id else None

    @property
    def id(self) -> int | None:
        """The event id (sample_id's ID or IDENTIFIER), which names its attr; None without it."""
        return self.sample_id.id if self.sample_id else None

    @property
    def stream_id(self) -> int | None:
        """The sample_id's STREAM_ID; None without it."""
        return self.sample_id.stream_id if self.sample_id else None

    @property
    def type(self) -> int:
        """The PERF_RECORD_* number."""
        return self.TYPE

    @property
    def type_name(self) -> str:
        """The record type's name without PERF_RECORD_ (KSYMBOL, TEXT_POKE, ...)."""
        return record_type_name(self.type)

    @property
    def cpumode(self) -> int:
        """The misc field's cpumode bits (kernel, user, hypervisor, guest)."""
        return self.misc & MISC_CPUMODE_MASK

    # --- body layout --------------------------------------------------------------------
    @classmethod
    def _parse_body(cls, body: memoryview, ctx: "ParseContext") -> dict[str, Any]:
        values: dict[str, Any] = {}
        pos = 0
        if cls.BODY is not None:
            if len(body) < cls.BODY.size:
                raise ctx.error(f"{record_type_name(cls.TYPE)} body of {len(body)} bytes is "
                                f"shorter than its {cls.BODY.size}-byte layout", 8, "size")
            values.update(zip(cls.FIELDS, cls.BODY.unpack_from(body, 0)))
            pos = cls.BODY.size
        if cls.TAIL is not None:
            tail = body[pos:]
            values[cls.TAIL] = cstring(tail) if cls.TAIL_KIND == "cstring" else bytes(tail)
            if cls.TAIL_KIND == "cstring":
                values["_tail_len"] = len(tail)
        return values

    def _pack_body(self, ctx: "PackContext") -> bytes:
        out = b""
        if self.BODY is not None:
            out = self.BODY.pack(*(getattr(self, n) for n in self.FIELDS))
        if self.TAIL is not None:
            value = getattr(self, self.TAIL)
            if self.TAIL_KIND == "cstring":
                out += pack_cstring(value, getattr(self, "_tail_len", None))
            else:
                out += value
        return out

    def replace(self, **changes) -> "Record":
        """A copy with `changes` (frozen records are edited by copying)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields: bytes as hex, None kept, private fields left out."""
        d: dict[str, Any] = {"type": self.type_name, "time": self.time, "cpu": self.cpu,
                             "pid": self.pid, "tid": self.tid}
        for f in dataclasses.fields(self):
            if f.name.startswith("_") or f.name in ("offset", "attr_index", "sample_id"):
                continue
            d[f.name] = jsonable(getattr(self, f.name))
        if self.sample_id is not None:
            d["sample_id"] = {k: v for k, v in self.sample_id._asdict().items() if v is not None}
        return d


def jsonable(v):
    """A field value as JSON takes it (bytes as hex, tuples of records as lists of dicts);
    every record's to_dict(), SAMPLE's included, goes through it."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, tuple) and v and hasattr(v[0], "_asdict"):
        return [jsonable(x._asdict()) for x in v]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {k: jsonable(x) for k, x in dataclasses.asdict(v).items()}
    if hasattr(v, "_asdict"):
        return {k: jsonable(x) for k, x in v._asdict().items()}
    return v


class ParseContext:
    """What a body parser needs beyond its bytes: the attr and where it is, for errors."""

    __slots__ = ("file", "offset", "attr", "misc")

    def __init__(self, file: str | None, offset: int, attr: EventAttr | None, misc: int = 0):
        self.file = file
        self.offset = offset
        self.attr = attr
        self.misc = misc

    def error(self, message: str, rel: int = 0, field: str | None = None) -> FormatError:
        """A FormatError `rel` bytes into this record, naming the file and field."""
        return FormatError(message, file=self.file, offset=self.offset + rel, field=field)


class PackContext:
    """What packing a record needs beyond itself: the attr its trailer follows."""

    def __init__(self, attr: EventAttr | None):
        self.attr = attr


_KINDS: dict[int, type[Record]] = {}


def kind(cls):
    """Class decorator: this record class parses and packs its TYPE."""
    _KINDS[cls.TYPE] = cls
    return cls


def record_class(rtype: int) -> type[Record] | None:
    """The record class of a type; None for kinds read as RawRecord."""
    return _KINDS.get(rtype)


_layout = layouts.layout


# --- kernel records ---------------------------------------------------------------------

@kind
@dataclass(frozen=True, kw_only=True)
class MmapRecord(Record):
    """PERF_RECORD_MMAP: a mapping of a file (pid, address, length, page offset, name),
    the form before MMAP2."""

    TYPE = RecordType.MMAP
    BODY, FIELDS = layouts.MMAP
    TAIL = "filename"
    pid: int = 0
    tid: int = 0
    addr: int = 0
    len: int = 0
    pgoff: int = 0
    filename: str = ""
    _tail_len: int | None = field(default=None, compare=False, repr=False)


@kind
@dataclass(frozen=True, kw_only=True)
class LostRecord(Record):
    """PERF_RECORD_LOST: the ring was full and the kernel dropped `lost` records."""

    TYPE = RecordType.LOST
    BODY, FIELDS = layouts.LOST
    id: int = 0
    lost: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class CommRecord(Record):
    """PERF_RECORD_COMM: a task's command name, set at exec (misc COMM_EXEC) or by prctl."""

    TYPE = RecordType.COMM
    BODY, FIELDS = layouts.COMM
    TAIL = "comm"
    pid: int = 0
    tid: int = 0
    comm: str = ""
    _tail_len: int | None = field(default=None, compare=False, repr=False)


@kind
@dataclass(frozen=True, kw_only=True)
class ExitRecord(Record):
    """PERF_RECORD_EXIT: a task ended."""

    TYPE = RecordType.EXIT
    # The body's own timestamp; perf orders by the sample_id trailer's time (`.time`).
    BODY, FIELDS = layouts.TASK
    pid: int = 0
    tid: int = 0
    event_time: int = 0
    ppid: int = 0
    ptid: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class ForkRecord(ExitRecord):
    """PERF_RECORD_FORK: a task was created (pid and parent, tid and parent thread)."""

    TYPE = RecordType.FORK


@kind
@dataclass(frozen=True, kw_only=True)
class ThrottleRecord(Record):
    """PERF_RECORD_THROTTLE: the kernel throttled the event (too many samples a tick)."""

    TYPE = RecordType.THROTTLE
    BODY, FIELDS = _layout("QQQ", "event_time id stream_id")
    event_time: int = 0
    id: int = 0
    stream_id: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class UnthrottleRecord(ThrottleRecord):
    """PERF_RECORD_UNTHROTTLE: sampling resumed after a throttle."""

    TYPE = RecordType.UNTHROTTLE


@kind
@dataclass(frozen=True, kw_only=True)
class ReadRecord(Record):
    """PERF_RECORD_READ: an inherited counter's values at a task's exit (read_format)."""

    TYPE = RecordType.READ
    BODY, FIELDS = _layout("ii", "pid tid")
    pid: int = 0
    tid: int = 0
    values: Any = None  # ReadValues

    @classmethod
    def _parse_body(cls, body, ctx):
        d = super()._parse_body(body, ctx)
        d["values"], _ = parse_read_values(body, 8, ctx.attr.read_format if ctx.attr else 0, ctx)
        return d

    def _pack_body(self, ctx):
        return super()._pack_body(ctx) + pack_read_values(self.values,
                                                          ctx.attr.read_format if ctx.attr else 0)


# MMAP2's 24-byte union: maj, min, ino, ino_generation; or with MISC_MMAP_BUILD_ID a build
# id's size, two reserved bytes and the id (perf_event.h)
_MMAP2_INODE = struct.Struct("<IIQQ")
_MMAP2_BUILD_ID = struct.Struct("<BBH20s")


@kind
@dataclass(frozen=True, kw_only=True)
class Mmap2Record(Record):
    """MMAP2; with MISC_MMAP_BUILD_ID the maj/min/ino union holds a build id instead."""

    TYPE = RecordType.MMAP2
    BODY, FIELDS = layouts.MMAP2
    TAIL = "filename"
    pid: int = 0
    tid: int = 0
    addr: int = 0
    len: int = 0
    pgoff: int = 0
    maj: int = 0
    min: int = 0
    ino: int = 0
    ino_generation: int = 0
    build_id: bytes | None = None
    prot: int = 0
    flags: int = 0
    filename: str = ""
    _tail_len: int | None = field(default=None, compare=False, repr=False)
    _union: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def _parse_body(cls, body, ctx):
        d = super()._parse_body(body, ctx)
        u = d["_union"]
        if ctx.misc & MISC_MMAP_BUILD_ID:
            d["build_id"] = u[4:4 + min(u[0], 20)]
        else:
            d["maj"], d["min"], d["ino"], d["ino_generation"] = _MMAP2_INODE.unpack(u)
        return d

    def _pack_body(self, ctx):
        u = self._union
        if u is None:
            if self.build_id is not None:
                u = _MMAP2_BUILD_ID.pack(len(self.build_id), 0, 0, self.build_id)
            else:
                u = _MMAP2_INODE.pack(self.maj, self.min, self.ino, self.ino_generation)
        return Record._pack_body(dataclasses.replace(self, _union=u), ctx)


@kind
@dataclass(frozen=True, kw_only=True)
class AuxRecord(Record):
    """PERF_RECORD_AUX: new data in the AUX area (offset, size, truncated/overwrite flags)."""

    TYPE = RecordType.AUX
    BODY, FIELDS = _layout("QQQ", "aux_offset aux_size flags")
    aux_offset: int = 0
    aux_size: int = 0
    flags: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class ItraceStartRecord(Record):
    """PERF_RECORD_ITRACE_START: instruction tracing began in a task."""

    TYPE = RecordType.ITRACE_START
    BODY, FIELDS = _layout("ii", "pid tid")
    pid: int = 0
    tid: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class LostSamplesRecord(Record):
    """PERF_RECORD_LOST_SAMPLES: samples the PMU or the kernel dropped."""

    TYPE = RecordType.LOST_SAMPLES
    BODY, FIELDS = _layout("Q", "lost")
    lost: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class SwitchRecord(Record):
    """PERF_RECORD_SWITCH: the task was switched in or out (misc SWITCH_OUT)."""

    TYPE = RecordType.SWITCH


@kind
@dataclass(frozen=True, kw_only=True)
class SwitchCpuWideRecord(Record):
    """PERF_RECORD_SWITCH_CPU_WIDE: a switch seen by a CPU-wide event, with the other task."""

    TYPE = RecordType.SWITCH_CPU_WIDE
    BODY, FIELDS = _layout("ii", "next_prev_pid next_prev_tid")
    next_prev_pid: int = 0
    next_prev_tid: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class NamespacesRecord(Record):
    """PERF_RECORD_NAMESPACES: a task's namespaces as (device, inode) pairs."""

    TYPE = RecordType.NAMESPACES
    BODY, FIELDS = _layout("iiQ", "pid tid nr_namespaces")
    pid: int = 0
    tid: int = 0
    nr_namespaces: int = 0
    namespaces: tuple[tuple[int, int], ...] = ()  # (dev, inode) per namespace kind

    ENTRY = struct.Struct("<QQ")   # struct perf_ns_link_info {dev, ino}

    @classmethod
    def _parse_body(cls, body, ctx):
        d = super()._parse_body(body, ctx)
        n = d["nr_namespaces"]
        at, end = cls.BODY.size, cls.BODY.size + cls.ENTRY.size * n
        if end > len(body):
            raise ctx.error(f"{n} namespaces do not fit in the record", 8 + 8, "nr_namespaces")
        d["namespaces"] = tuple(cls.ENTRY.iter_unpack(body[at:end]))
        return d

    def _pack_body(self, ctx):
        return super()._pack_body(ctx) + b"".join(self.ENTRY.pack(*ns)
                                                  for ns in self.namespaces)


@kind
@dataclass(frozen=True, kw_only=True)
class KsymbolRecord(Record):
    """A kernel symbol (BPF program, trampoline, ...) registered or unregistered."""

    TYPE = RecordType.KSYMBOL
    BODY, FIELDS = layouts.KSYMBOL
    TAIL = "name"
    addr: int = 0
    len: int = 0
    ksym_type: int = 0
    flags: int = 0
    name: str = ""
    _tail_len: int | None = field(default=None, compare=False, repr=False)

    @property
    def unregister(self) -> bool:
        """True for the KSYMBOL that removes the symbol (PERF_RECORD_KSYMBOL_FLAGS_UNREGISTER)."""
        return bool(self.flags & KSYMBOL_FLAG_UNREGISTER)


@kind
@dataclass(frozen=True, kw_only=True)
class BpfEventRecord(Record):
    """PERF_RECORD_BPF_EVENT: a program loaded or unloaded, by id and tag."""

    TYPE = RecordType.BPF_EVENT
    BODY, FIELDS = layouts.BPF_EVENT
    event_type: int = 0
    flags: int = 0
    prog_id: int = 0
    tag: bytes = b"\0" * 8


@kind
@dataclass(frozen=True, kw_only=True)
class CgroupRecord(Record):
    """PERF_RECORD_CGROUP: a cgroup's id and path (5.7+)."""

    TYPE = RecordType.CGROUP
    BODY, FIELDS = _layout("Q", "cgroup_id")
    TAIL = "path"
    cgroup_id: int = 0
    path: str = ""
    _tail_len: int | None = field(default=None, compare=False, repr=False)


@kind
@dataclass(frozen=True, kw_only=True)
class TextPokeRecord(Record):
    """Kernel text at `addr` changed from `old_bytes` to `new_bytes` at `time`.  The
    lengths always follow the bytes."""

    TYPE = RecordType.TEXT_POKE
    BODY, FIELDS = layouts.TEXT_POKE
    old_len: int = 0
    new_len: int = 0
    addr: int = 0
    old_bytes: bytes = b""
    new_bytes: bytes = b""

    def __post_init__(self):
        object.__setattr__(self, "old_len", len(self.old_bytes))
        object.__setattr__(self, "new_len", len(self.new_bytes))

    @classmethod
    def _parse_body(cls, body, ctx):
        fixed = cls.BODY.size
        if len(body) < fixed:
            raise ctx.error(f"TEXT_POKE body shorter than {fixed} bytes", 8, "size")
        addr, old_len, new_len = cls.BODY.unpack_from(body, 0)
        if fixed + old_len + new_len > len(body):
            raise ctx.error(f"old_len {old_len} + new_len {new_len} overrun the record", 16,
                            "old_len")
        return {"addr": addr, "old_bytes": bytes(body[fixed:fixed + old_len]),
                "new_bytes": bytes(body[fixed + old_len:fixed + old_len + new_len])}

    def _pack_body(self, ctx):
        out = (self.BODY.pack(self.addr, len(self.old_bytes), len(self.new_bytes))
               + self.old_bytes + self.new_bytes)
        # the record ends u64-aligned after the 8-byte header
        return out + b"\0" * (align8(len(out)) - len(out))


@kind
@dataclass(frozen=True, kw_only=True)
class AuxOutputHwIdRecord(Record):
    """PERF_RECORD_AUX_OUTPUT_HW_ID: the hardware id of an AUX output event (5.16+)."""

    TYPE = RecordType.AUX_OUTPUT_HW_ID
    BODY, FIELDS = _layout("Q", "hw_id")
    hw_id: int = 0


# --- perf's own records -----------------------------------------------------------------

@kind
@dataclass(frozen=True, kw_only=True)
class HeaderAttrRecord(Record):
    """An event's attr and ids, as pipe-mode files carry them."""

    TYPE = RecordType.HEADER_ATTR
    attr: EventAttr = field(default_factory=EventAttr)
    ids: tuple[int, ...] = ()

    @classmethod
    def _parse_body(cls, body, ctx):
        attr = EventAttr.parse(body, 0, file=ctx.file)
        rest = body[attr.size:]
        return {"attr": attr, "ids": tuple(x for (x,) in struct.iter_unpack(
            "<Q", rest[:len(rest) // 8 * 8]))}

    def _pack_body(self, ctx):
        return self.attr.pack() + struct.pack(f"<{len(self.ids)}Q", *self.ids)

    def to_dict(self):
        """JSON-ready: the attr and its ids."""
        return {"type": self.type_name, "attr": self.attr.to_dict(), "ids": list(self.ids)}


@kind
@dataclass(frozen=True, kw_only=True)
class EventTypeRecord(Record):
    """PERF_RECORD_HEADER_EVENT_TYPE: an event id's name (old pipe-mode files)."""

    TYPE = RecordType.HEADER_EVENT_TYPE
    BODY, FIELDS = _layout("Q64s", "event_id _name")
    event_id: int = 0
    _name: bytes = field(default=b"\0" * 64, repr=False)

    @property
    def name(self) -> str:
        """The event's name."""
        return cstring(self._name)


@kind
@dataclass(frozen=True, kw_only=True)
class TracingDataRecord(Record):
    """HEADER_TRACING_DATA: `size` bytes of tracing data follow the record in the stream
    (outside header.size); the reader attaches them as `data`."""

    TYPE = RecordType.HEADER_TRACING_DATA
    BODY, FIELDS = layouts.TRACING_DATA
    size: int = 0
    data: bytes = b""

    def _pack_body(self, ctx):
        return self.BODY.pack(len(self.data))


@kind
@dataclass(frozen=True, kw_only=True)
class BuildIdRecord(Record):
    """PERF_RECORD_HEADER_BUILD_ID: a DSO's build-id, as perf wrote it."""

    TYPE = RecordType.HEADER_BUILD_ID
    BODY, FIELDS = _layout("i24s", "pid _build_id")
    TAIL = "filename"
    pid: int = 0
    _build_id: bytes = field(default=b"\0" * 24, repr=False)
    filename: str = ""
    _tail_len: int | None = field(default=None, compare=False, repr=False)

    @property
    def build_id(self) -> bytes:
        """The build id; newer perf stores its length in byte 20, older perf does not."""
        size = self._build_id[20]
        return self._build_id[:size] if 0 < size <= 20 else self._build_id[:20]


@kind
@dataclass(frozen=True, kw_only=True)
class FinishedRoundRecord(Record):
    """PERF_RECORD_FINISHED_ROUND: every record before it is older than every one after
    (perf sorts within a round)."""

    TYPE = RecordType.FINISHED_ROUND


@kind
@dataclass(frozen=True, kw_only=True)
class IdIndexRecord(Record):
    """PERF_RECORD_ID_INDEX: the CPU and thread of each event id."""

    TYPE = RecordType.ID_INDEX
    entries: tuple[tuple[int, int, int, int], ...] = ()  # (id, idx, cpu, tid)

    @classmethod
    def _parse_body(cls, body, ctx):
        return {"entries": _counted(body, ctx, "<QQQQ", "nr")}

    def _pack_body(self, ctx):
        return _pack_counted(self.entries, "<QQQQ")


def _counted(body, ctx, fmt: str, what: str, head: str = "<Q") -> tuple:
    """A u64 (or `head`) count followed by that many fixed-size entries, bounds-checked."""
    hs = struct.calcsize(head)
    if len(body) < hs:
        raise ctx.error("record too short for its count", 8, what)
    (nr,) = struct.unpack_from(head, body, 0)
    es = struct.calcsize(fmt)
    if hs + nr * es > len(body):
        raise ctx.error(f"{what} {nr} entries of {es} bytes overrun the {len(body)}-byte body",
                        8, what)
    return tuple(struct.iter_unpack(fmt, body[hs:hs + nr * es]))


def _pack_counted(entries, fmt: str, head: str = "<Q") -> bytes:
    return struct.pack(head, len(entries)) + b"".join(struct.pack(fmt, *e) for e in entries)


@kind
@dataclass(frozen=True, kw_only=True)
class AuxtraceInfoRecord(Record):
    """PERF_RECORD_AUXTRACE_INFO: the PMU-specific setup of an AUX trace."""

    TYPE = RecordType.AUXTRACE_INFO
    BODY, FIELDS = _layout("II", "auxtrace_type reserved")
    TAIL, TAIL_KIND = "priv", "bytes"
    auxtrace_type: int = 0
    reserved: int = 0
    priv: bytes = b""


@kind
@dataclass(frozen=True, kw_only=True)
class AuxtraceRecord(Record):
    """AUXTRACE: `size` bytes of trace data follow the record (outside header.size)."""

    TYPE = RecordType.AUXTRACE
    BODY, FIELDS = layouts.AUXTRACE
    tid: int = 0
    cpu: int = 0
    size: int = 0
    aux_offset: int = 0
    reference: int = 0
    idx: int = 0
    reserved: int = 0
    data: bytes = b""


@kind
@dataclass(frozen=True, kw_only=True)
class AuxtraceErrorRecord(Record):
    """PERF_RECORD_AUXTRACE_ERROR: an error decoding an AUX trace."""

    TYPE = RecordType.AUXTRACE_ERROR
    BODY, FIELDS = _layout("IIiiiIQ64s", "error_type code cpu pid tid fmt ip _msg")
    TAIL, TAIL_KIND = "extra", "bytes"  # time, machine_pid, vcpu in newer perf
    cpu: int = 0
    pid: int = 0
    tid: int = 0
    error_type: int = 0
    code: int = 0
    fmt: int = 0
    ip: int = 0
    _msg: bytes = field(default=b"\0" * 64, repr=False)
    extra: bytes = b""

    @property
    def msg(self) -> str:
        """The error's text."""
        return cstring(self._msg)


@kind
@dataclass(frozen=True, kw_only=True)
class ThreadMapRecord(Record):
    """PERF_RECORD_THREAD_MAP: the threads a session opened its events on."""

    TYPE = RecordType.THREAD_MAP
    entries: tuple[tuple[int, bytes], ...] = ()  # (pid, comm[16])

    @classmethod
    def _parse_body(cls, body, ctx):
        return {"entries": _counted(body, ctx, "<Q16s", "nr")}

    def _pack_body(self, ctx):
        return _pack_counted(self.entries, "<Q16s")


@kind
@dataclass(frozen=True, kw_only=True)
class CpuMapRecord(Record):
    """CPU_MAP: a u16 encoding type then its payload (cpu list, mask or range); kept
    decoded as a list of cpus where the encoding is known, and raw for exact rewrite."""

    TYPE = RecordType.CPU_MAP
    TAIL, TAIL_KIND = "data", "bytes"
    data: bytes = b""

    @property
    def cpus(self) -> list[int] | None:
        """The CPUs listed, decoded from any of the map's encodings."""
        from .cpumap import decode_cpu_map
        return decode_cpu_map(self.data)

    def to_dict(self):
        """JSON-ready, with the CPUs decoded."""
        return {"type": self.type_name, "cpus": self.cpus, "data": self.data.hex()}


@kind
@dataclass(frozen=True, kw_only=True)
class StatConfigRecord(Record):
    """PERF_RECORD_STAT_CONFIG: perf stat record's settings."""

    TYPE = RecordType.STAT_CONFIG
    entries: tuple[tuple[int, int], ...] = ()  # (tag, val)

    @classmethod
    def _parse_body(cls, body, ctx):
        return {"entries": _counted(body, ctx, "<QQ", "nr")}

    def _pack_body(self, ctx):
        return _pack_counted(self.entries, "<QQ")


@kind
@dataclass(frozen=True, kw_only=True)
class StatRecord(Record):
    """PERF_RECORD_STAT: one counter value of perf stat record."""

    TYPE = RecordType.STAT
    BODY, FIELDS = _layout("QIIQQQ", "id cpu thread val ena run")
    id: int = 0
    cpu: int = 0
    thread: int = 0
    val: int = 0
    ena: int = 0
    run: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class StatRoundRecord(Record):
    """PERF_RECORD_STAT_ROUND: the end of one interval of perf stat record."""

    TYPE = RecordType.STAT_ROUND
    BODY, FIELDS = _layout("QQ", "round_type time")
    time: int = 0
    round_type: int = 0


@kind
@dataclass(frozen=True, kw_only=True)
class EventUpdateRecord(Record):
    """PERF_RECORD_EVENT_UPDATE: an event's unit, scale, name or CPUs."""

    TYPE = RecordType.EVENT_UPDATE
    BODY, FIELDS = _layout("QQ", "update_type id")
    TAIL, TAIL_KIND = "data", "bytes"
    id: int = 0
    update_type: int = 0  # 0 unit, 1 scale, 2 name, 3 cpus
    data: bytes = b""


@kind
@dataclass(frozen=True, kw_only=True)
class TimeConvRecord(Record):
    """TIME_CONV: TSC to perf time; perf >= 5.12 appends cycles, mask and two caps bytes."""

    TYPE = RecordType.TIME_CONV
    BODY, FIELDS = _layout("QQQ", "time_shift time_mult time_zero")
    TAIL, TAIL_KIND = "extra", "bytes"
    time_shift: int = 0
    time_mult: int = 0
    time_zero: int = 0
    extra: bytes = b""

    @property
    def time_cycles(self) -> int | None:
        """The TSC value at time_zero; None where an older perf wrote the short record."""
        return struct.unpack_from("<Q", self.extra, 0)[0] if len(self.extra) >= 8 else None

    @property
    def time_mask(self) -> int | None:
        """The TSC mask; None where an older perf wrote the short record."""
        return struct.unpack_from("<Q", self.extra, 8)[0] if len(self.extra) >= 16 else None


@kind
@dataclass(frozen=True, kw_only=True)
class HeaderFeatureRecord(Record):
    """PERF_RECORD_HEADER_FEATURE: one header feature section, in pipe mode."""

    TYPE = RecordType.HEADER_FEATURE
    BODY, FIELDS = _layout("Q", "feat_id")
    TAIL, TAIL_KIND = "data", "bytes"
    feat_id: int = 0
    data: bytes = b""


@kind
@dataclass(frozen=True, kw_only=True)
class CompressedRecord(Record):
    """COMPRESSED: zstd-compressed bytes of further records (perf record -z)."""

    TYPE = RecordType.COMPRESSED
    TAIL, TAIL_KIND = "data", "bytes"
    data: bytes = b""

    def to_dict(self):
        """JSON-ready, the compressed bytes by their size only."""
        return {"type": self.type_name, "compressed_size": len(self.data)}


@kind
@dataclass(frozen=True, kw_only=True)
class FinishedInitRecord(Record):
    """perf's own is 8 bytes; textrace's stream chunks ride in its tail (stream.py)."""

    TYPE = RecordType.FINISHED_INIT
    TAIL, TAIL_KIND = "data", "bytes"
    data: bytes = b""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with textrace's stream chunk header when it is one."""
        from .stream import CHUNK, MAGIC
        if len(self.data) < CHUNK.size or self.data[:8] != MAGIC:
            return super().to_dict()
        from .private import Kind
        _m, kind, seq, index, count, n, crc, _z = CHUNK.unpack_from(self.data, 0)
        d = {"type": self.type_name, "time": None, "cpu": None, "pid": None, "tid": None}
        d["textrace"] = {"kind": Kind(kind).name if kind in Kind._value2member_map_ else kind,
                         "entry": seq, "chunk": index, "chunks": count, "len": n,
                         "crc32": crc}
        return d


@kind
@dataclass(frozen=True, kw_only=True)
class Compressed2Record(Record):
    """COMPRESSED2 (perf 6.16, struct perf_record_compressed2): header.size counts the
    padding to 8 bytes that `data` ends with; data_size only the zstd bytes."""

    TYPE = RecordType.COMPRESSED2
    BODY, FIELDS = layouts.COMPRESSED2
    TAIL, TAIL_KIND = "data", "bytes"
    data_size: int = 0
    data: bytes = b""   # the compressed bytes, then the padding

    def to_dict(self):
        """JSON-ready, the compressed bytes by their size only."""
        return {"type": self.type_name, "compressed_size": self.data_size}


BPF_METADATA_KEY_LEN = 64
BPF_METADATA_VALUE_LEN = 256
BPF_PROG_NAME_LEN = 512  # KSYM_NAME_LEN of tools/lib/perf/include/perf/event.h
_BPF_METADATA_ENTRY = struct.Struct(f"<{BPF_METADATA_KEY_LEN}s{BPF_METADATA_VALUE_LEN}s")


@kind
@dataclass(frozen=True, kw_only=True)
class BpfMetadataRecord(Record):
    """BPF_METADATA (perf 6.16, struct perf_record_bpf_metadata): the bpf_metadata_*
    variables of a program's .rodata as perf formats them (BTF data dump, compact), one
    record per JIT'd function: prog_name is that function's ksym name
    (bpf_prog_<tag>_<name>).  Keys lack the bpf_metadata_ prefix.  perf pads the record
    with id_hdr_size zero bytes, kept in `padding`."""

    TYPE = RecordType.BPF_METADATA
    BODY, FIELDS = _layout(f"{BPF_PROG_NAME_LEN}sQ", "_prog_name nr_entries")
    _prog_name: bytes = field(default=b"\0" * BPF_PROG_NAME_LEN, repr=False)
    nr_entries: int = 0
    entries: tuple[tuple[str, str], ...] = ()   # (key, value)
    padding: bytes = b""

    @property
    def prog_name(self) -> str:
        """The program's name."""
        return cstring(self._prog_name)

    @property
    def metadata(self) -> dict[str, str]:
        """The program's bpf_metadata_* variables, name to value."""
        return dict(self.entries)

    @classmethod
    def _parse_body(cls, body, ctx):
        values = super()._parse_body(body, ctx)
        pos, nr = cls.BODY.size, values["nr_entries"]
        size = _BPF_METADATA_ENTRY.size
        if nr > (len(body) - pos) // size:
            raise ctx.error(f"BPF_METADATA nr_entries {nr} of {size} bytes overrun the "
                            f"{len(body)}-byte body", 8 + BPF_PROG_NAME_LEN, "nr_entries")
        values["entries"] = tuple((cstring(k), cstring(v)) for k, v in
                                  _BPF_METADATA_ENTRY.iter_unpack(body[pos:pos + nr * size]))
        values["padding"] = bytes(body[pos + nr * size:])
        return values

    def _pack_body(self, ctx):
        return (self.BODY.pack(self._prog_name, len(self.entries))
                + b"".join(_BPF_METADATA_ENTRY.pack(k.encode(), v.encode())
                           for k, v in self.entries) + self.padding)

    def to_dict(self):
        """JSON-ready, with the metadata as an object."""
        d = super().to_dict()
        d["prog_name"] = self.prog_name
        d["entries"] = self.metadata
        d.pop("padding")
        return d


@dataclass(frozen=True, kw_only=True)
class _SchedstatRecord(Record):
    """SCHEDSTAT_CPU/DOMAIN (perf sched stats, struct perf_record_schedstat_*): one
    /proc/schedstat line as perf read it.  The counters' layout depends on `version` (the
    schedstat version, 15..17: tools/lib/perf/include/perf/schedstat-v*.h) and is kept as
    bytes."""

    BODY, FIELDS = _layout("QIHH", "timestamp cpu version _u16")
    TAIL, TAIL_KIND = "counters", "bytes"
    timestamp: int = 0
    cpu: int = 0       # type: ignore[assignment]
    version: int = 0
    _u16: int = 0      # CPU: padding; DOMAIN: the domain number
    counters: bytes = b""


@kind
@dataclass(frozen=True, kw_only=True)
class SchedstatCpuRecord(_SchedstatRecord):
    """PERF_RECORD_SCHEDSTAT_CPU: a CPU's /proc/schedstat counters (perf sched stats)."""

    TYPE = RecordType.SCHEDSTAT_CPU


@kind
@dataclass(frozen=True, kw_only=True)
class SchedstatDomainRecord(_SchedstatRecord):
    """PERF_RECORD_SCHEDSTAT_DOMAIN: a scheduling domain's counters (perf sched stats)."""

    TYPE = RecordType.SCHEDSTAT_DOMAIN

    @property
    def domain(self) -> int:
        """The domain's number."""
        return self._u16


@dataclass(frozen=True, kw_only=True)
class RawRecord(Record):
    """A record of a kind this version does not know: kept whole, never dropped."""

    raw_type: int = 0
    body: bytes = b""

    @property
    def type(self) -> int:
        """The record type as found in the file."""
        return self.raw_type

    def _pack_body(self, ctx):
        return self.body


def pack_header(rtype: int, misc: int, size: int) -> bytes:
    """The 8-byte perf_event_header."""
    return HEADER.pack(rtype, misc, size)

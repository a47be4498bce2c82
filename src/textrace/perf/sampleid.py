"""The sample_id_all trailer of kernel records, the SAMPLE body's field order, and where an
event id sits in a record.

Kept apart from the record classes so that bulk readers can use it without them.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import NamedTuple

from .abi import SampleType as S
from .attr import EventAttr

U64 = struct.Struct("<Q")
U32x2 = struct.Struct("<II")
I32x2 = struct.Struct("<ii")  # pid, tid (pid_t)


class SampleId(NamedTuple):
    """The sample_id_all trailer of a kernel record; fields the attr does not ask for are None."""

    pid: int | None = None
    tid: int | None = None
    time: int | None = None
    id: int | None = None
    stream_id: int | None = None
    cpu: int | None = None


# The trailer, declared once for reading and writing: the sample_type bit, the SampleId
# fields it fills (None: the cpu word's reserved half), and its layout, in kernel order.
# IDENTIFIER repeats the id at a fixed place from the end.
_TRAILER = ((S.TID, ("pid", "tid"), I32x2), (S.TIME, ("time",), U64), (S.ID, ("id",), U64),
            (S.STREAM_ID, ("stream_id",), U64), (S.CPU, ("cpu", None), U32x2),
            (S.IDENTIFIER, ("id",), U64))


@lru_cache(maxsize=None)
def _trailer_layout(sample_type: int, sample_id_all: bool) -> tuple[int, struct.Struct,
                                                                     tuple]:
    """The trailer of one attr as one struct, from _TRAILER: (size, layout, the SampleId
    field of each value, None for a reserved half).  Cached: a recording has a few attrs
    and a kernel record each (10k program records for 5000 programs)."""
    if not sample_id_all:
        return 0, struct.Struct("<"), ()
    fmt, names = "<", []
    for bit, fields, layout in _TRAILER:
        if sample_type & bit:
            fmt += layout.format.lstrip("<")
            names.extend(fields)
    layout = struct.Struct(fmt)
    return layout.size, layout, tuple(names)


def trailer_layout(attr: EventAttr) -> tuple[int, struct.Struct, tuple]:
    """(bytes, layout, the SampleId field of each value or None) of this attr's trailer."""
    return _trailer_layout(int(attr.sample_type), bool(attr.sample_id_all))


def id_trailer_size(attr: EventAttr) -> int:
    """Bytes of sample_id trailer a kernel record of this attr ends with."""
    return _trailer_layout(int(attr.sample_type), bool(attr.sample_id_all))[0]


def parse_sample_id(buf, end: int, attr: EventAttr) -> SampleId:
    """Read the trailer that ends at `end` (caller checked it fits)."""
    size, layout, names = _trailer_layout(int(attr.sample_type), bool(attr.sample_id_all))
    fields: dict[str, int] = {}
    for name, value in zip(names, layout.unpack_from(buf, end - size)):
        if name is not None:
            fields[name] = value      # IDENTIFIER's id, last, is the same as ID's
    return SampleId(**fields)


def pack_sample_id(sid: SampleId | None, attr: EventAttr) -> bytes:
    """The trailer for a non-SAMPLE record of this attr (_TRAILER's layout); empty without
    sample_id_all, zeros for fields `sid` lacks."""
    if not attr.sample_id_all:
        return b""
    sid = sid or SampleId()
    return b"".join(layout.pack(*((getattr(sid, n) or 0) if n else 0 for n in names))
                    for bit, names, layout in _TRAILER if attr.sample_type & bit)


@lru_cache(maxsize=None)
def _trailer_back(sample_type: int, sample_id_all: bool, name: str) -> int:
    """Bytes from a record's end back to the trailer's field `name`, 0 for none."""
    if not sample_id_all:
        return 0
    size, pos = _trailer_layout(sample_type, sample_id_all)[0], 0
    for bit, fields, layout in _TRAILER:
        if sample_type & bit:
            if name in fields:   # the halves of a two-value word are of one width
                return size - pos - fields.index(name) * layout.size // len(fields)
            pos += layout.size
    return 0


def trailer_time_back(attr: EventAttr) -> int:
    """Bytes from a kernel record's end back to its trailer's time (ns), 0 when it has
    none: the recorder's way to a record's time without decoding the trailer."""
    return _trailer_back(int(attr.sample_type), bool(attr.sample_id_all), "time")


# The SAMPLE body, declared once for parse_sample, pack_sample and the bulk reader, in the
# kernel's order (perf_output_sample, kernel/events/core.c): the sample_type bit, the name
# a FormatError gives it, the SampleRecord fields it fills (None: the cpu word's reserved
# half), and its layout; None for a part of varying length, which sample.py reads and
# writes by that name.
SAMPLE_BODY: tuple[tuple[int, str, tuple, struct.Struct | None], ...] = (
    (S.IDENTIFIER, "identifier", ("id",), U64),
    (S.IP, "ip", ("ip",), U64),
    (S.TID, "pid/tid", ("pid", "tid"), I32x2),
    (S.TIME, "time", ("time",), U64),
    (S.ADDR, "addr", ("addr",), U64),
    (S.ID, "id", ("id",), U64),
    (S.STREAM_ID, "stream_id", ("stream_id",), U64),
    (S.CPU, "cpu", ("cpu", None), U32x2),
    (S.PERIOD, "period", ("period",), U64),
    (S.READ, "read", ("read",), None),
    (S.CALLCHAIN, "callchain", ("callchain",), None),
    (S.RAW, "raw", ("raw",), None),
    (S.BRANCH_STACK, "branch_stack", ("branch_hw_idx", "branch_stack"), None),
    (S.REGS_USER, "regs_user", ("regs_user",), None),
    (S.STACK_USER, "stack_user", ("stack_user", "stack_user_dyn_size"), None),
    (S.WEIGHT | S.WEIGHT_STRUCT, "weight", ("weight",), U64),
    (S.DATA_SRC, "data_src", ("data_src",), U64),
    (S.TRANSACTION, "transaction", ("transaction",), U64),
    (S.REGS_INTR, "regs_intr", ("regs_intr",), None),
    (S.PHYS_ADDR, "phys_addr", ("phys_addr",), U64),
    (S.CGROUP, "cgroup", ("cgroup",), U64),
    (S.DATA_PAGE_SIZE, "data_page_size", ("data_page_size",), U64),
    (S.CODE_PAGE_SIZE, "code_page_size", ("code_page_size",), U64),
    (S.AUX, "aux", ("aux",), None),
)


@lru_cache(maxsize=None)
def sample_layout(sample_type: int) -> tuple[tuple[int, str, tuple, struct.Struct | None],
                                             ...]:
    """The SAMPLE_BODY entries a sample of this sample_type has, in order.  Cached: a
    recording has a few sample types and up to millions of samples."""
    return tuple(entry for entry in SAMPLE_BODY if sample_type & entry[0])


@lru_cache(maxsize=None)
def sample_offset(sample_type: int, bit: int) -> int | None:
    """Byte offset in a SAMPLE body of the field `bit`, or None when absent or after a
    part of varying length (then it has no fixed place)."""
    pos = 0
    for field_bit, _label, _names, layout in sample_layout(sample_type):
        if field_bit == bit:
            return pos
        if layout is None:
            return None
        pos += layout.size
    return None


def sample_id_position(attr: EventAttr) -> int | None:
    """Byte offset of the event id inside a SAMPLE body, or None (perf's id_pos)."""
    st = int(attr.sample_type)
    if st & S.IDENTIFIER:
        return 0
    return sample_offset(st, S.ID)


def trailer_id_position(attr: EventAttr) -> int | None:
    """Offset of the event id counted back from a kernel record's end (perf's is_pos)."""
    st = attr.sample_type
    if not attr.sample_id_all:
        return None
    if st & S.IDENTIFIER:
        return 8
    if not st & S.ID:
        return None
    return 8 * (1 + sum(1 for f in (S.STREAM_ID, S.CPU) if st & f))

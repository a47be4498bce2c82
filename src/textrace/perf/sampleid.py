"""The sample_id_all trailer of kernel records, and where an event id sits in a record.

Kept apart from the record classes so that bulk readers can use it without them.
"""

from __future__ import annotations

import struct
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


_ID_FIELDS = (S.TID, S.TIME, S.ID, S.STREAM_ID, S.CPU, S.IDENTIFIER)


def id_trailer_size(attr: EventAttr) -> int:
    """Bytes of sample_id trailer a kernel record of this attr ends with."""
    if not attr.sample_id_all:
        return 0
    return 8 * sum(1 for f in _ID_FIELDS if attr.sample_type & f)


def parse_sample_id(buf, end: int, attr: EventAttr) -> SampleId:
    """Read the trailer that ends at `end` (caller checked it fits)."""
    st = attr.sample_type
    pos = end - id_trailer_size(attr)
    pid = tid = time = sid = stream = cpu = None
    if st & S.TID:
        pid, tid = I32x2.unpack_from(buf, pos)
        pos += 8
    if st & S.TIME:
        time = U64.unpack_from(buf, pos)[0]
        pos += 8
    if st & S.ID:
        sid = U64.unpack_from(buf, pos)[0]
        pos += 8
    if st & S.STREAM_ID:
        stream = U64.unpack_from(buf, pos)[0]
        pos += 8
    if st & S.CPU:
        cpu = U32x2.unpack_from(buf, pos)[0]
        pos += 8
    if st & S.IDENTIFIER:
        sid = U64.unpack_from(buf, pos)[0]
    return SampleId(pid, tid, time, sid, stream, cpu)


def pack_sample_id(sid: SampleId | None, attr: EventAttr) -> bytes:
    if not attr.sample_id_all:
        return b""
    sid = sid or SampleId()
    st = attr.sample_type
    out = b""
    if st & S.TID:
        out += I32x2.pack(sid.pid or 0, sid.tid or 0)
    if st & S.TIME:
        out += U64.pack(sid.time or 0)
    if st & S.ID:
        out += U64.pack(sid.id or 0)
    if st & S.STREAM_ID:
        out += U64.pack(sid.stream_id or 0)
    if st & S.CPU:
        out += U32x2.pack(sid.cpu or 0, 0)
    if st & S.IDENTIFIER:
        out += U64.pack(sid.id or 0)
    return out


def sample_id_position(attr: EventAttr) -> int | None:
    """Byte offset of the event id inside a SAMPLE body, or None (perf's id_pos)."""
    st = attr.sample_type
    if st & S.IDENTIFIER:
        return 0
    if not st & S.ID:
        return None
    return 8 * sum(1 for f in (S.IP, S.TID, S.TIME, S.ADDR) if st & f)


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

"""struct read_format (PERF_FORMAT_*), read and written for both the READ record and a
SAMPLE's read field, and the bounded cursor that reads record bodies.

Below records.py and sample.py so that both use it without importing each other.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .abi import ReadFormat
from .sampleid import I32x2, U32x2, U64


class ReadEntry(NamedTuple):
    """One counter's value, with its id and lost count when read_format asks for them."""

    value: int
    id: int | None = None
    lost: int | None = None


class ReadValues(NamedTuple):
    """struct read_format: one entry, or a group's entries (PERF_FORMAT_GROUP)."""

    time_enabled: int | None
    time_running: int | None
    entries: tuple[ReadEntry, ...]


class BodyCursor:
    """Reads u64/u32 fields from a record body (a SAMPLE's, a READ's values), with bounds
    that name the field.  `ctx`: the records.ParseContext that turns a short body into a
    FormatError, or None for a ValueError."""

    __slots__ = ("buf", "pos", "ctx")

    def __init__(self, buf, ctx):
        self.buf = buf
        self.pos = 0
        self.ctx = ctx

    def need(self, n: int, field: str):
        """Fail, naming `field`, unless n more bytes are left."""
        if n < 0 or self.pos + n > len(self.buf):
            msg = f"{field} needs {n} bytes, {len(self.buf) - self.pos} left in the record"
            if self.ctx is None:
                raise ValueError(msg)
            raise self.ctx.error(msg, 8 + self.pos, field)

    def i32x2(self, field: str) -> tuple[int, int]:
        """Two s32 (pid, tid as the kernel stores them)."""
        self.need(8, field)
        v = I32x2.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def u64(self, field: str) -> int:
        """One u64."""
        self.need(8, field)
        v = U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def u32x2(self, field: str) -> tuple[int, int]:
        """Two u32 (cpu and res)."""
        self.need(8, field)
        v = U32x2.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def take(self, n: int, field: str) -> bytes:
        """n raw bytes."""
        self.need(n, field)
        v = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return v

    def u64s(self, n: int, field: str) -> tuple[int, ...]:
        """n u64 (a callchain's ips, a branch stack's words)."""
        self.need(8 * n, field)
        v = struct.unpack_from(f"<{n}Q", self.buf, self.pos)
        self.pos += 8 * n
        return v


def read_values(cur: BodyCursor, read_format: int) -> ReadValues:
    """The read_format fields at the cursor (a SAMPLE's read field)."""
    rf = read_format
    if rf & ReadFormat.GROUP:
        nr = cur.u64("read.nr")
        enabled = cur.u64("read.time_enabled") if rf & ReadFormat.TOTAL_TIME_ENABLED else None
        running = cur.u64("read.time_running") if rf & ReadFormat.TOTAL_TIME_RUNNING else None
        per = 1 + bool(rf & ReadFormat.ID) + bool(rf & ReadFormat.LOST)
        cur.need(8 * per * nr, "read.nr")
        entries = tuple(ReadEntry(cur.u64("read.value"),
                                  cur.u64("read.id") if rf & ReadFormat.ID else None,
                                  cur.u64("read.lost") if rf & ReadFormat.LOST else None)
                        for _ in range(nr))
        return ReadValues(enabled, running, entries)
    value = cur.u64("read.value")
    enabled = cur.u64("read.time_enabled") if rf & ReadFormat.TOTAL_TIME_ENABLED else None
    running = cur.u64("read.time_running") if rf & ReadFormat.TOTAL_TIME_RUNNING else None
    rid = cur.u64("read.id") if rf & ReadFormat.ID else None
    lost = cur.u64("read.lost") if rf & ReadFormat.LOST else None
    return ReadValues(enabled, running, (ReadEntry(value, rid, lost),))


def parse_read_values(buf, pos: int, read_format: int, ctx) -> tuple[ReadValues, int]:
    """struct read_format at buf[pos:], and the position after it."""
    cur = BodyCursor(memoryview(buf)[pos:], ctx)
    v = read_values(cur, read_format)
    return v, pos + cur.pos


def pack_read_values(v: ReadValues, read_format: int) -> bytes:
    """struct read_format as read_values() takes it."""
    rf = read_format
    out = []
    if rf & ReadFormat.GROUP:
        out.append(len(v.entries))
    else:
        out.append(v.entries[0].value)
    if rf & ReadFormat.TOTAL_TIME_ENABLED:
        out.append(v.time_enabled)
    if rf & ReadFormat.TOTAL_TIME_RUNNING:
        out.append(v.time_running)
    if rf & ReadFormat.GROUP:
        for e in v.entries:
            out.append(e.value)
            if rf & ReadFormat.ID:
                out.append(e.id)
            if rf & ReadFormat.LOST:
                out.append(e.lost)
    else:
        if rf & ReadFormat.ID:
            out.append(v.entries[0].id)
        if rf & ReadFormat.LOST:
            out.append(v.entries[0].lost)
    return struct.pack(f"<{len(out)}Q", *out)

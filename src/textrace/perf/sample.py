"""SAMPLE records and the sample_id_all trailer, laid out by an attr's sample_type.

The order of fields is fixed by the kernel (perf_output_sample); each field is declared once
in sampleid.SAMPLE_BODY, walked by `parse_sample` and `pack_sample` (and the bulk reader);
the parts of varying length are read and written here by their name in it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from .abi import BRANCH_SAMPLE_HW_INDEX, RecordType
from .attr import EventAttr
from .read_format import BodyCursor, ReadValues, pack_read_values, read_values
from .records import ParseContext, Record, jsonable, kind

from .sampleid import U64, sample_layout

RAW_SIZE = struct.Struct("<I")           # PERF_SAMPLE_RAW's u32 size
BRANCH_ENTRY = struct.Struct("<QQQ")     # struct perf_branch_entry {from, to, flags}


class BranchEntry(NamedTuple):
    """struct perf_branch_entry: a taken branch's from and to ips and its flags."""

    from_ip: int
    to_ip: int
    flags: int


class Regs(NamedTuple):
    """Sampled registers: the ABI, and the values of the registers the mask names."""

    abi: int
    regs: tuple[int, ...]


@kind
@dataclass(frozen=True, kw_only=True)
class SampleRecord(Record):
    """One PERF_RECORD_SAMPLE.  Fields the attr does not ask for are None."""

    TYPE = RecordType.SAMPLE
    ip: int | None = None
    pid: int | None = None
    tid: int | None = None
    time: int | None = None
    addr: int | None = None
    id: int | None = None
    stream_id: int | None = None
    cpu: int | None = None
    period: int | None = None
    read: ReadValues | None = None
    callchain: tuple[int, ...] | None = None
    raw: bytes | None = None
    branch_hw_idx: int | None = None
    branch_stack: tuple[BranchEntry, ...] | None = None
    regs_user: Regs | None = None
    stack_user: bytes | None = None
    stack_user_dyn_size: int | None = None
    weight: int | None = None
    data_src: int | None = None
    transaction: int | None = None
    regs_intr: Regs | None = None
    phys_addr: int | None = None
    cgroup: int | None = None
    data_page_size: int | None = None
    code_page_size: int | None = None
    aux: bytes | None = None

    @classmethod
    def _parse_body(cls, body, ctx):
        return parse_sample(body, ctx.attr, ctx)

    def _pack_body(self, ctx):
        return pack_sample(self, ctx.attr)

    def to_dict(self):
        """JSON-ready, only the fields the sample has."""
        d = {"type": "SAMPLE"}
        for name in _DICT_ORDER:
            v = getattr(self, name)
            if v is not None:
                d[name] = jsonable(v)
        d["misc"] = self.misc
        return d


_DICT_ORDER = ("time", "cpu", "pid", "tid", "ip", "addr", "id", "stream_id", "period", "read",
               "callchain", "raw", "branch_hw_idx", "branch_stack", "regs_user", "stack_user",
               "stack_user_dyn_size", "weight", "data_src", "transaction", "regs_intr",
               "phys_addr", "cgroup", "data_page_size", "code_page_size", "aux")


def _regs(cur: BodyCursor, mask: int, field: str) -> Regs:
    abi = cur.u64(f"{field}.abi")
    if abi == 0:
        return Regs(0, ())
    return Regs(abi, cur.u64s(mask.bit_count(), f"{field}.regs"))


def _parse_callchain(cur: BodyCursor, attr: EventAttr, d: dict) -> None:
    nr = cur.u64("callchain.nr")
    d["callchain"] = cur.u64s(nr, "callchain.nr")


def _parse_raw(cur: BodyCursor, attr: EventAttr, d: dict) -> None:
    cur.need(RAW_SIZE.size, "raw.size")
    (size,) = RAW_SIZE.unpack_from(cur.buf, cur.pos)
    cur.pos += RAW_SIZE.size
    d["raw"] = cur.take(size, "raw.size")


def _parse_branch_stack(cur: BodyCursor, attr: EventAttr, d: dict) -> None:
    nr = cur.u64("branch_stack.nr")
    if attr.branch_sample_type & BRANCH_SAMPLE_HW_INDEX:
        d["branch_hw_idx"] = cur.u64("branch_stack.hw_idx")
    cur.need(BRANCH_ENTRY.size * nr, "branch_stack.nr")
    flat = cur.u64s(3 * nr, "branch_stack")
    d["branch_stack"] = tuple(BranchEntry(*flat[i:i + 3]) for i in range(0, 3 * nr, 3))


def _parse_stack_user(cur: BodyCursor, attr: EventAttr, d: dict) -> None:
    size = cur.u64("stack_user.size")
    d["stack_user"] = cur.take(size, "stack_user.size")
    if size:
        d["stack_user_dyn_size"] = cur.u64("stack_user.dyn_size")


def _parse_aux(cur: BodyCursor, attr: EventAttr, d: dict) -> None:
    size = cur.u64("aux.size")
    d["aux"] = cur.take(size, "aux.size")


# The parts of varying length, by their SAMPLE_BODY name.
_PARSE_PART = {
    "read": lambda cur, attr, d: d.__setitem__("read", read_values(cur, attr.read_format)),
    "callchain": _parse_callchain,
    "raw": _parse_raw,
    "branch_stack": _parse_branch_stack,
    "regs_user": lambda cur, attr, d: d.__setitem__(
        "regs_user", _regs(cur, attr.sample_regs_user, "regs_user")),
    "stack_user": _parse_stack_user,
    "regs_intr": lambda cur, attr, d: d.__setitem__(
        "regs_intr", _regs(cur, attr.sample_regs_intr, "regs_intr")),
    "aux": _parse_aux,
}


def parse_sample(body, attr: EventAttr, ctx: ParseContext | None) -> dict:
    """Decode a SAMPLE body (the bytes after the 8-byte header) as `attr` lays it out."""
    cur = BodyCursor(body, ctx)
    d: dict = {}
    for _bit, label, names, layout in sample_layout(int(attr.sample_type)):
        if layout is None:
            _PARSE_PART[label](cur, attr, d)
            continue
        cur.need(layout.size, label)
        values = layout.unpack_from(body, cur.pos)
        cur.pos += layout.size
        for name, value in zip(names, values):
            if name is not None:
                d[name] = value
    return d


def _pack_regs(r: Regs | None) -> bytes:
    r = r or Regs(0, ())
    return U64.pack(r.abi) + struct.pack(f"<{len(r.regs)}Q", *r.regs)


def _pack_callchain(s: SampleRecord, attr: EventAttr) -> bytes:
    cc = s.callchain or ()
    return struct.pack(f"<{len(cc) + 1}Q", len(cc), *cc)


def _pack_raw(s: SampleRecord, attr: EventAttr) -> bytes:
    raw = s.raw or b""
    return RAW_SIZE.pack(len(raw)) + raw


def _pack_branch_stack(s: SampleRecord, attr: EventAttr) -> bytes:
    bs = s.branch_stack or ()
    out = [U64.pack(len(bs))]
    if attr.branch_sample_type & BRANCH_SAMPLE_HW_INDEX:
        out.append(U64.pack(s.branch_hw_idx or 0))
    out.extend(BRANCH_ENTRY.pack(*e) for e in bs)
    return b"".join(out)


def _pack_stack_user(s: SampleRecord, attr: EventAttr) -> bytes:
    stack = s.stack_user or b""
    return U64.pack(len(stack)) + stack + (U64.pack(s.stack_user_dyn_size or 0) if stack
                                           else b"")


def _pack_aux(s: SampleRecord, attr: EventAttr) -> bytes:
    aux = s.aux or b""
    return U64.pack(len(aux)) + aux


_PACK_PART = {
    "read": lambda s, attr: pack_read_values(s.read, attr.read_format),
    "callchain": _pack_callchain,
    "raw": _pack_raw,
    "branch_stack": _pack_branch_stack,
    "regs_user": lambda s, attr: _pack_regs(s.regs_user),
    "stack_user": _pack_stack_user,
    "regs_intr": lambda s, attr: _pack_regs(s.regs_intr),
    "aux": _pack_aux,
}


def pack_sample(s: SampleRecord, attr: EventAttr) -> bytes:
    """A SAMPLE body laid out as `attr` says (perf_output_sample's order)."""
    q: list[bytes] = []
    for _bit, label, names, layout in sample_layout(int(attr.sample_type)):
        if layout is None:
            q.append(_PACK_PART[label](s, attr))
        else:
            q.append(layout.pack(*((getattr(s, n) or 0) if n else 0 for n in names)))
    return b"".join(q)

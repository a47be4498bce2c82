"""SAMPLE records and the sample_id_all trailer, laid out by an attr's sample_type.

The order of fields is fixed by the kernel (perf_output_sample); each present field is
declared once in `_SAMPLE_FIELDS`, read by `parse_sample` and written by `pack_sample`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from .abi import BRANCH_SAMPLE_HW_INDEX, RecordType, SampleType as S
from .attr import EventAttr
from .read_format import BodyCursor, ReadValues, pack_read_values, read_values
from .records import ParseContext, Record, jsonable, kind
from .sampleid import I32x2, U32x2, U64


class BranchEntry(NamedTuple):
    from_ip: int
    to_ip: int
    flags: int


class Regs(NamedTuple):
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


def parse_sample(body, attr: EventAttr, ctx: ParseContext | None) -> dict:
    """Decode a SAMPLE body (the bytes after the 8-byte header) as `attr` lays it out."""
    st = attr.sample_type
    cur = BodyCursor(body, ctx)
    d: dict = {}
    if st & S.IDENTIFIER:
        d["id"] = cur.u64("identifier")
    if st & S.IP:
        d["ip"] = cur.u64("ip")
    if st & S.TID:
        d["pid"], d["tid"] = cur.i32x2("pid/tid")
    if st & S.TIME:
        d["time"] = cur.u64("time")
    if st & S.ADDR:
        d["addr"] = cur.u64("addr")
    if st & S.ID:
        d["id"] = cur.u64("id")
    if st & S.STREAM_ID:
        d["stream_id"] = cur.u64("stream_id")
    if st & S.CPU:
        d["cpu"] = cur.u32x2("cpu")[0]
    if st & S.PERIOD:
        d["period"] = cur.u64("period")
    if st & S.READ:
        d["read"] = read_values(cur, attr.read_format)
    if st & S.CALLCHAIN:
        nr = cur.u64("callchain.nr")
        d["callchain"] = cur.u64s(nr, "callchain.nr")
    if st & S.RAW:
        cur.need(4, "raw.size")
        (size,) = struct.unpack_from("<I", body, cur.pos)
        cur.pos += 4
        d["raw"] = cur.take(size, "raw.size")
    if st & S.BRANCH_STACK:
        nr = cur.u64("branch_stack.nr")
        if attr.branch_sample_type & BRANCH_SAMPLE_HW_INDEX:
            d["branch_hw_idx"] = cur.u64("branch_stack.hw_idx")
        cur.need(24 * nr, "branch_stack.nr")
        flat = cur.u64s(3 * nr, "branch_stack")
        d["branch_stack"] = tuple(BranchEntry(*flat[i:i + 3]) for i in range(0, 3 * nr, 3))
    if st & S.REGS_USER:
        d["regs_user"] = _regs(cur, attr.sample_regs_user, "regs_user")
    if st & S.STACK_USER:
        size = cur.u64("stack_user.size")
        d["stack_user"] = cur.take(size, "stack_user.size")
        if size:
            d["stack_user_dyn_size"] = cur.u64("stack_user.dyn_size")
    if st & (S.WEIGHT | S.WEIGHT_STRUCT):
        d["weight"] = cur.u64("weight")
    if st & S.DATA_SRC:
        d["data_src"] = cur.u64("data_src")
    if st & S.TRANSACTION:
        d["transaction"] = cur.u64("transaction")
    if st & S.REGS_INTR:
        d["regs_intr"] = _regs(cur, attr.sample_regs_intr, "regs_intr")
    if st & S.PHYS_ADDR:
        d["phys_addr"] = cur.u64("phys_addr")
    if st & S.CGROUP:
        d["cgroup"] = cur.u64("cgroup")
    if st & S.DATA_PAGE_SIZE:
        d["data_page_size"] = cur.u64("data_page_size")
    if st & S.CODE_PAGE_SIZE:
        d["code_page_size"] = cur.u64("code_page_size")
    if st & S.AUX:
        size = cur.u64("aux.size")
        d["aux"] = cur.take(size, "aux.size")
    return d


def pack_sample(s: SampleRecord, attr: EventAttr) -> bytes:
    st = attr.sample_type
    q: list[bytes] = []
    u64 = U64.pack

    def regs(r: Regs | None) -> bytes:
        r = r or Regs(0, ())
        return u64(r.abi) + struct.pack(f"<{len(r.regs)}Q", *r.regs)

    if st & S.IDENTIFIER:
        q.append(u64(s.id or 0))
    if st & S.IP:
        q.append(u64(s.ip or 0))
    if st & S.TID:
        q.append(I32x2.pack(s.pid or 0, s.tid or 0))
    if st & S.TIME:
        q.append(u64(s.time or 0))
    if st & S.ADDR:
        q.append(u64(s.addr or 0))
    if st & S.ID:
        q.append(u64(s.id or 0))
    if st & S.STREAM_ID:
        q.append(u64(s.stream_id or 0))
    if st & S.CPU:
        q.append(U32x2.pack(s.cpu or 0, 0))
    if st & S.PERIOD:
        q.append(u64(s.period or 0))
    if st & S.READ:
        q.append(pack_read_values(s.read, attr.read_format))
    if st & S.CALLCHAIN:
        cc = s.callchain or ()
        q.append(struct.pack(f"<{len(cc) + 1}Q", len(cc), *cc))
    if st & S.RAW:
        raw = s.raw or b""
        q.append(struct.pack("<I", len(raw)) + raw)
    if st & S.BRANCH_STACK:
        bs = s.branch_stack or ()
        q.append(u64(len(bs)))
        if attr.branch_sample_type & BRANCH_SAMPLE_HW_INDEX:
            q.append(u64(s.branch_hw_idx or 0))
        q.extend(struct.pack("<QQQ", *e) for e in bs)
    if st & S.REGS_USER:
        q.append(regs(s.regs_user))
    if st & S.STACK_USER:
        stack = s.stack_user or b""
        q.append(u64(len(stack)) + stack)
        if stack:
            q.append(u64(s.stack_user_dyn_size or 0))
    if st & (S.WEIGHT | S.WEIGHT_STRUCT):
        q.append(u64(s.weight or 0))
    if st & S.DATA_SRC:
        q.append(u64(s.data_src or 0))
    if st & S.TRANSACTION:
        q.append(u64(s.transaction or 0))
    if st & S.REGS_INTR:
        q.append(regs(s.regs_intr))
    if st & S.PHYS_ADDR:
        q.append(u64(s.phys_addr or 0))
    if st & S.CGROUP:
        q.append(u64(s.cgroup or 0))
    if st & S.DATA_PAGE_SIZE:
        q.append(u64(s.data_page_size or 0))
    if st & S.CODE_PAGE_SIZE:
        q.append(u64(s.code_page_size or 0))
    if st & S.AUX:
        aux = s.aux or b""
        q.append(u64(len(aux)) + aux)
    return b"".join(q)

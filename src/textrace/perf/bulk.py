"""Bulk SAMPLE fields as numpy arrays, without a Python object per sample.

One pass locates SAMPLE records (a tight loop over record headers); every field at a fixed
offset is then gathered for all samples of an attr at once, and callchains are gathered
into one flat array with per-sample offsets.  Fields after the callchain (raw, branch
stack, registers, ...) are left to the per-record decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .abi import ReadFormat, RecordType, SampleType as S

_FIXED = ((S.IDENTIFIER, "id"), (S.IP, "ip"), (S.TID, "pid_tid"), (S.TIME, "time"),
          (S.ADDR, "addr"), (S.ID, "id"), (S.STREAM_ID, "stream_id"), (S.CPU, "cpu"),
          (S.PERIOD, "period"))


_PAYLOAD_OR_PACKED = np.array([RecordType.COMPRESSED, RecordType.AUXTRACE,
                               RecordType.HEADER_TRACING_DATA])


@dataclass
class SampleArrays:
    """Samples of a recording, one row per sample, in file order.

    `ip`, `time`, `addr`, `id`, `period`: uint64; `pid`, `tid`: int32; `cpu`: uint32;
    `misc`: uint16; `attr`: index of the sample's event.  A field the sample's attr does not
    carry is 0.  The callchain of sample i is `callchain[chain_start[i]:chain_start[i+1]]`
    (kernel virtual or user addresses, with PERF_CONTEXT_* markers as the kernel wrote them).
    """

    attr: np.ndarray
    misc: np.ndarray
    ip: np.ndarray
    pid: np.ndarray
    tid: np.ndarray
    time: np.ndarray
    addr: np.ndarray
    id: np.ndarray
    stream_id: np.ndarray
    cpu: np.ndarray
    period: np.ndarray
    chain_start: np.ndarray
    callchain: np.ndarray

    def __len__(self) -> int:
        return len(self.ip)

    def chain(self, i: int) -> np.ndarray:
        return self.callchain[self.chain_start[i]:self.chain_start[i + 1]]


class _Gather:
    """Reads little-endian u64s at byte offsets of one buffer: through a u64 view when
    every offset is 8-aligned (the common case: kernel records are multiples of 8 bytes),
    else byte by byte."""

    def __init__(self, buf):
        self.u8 = np.frombuffer(buf, dtype=np.uint8)
        self.u64 = np.frombuffer(buf, dtype="<u8", count=len(self.u8) // 8)

    def u64_at(self, offs: np.ndarray, aligned: bool) -> np.ndarray:
        if aligned:
            return self.u64[offs >> 3]  # offsets are multiples of 8
        idx = offs[:, None] + np.arange(8, dtype=np.int64)
        return self.u8[idx].view("<u8").reshape(-1)

    def u16_at(self, offs: np.ndarray) -> np.ndarray:
        return self.u8[offs].astype(np.uint16) | (self.u8[offs + 1].astype(np.uint16) << 8)


_KNOWN_TYPES = np.zeros(1 << 16, dtype=bool)
_KNOWN_TYPES[[int(t) for t in RecordType]] = True


def locate_records_aligned(buf, start: int, end: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Offsets and types of every record in [start, end), found without a Python loop.

    Every 8-aligned position whose would-be header has a known type and a size that is a
    non-zero multiple of 8 is a candidate.  The candidates are exactly the records when
    each one's size leads to the next candidate and the last to `end`; that is checked,
    and None returned when it does not hold (misaligned data, a false candidate inside a
    record, a damaged file), so the caller walks record by record instead.
    """
    if start % 8 or (end - start) % 8 or end <= start:
        return None
    # Headers seen as four u16s per 8-byte word: type low/high, misc, size.
    half = np.frombuffer(buf, dtype="<u2", count=(end - start) // 2, offset=start)
    rtype, rtype_high, size = half[0::4], half[1::4], half[3::4]
    ok = size >= 8
    ok &= (size & 7) == 0
    ok &= rtype_high == 0
    ok &= _KNOWN_TYPES[rtype]
    cand = np.flatnonzero(ok)
    if not len(cand) or cand[0] != 0:
        return None
    nxt = cand + size[cand] // 8
    if not (np.array_equal(nxt[:-1], cand[1:]) and nxt[-1] == len(size)):
        return None
    return start + 8 * cand, rtype[cand].astype(np.int64)


def locate_samples(buf, start: int, end: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Offsets of SAMPLE records in [start, end), and the (offset, type) of every record
    kind the fast path cannot step over (COMPRESSED, payload-carrying, malformed)."""
    offs: list[int] = []
    others: list[tuple[int, int]] = []
    append = offs.append
    pos = start
    if start % 2 == 0:
        h = memoryview(buf).cast("B")[:end - end % 2].cast("H")
        sample = int(RecordType.SAMPLE)
        irregular = (RecordType.COMPRESSED, RecordType.AUXTRACE, RecordType.HEADER_TRACING_DATA)
        while pos + 8 <= end:
            i = pos >> 1
            rtype, size = h[i], h[i + 3]
            if h[i + 1] or size < 8 or size & 1 or pos + size > end or rtype in irregular:
                break
            if rtype == sample:
                append(pos)
            pos += size
        if pos == end:
            return offs, others
    others.append((pos, -1))
    return offs, others


def sample_arrays(data) -> SampleArrays:
    """All SAMPLE records of `data` (a PerfData) as arrays."""
    mv = data._buf
    start, end = data._data.offset, data._data.end
    found = locate_records_aligned(mv, start, end) if data.mode == "file" else None
    if found is not None and not np.isin(found[1], _PAYLOAD_OR_PACKED).any():
        offs, others = found[0][found[1] == RecordType.SAMPLE], []
    elif data.mode == "file":
        offs, others = locate_samples(mv, start, end)
    else:
        offs, others = [], [(0, -1)]
    if others:
        # Compressed, pipe-mode or irregular data: let the general walker find the samples
        # and copy them into one buffer so the gather below still applies.
        chunks, offs, pos = [], [], 0
        for raw in data._walk():
            if raw.type == RecordType.SAMPLE:
                chunks.append(bytes(raw.buf[raw.pos:raw.pos + raw.size]))
                offs.append(pos)
                pos += raw.size
        mv = memoryview(b"".join(chunks))
    g = _Gather(mv)
    o = np.asarray(offs, dtype=np.int64)
    n = len(o)
    aligned = not (o & 7).any()
    attr_idx = _attr_of_samples(data, g, o, aligned)
    cols: dict[str, np.ndarray] = {}
    nr_all = np.zeros(n, dtype=np.int64)
    chain_pos = np.zeros(n, dtype=np.int64)
    groups = [(0, None)] if len(data.attrs) == 1 else [
        (ai, np.flatnonzero(attr_idx == ai)) for ai in range(len(data.attrs))]
    for ai, sel in groups:
        if sel is not None and not len(sel):
            continue
        st = data.attrs[ai].attr.sample_type
        rec = o if sel is None else o[sel]
        end = rec + g.u16_at(rec + 6)
        pos = rec + 8
        for bit, name in _FIXED:
            if st & bit:
                _check(data, rec, pos + 8 > end, name)
                values = g.u64_at(pos, aligned)
                if sel is None:
                    cols[name] = values
                else:
                    cols.setdefault(name, np.zeros(n, dtype=np.uint64))[sel] = values
                pos += 8
        if st & S.READ:
            rf = data.attrs[ai].attr.read_format
            times = sum(bool(rf & f) for f in (ReadFormat.TOTAL_TIME_ENABLED,
                                               ReadFormat.TOTAL_TIME_RUNNING))
            per = 1 + bool(rf & ReadFormat.ID) + bool(rf & ReadFormat.LOST)
            if rf & ReadFormat.GROUP:
                _check(data, rec, pos + 8 > end, "read.nr")
                nr = g.u64_at(pos, aligned)
                _check(data, rec, nr > (1 << 16), "read.nr")
                pos += 8 * (1 + times) + 8 * per * nr.astype(np.int64)
            else:
                pos += 8 * (per + times)
        if st & S.CALLCHAIN:
            _check(data, rec, pos + 8 > end, "callchain.nr")
            nr = g.u64_at(pos, aligned)
            _check(data, rec, nr > (1 << 13), "callchain.nr")  # 64 KiB records
            nr = nr.astype(np.int64)
            _check(data, rec, pos + 8 + 8 * nr > end, "callchain.nr")
            if sel is None:
                nr_all, chain_pos = nr, pos + 8
            else:
                nr_all[sel], chain_pos[sel] = nr, pos + 8
    chain_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(nr_all, out=chain_start[1:])
    total = int(chain_start[-1])
    if total:
        # entry j of sample i sits at chain_pos[i] + 8 * (j - chain_start[i])
        idx = np.repeat(chain_pos - 8 * chain_start[:-1], nr_all)
        idx += 8 * np.arange(total, dtype=np.int64)
        callchain = g.u64_at(idx, aligned)
    else:
        callchain = np.zeros(0, dtype=np.uint64)

    absent = np.broadcast_to(np.uint64(0), (n,))  # read-only zeros that take no memory

    def col(name: str) -> np.ndarray:
        return cols.get(name, absent)

    pid_tid = col("pid_tid")
    return SampleArrays(
        attr=attr_idx, misc=g.u16_at(o + 4), ip=col("ip"),
        pid=(pid_tid & 0xFFFFFFFF).astype(np.uint32).view(np.int32),
        tid=(pid_tid >> np.uint64(32)).astype(np.uint32).view(np.int32),
        time=col("time"), addr=col("addr"), id=col("id"), stream_id=col("stream_id"),
        cpu=(col("cpu") & 0xFFFFFFFF).astype(np.uint32), period=col("period"),
        chain_start=chain_start, callchain=callchain)


def _check(data, rec: np.ndarray, bad: np.ndarray, field: str) -> None:
    """Raise for the first sample whose `field` does not fit in its record."""
    if bad.any():
        from ..errors import FormatError
        k = int(np.flatnonzero(bad)[0])
        raise FormatError(f"SAMPLE field {field} runs past the end of its record",
                          file=data.path, offset=int(rec[k]), field=field)


def _attr_of_samples(data, g: _Gather, o: np.ndarray, aligned: bool) -> np.ndarray:
    """Each sample's attr index, from its id where several attrs exist (perf's id_pos)."""
    from .sampleid import sample_id_position
    n = len(o)
    if len(data.attrs) <= 1:
        return np.zeros(n, dtype=np.int32)
    pos = sample_id_position(data.attrs[0].attr)
    if pos is None:
        return np.zeros(n, dtype=np.int32)
    _check(data, o, o + 16 + pos > o + g.u16_at(o + 6), "id")
    ids = g.u64_at(o + 8 + pos, aligned)
    known = np.array(sorted(data._id_to_attr), dtype=np.uint64)
    which = np.array([data._id_to_attr[int(k)] for k in known], dtype=np.int32)
    at = np.clip(np.searchsorted(known, ids), 0, max(len(known) - 1, 0))
    return np.where(known[at] == ids, which[at], 0).astype(np.int32) if len(known) else \
        np.zeros(n, dtype=np.int32)

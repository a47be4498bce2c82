"""Bulk SAMPLE fields as numpy arrays, without a Python object per sample.

One pass locates SAMPLE records (a tight loop over record headers); every field at a fixed
offset is then gathered for all samples of an attr at once, and callchains are gathered
into one flat array with per-sample offsets.  Fields after the callchain (raw, branch
stack, registers, ...) are left to the per-record decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import takewhile
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from ..compiled import gather_samples, walk_records
from .abi import KSYMBOL_FLAG_UNREGISTER, ReadFormat, RecordType, SampleType as S
from . import layouts
from .header import RECORD_HEADER
from .sampleid import SAMPLE_BODY, U64, trailer_time_back

# The SAMPLE fields at fixed places, from the declared order (sampleid.SAMPLE_BODY): each
# one u64 word, gathered whole (pid and tid as one word, split later; cpu's word masked).
_HEAD = tuple(takewhile(lambda entry: entry[3] is not None, SAMPLE_BODY))
_FIXED = tuple((bit, "_".join(n for n in names if n)) for bit, _label, names, _l in _HEAD)
# the gather below steps over READ and then CALLCHAIN, the parts that follow those words
assert all(layout.size == 8 for *_rest, layout in _HEAD)
assert [entry[0] for entry in SAMPLE_BODY[len(_HEAD):len(_HEAD) + 2]] == [S.READ,
                                                                         S.CALLCHAIN]


_PAYLOAD_OR_PACKED = np.array([RecordType.COMPRESSED, RecordType.COMPRESSED2,
                               RecordType.AUXTRACE, RecordType.HEADER_TRACING_DATA])


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
        """Sample i's callchain (the kernel's ips, context markers included)."""
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
_PAYLOAD_OR_PACKED_TYPES = np.zeros(1 << 16, dtype=bool)
_PAYLOAD_OR_PACKED_TYPES[_PAYLOAD_OR_PACKED] = True


# bytes of the file located at a time (a multiple of 8): each window's pages are mapped in
# at once before the walk and given back after it
_WINDOW = 2 << 20


def locate_records_aligned(buf, start: int, end: int, *, window_done=None,
                           window: int = _WINDOW, samples: "_SampleGather | None" = None
                           ) -> tuple[np.ndarray, np.ndarray] | None:
    """Offsets and types of every record in [start, end): the chain of headers from
    `start`, each size leading to the next, walked by compiled code (a sequential walk
    numpy can only imitate in passes: compiled.walk_records).  None when the chain breaks
    off before `end` (a type no perf knows, a size not a nonzero multiple of 8, a record
    running past `end`: a damaged file), so the caller walks record by record and names
    the damage.

    The file is taken `window` bytes at a time (the next window starts where the last
    record begun in this one ends); window_done(lo, hi, offsets, types), if given, is
    called when [lo, hi) has been read, with its records (the caller may read some of
    them, then give the window's pages back).  `samples`, if given, has the SAMPLE
    records' fields gathered in the same walk (_SampleGather)."""
    if start % 8 or (end - start) % 8 or end <= start:
        return None
    offsets, kinds = [], []
    for pos, nxt, offs, kind in _windows(buf, start, end, window, samples):
        if offs is None:
            return None
        offsets.append(offs)
        kinds.append(kind)
        if window_done is not None:
            window_done(pos, min(nxt, end), offs, kind)
    if len(offsets) == 1:
        return offsets[0], kinds[0]
    return np.concatenate(offsets), np.concatenate(kinds)


def _windows(buf, start: int, end: int, window: int, samples: "_SampleGather | None" = None):
    """The records of [start, end) walked `window` bytes at a time (compiled.walk_records,
    gathering `samples` if given): (start, next, offsets, types) of each window's records;
    offsets and types None, and the walk over, where the chain breaks off."""
    pos = start
    while pos < end:
        stop = min(end, pos + window)
        # room for a record every 8 bytes: reserved, not touched (only what the walk writes
        # is ever backed by memory), and cut to the count after
        room = (stop - pos) // 8 + 1
        offs, kind = np.empty(room, dtype=np.int64), np.empty(room, dtype=np.uint16)
        count, nxt, whole, gathered = walk_records(
            buf, pos, stop, end, _KNOWN_TYPES, offs, kind,
            samples.spec() if samples is not None and not samples.failed else None)
        if not whole:
            yield pos, nxt, None, None
            return
        if samples is not None:
            samples.took(gathered)
        yield pos, nxt, offs[:count].copy(), kind[:count].copy()
        pos = nxt


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
        irregular = (RecordType.COMPRESSED, RecordType.COMPRESSED2, RecordType.AUXTRACE,
                     RecordType.HEADER_TRACING_DATA)
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


def located(data, samples: "_SampleGather | None" = None
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets, types) of every record of a file-mode PerfData, found once and kept on it
    (the reader's record walk uses the same); None when they cannot be found without a
    Python loop or some record carries more than its header says (COMPRESSED, AUXTRACE,
    HEADER_TRACING_DATA).  The records of the KEPT types are copied out meanwhile
    (KeptRecords), and, where the walk is made here, the SAMPLE records' fields are
    gathered by it if `samples` is given (_SampleGather)."""
    if data.mode != "file":
        return None
    found = data._located
    if found is None:
        # each window's pages mapped in at once before it is scanned, and given back
        # after: a big file is never resident in this process as a whole
        window = _WINDOW
        start, end = data._data.offset, data._data.end
        _map_in(data, start, min(end, start + window))
        kept: list[KeptRecords] = []

        def done(lo: int, hi: int, offsets: np.ndarray, kinds: np.ndarray) -> None:
            wanted = _KEPT_TYPES[kinds]
            if wanted.any():
                kept.append(_copy_records(data._buf, offsets[wanted], kinds[wanted]))
            _map_in(data, hi, min(end, hi + window))
            _release(data, lo, hi)
        found = data._located = locate_records_aligned(data._buf, start, end,
                                                       window_done=done,
                                                       samples=samples) or False
        if found:
            data._kept = KeptRecords.joined(kept)
    if not found or _PAYLOAD_OR_PACKED_TYPES[found[1]].any():
        return None
    return found


# The sideband the views read from a located file: thousands of small records spread over
# the whole file.  located() copies them out while their window is mapped in: read after
# the window's pages are given back, each would fault its page in again (~5 us a record).
KEPT = frozenset({RecordType.MMAP, RecordType.MMAP2, RecordType.FORK, RecordType.KSYMBOL,
                  RecordType.BPF_EVENT})
_KEPT_TYPES = np.zeros(1 << 16, dtype=bool)
_KEPT_TYPES[sorted(KEPT)] = True


class KeptRecords(NamedTuple):
    """Copies of records: record i, of type kinds[i], was at file offset offsets[i]
    (ascending) and is blob[at[i]:at[i] + its size]."""

    offsets: np.ndarray   # int64
    kinds: np.ndarray     # uint16
    at: np.ndarray        # int64
    blob: bytes

    @classmethod
    def joined(cls, parts: list["KeptRecords"]) -> "KeptRecords":
        """One KeptRecords of those of consecutive windows."""
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.int64),
                       b"")
        base = np.cumsum([0] + [len(p.blob) for p in parts[:-1]])
        return cls(np.concatenate([p.offsets for p in parts]),
                   np.concatenate([p.kinds for p in parts]),
                   np.concatenate([p.at + b for p, b in zip(parts, base.tolist())]),
                   b"".join(p.blob for p in parts))


def _copy_records(buf, offsets: np.ndarray, kinds: np.ndarray) -> KeptRecords:
    """The records at `offsets` (of types `kinds`) copied end to end, each of the size its
    header gives."""
    u8 = np.frombuffer(buf, dtype=np.uint8)
    sizes = u8[offsets + 6].astype(np.int64) | (u8[offsets + 7].astype(np.int64) << 8)
    at = np.cumsum(sizes) - sizes
    # (a window holds a hundred or so: a slice each is cheaper than an index per byte)
    return KeptRecords(offsets, kinds, at, b"".join(
        [buf[o:o + n] for o, n in zip(offsets.tolist(), sizes.tolist())]))


def offsets_of(data, types: frozenset) -> np.ndarray | None:
    """File offsets, ascending, of the records of `types` in a file located in bulk (None
    if it is not): found among the copies located() kept when it kept every one of those
    types (thousands of records, not the millions of the whole file)."""
    found = located(data)
    if found is None:
        return None
    kept = data._kept
    if kept is not None and types <= KEPT:
        return kept.offsets[of_types(kept.kinds, types)]
    offsets, kinds = found
    return offsets[of_types(kinds, types)]


def record_bytes(data, offsets: np.ndarray) -> tuple[object, np.ndarray]:
    """(buffer, positions): where to read the records at file `offsets`: located()'s
    copies when it kept them all, else the file itself."""
    kept = data._kept
    if kept is not None and len(kept.offsets) and len(offsets):
        i = np.minimum(np.searchsorted(kept.offsets, offsets), len(kept.offsets) - 1)
        if (kept.offsets[i] == offsets).all():
            return kept.blob, kept.at[i]
    return data._buf, offsets


def of_types(kinds: np.ndarray, types: frozenset) -> np.ndarray:
    """Which of the record `kinds` (located()'s second array) are one of `types`."""
    wanted = np.zeros(1 << 16, dtype=bool)
    wanted[sorted(types)] = True
    return wanted[kinds]


_MADV_POPULATE_READ = 22   # Linux 5.14+


def _map_in(data, start: int, end: int) -> None:
    """Map a mapped file's pages of [start, end) in with one madvise(MADV_POPULATE_READ)
    (the scan reads every one of them) rather than a page fault every 64 KiB; kernels
    without it refuse, and the scan faults them in as before."""
    import mmap
    m = getattr(data._buf, "obj", None)
    if isinstance(m, mmap.mmap) and hasattr(m, "madvise"):
        lo = start - start % mmap.PAGESIZE
        try:
            m.madvise(_MADV_POPULATE_READ, lo, end - lo)
        except OSError:
            pass


SAMPLE_FIELDS = frozenset({"attr", "misc", "ip", "pid", "tid", "time", "addr", "id",
                           "stream_id", "cpu", "period"})


def sample_arrays(data, *, callchains: bool = True,
                  fields: frozenset[str] | set[str] = SAMPLE_FIELDS) -> SampleArrays:
    """All SAMPLE records of `data` (a PerfData) as arrays.  With callchains=False the
    chains are checked but not gathered (`callchain` is empty, `chain_start` all zero);
    columns not in `fields` are left zero (read-only, taking no memory).  Records are
    checked whatever is asked for."""
    fields = frozenset(fields)
    if not callchains:
        gathered = _gathered_while_located(data, fields)
        if gathered is not None:
            return gathered
    mv = data._buf
    start, end = data._data.offset, data._data.end
    found = located(data)
    if found is not None:
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
    layout = _one_sampling_layout(data, g, o) if aligned and n else None
    if layout is not None:
        got = _one_layout(data, g, o, callchains, fields, *layout)
        if got is not None:
            return got
    attr_idx = _attr_of_samples(data, g, o, aligned)
    cols: dict[str, np.ndarray] = {}
    nr_all = np.zeros(n, dtype=np.int64) if callchains else None
    chain_pos = np.zeros(n, dtype=np.int64) if callchains else None
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
            if not callchains:
                continue
            if sel is None:
                nr_all, chain_pos = nr, pos + 8
            else:
                nr_all[sel], chain_pos[sel] = nr, pos + 8
    return _arrays(g, aligned, attr_idx, g.u16_at(o + 4), cols, nr_all, chain_pos, fields)


def _arrays(g: _Gather | None, aligned: bool, attr_idx: np.ndarray, misc: np.ndarray,
            cols: dict[str, np.ndarray], nr_all: np.ndarray | None,
            chain_pos: np.ndarray | None, fields: frozenset[str]) -> SampleArrays:
    """SampleArrays from the gathered fixed fields (zeros for those not in `fields`); the
    callchains gathered here (nr_all None: none asked for)."""
    n = len(misc)
    if nr_all is None:
        # no chains gathered: every one empty (read-only zeros, no memory, no pass over n)
        chain_start = np.broadcast_to(np.zeros(1, dtype=np.int64), (n + 1,))
        total = 0
    else:
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

    def zeros(dtype) -> np.ndarray:
        return np.broadcast_to(np.zeros(1, dtype=dtype), (n,))  # read-only, no memory

    absent = zeros(np.uint64)

    def col(name: str) -> np.ndarray:
        return cols.get(name, absent) if name in fields else absent

    pid_tid = cols.get("pid_tid", absent)
    return SampleArrays(
        attr=attr_idx if "attr" in fields else zeros(np.int32),
        misc=misc if "misc" in fields else zeros(np.uint16), ip=col("ip"),
        pid=_halves(pid_tid, 0) if "pid" in fields else zeros(np.int32),
        tid=_halves(pid_tid, 1) if "tid" in fields else zeros(np.int32),
        time=col("time"), addr=col("addr"), id=col("id"), stream_id=col("stream_id"),
        cpu=(col("cpu") & 0xFFFFFFFF).astype(np.uint32) if "cpu" in fields
        else zeros(np.uint32), period=col("period"),
        chain_start=chain_start, callchain=callchain)


_GATHER_RECORDS = 1 << 17   # records gathered between two page releases


def _gather_samples(words: np.ndarray, base: np.ndarray, offsets: list[int], width: int,
                    chain: int, release=None, map_in=None
                    ) -> tuple[list[np.ndarray], np.ndarray, int]:
    """words[base + off] for each of the `offsets`, and each header's misc, gathered with
    the records' checks in one pass (compiled.gather_samples: width, callchain nr), a
    block of records at a time; the index of the first record failing a check, else -1.
    release(byte), if given, is told after each block that the records before that byte
    offset are read (`base` ascending: their pages can go); map_in(lo, hi), if given,
    before each block that it reads the bytes [lo, hi) (their pages can be mapped in at
    once)."""
    n = len(base)
    outs = [np.empty(n, dtype=np.uint64) for _ in offsets]
    misc = np.empty(n, dtype=np.uint16)
    base = np.ascontiguousarray(base, dtype=np.int64)
    fields = tuple(offsets)
    for first in range(0, n, _GATHER_RECORDS):
        last = min(n, first + _GATHER_RECORDS)
        if map_in is not None:
            map_in(8 * int(base[first]), 8 * (int(base[last - 1]) + width))
        bad = gather_samples(words, base[first:last], fields,
                             tuple(o[first:last] for o in outs), width, chain,
                             misc[first:last])
        if bad >= 0:
            return outs, misc, first + bad
        if release is not None and last < n:
            release(8 * int(base[last]))
    return outs, misc, -1


def _halves(words: np.ndarray, which: int) -> np.ndarray:
    """The low (0) or high (1) signed 32-bit half of each little-endian u64."""
    if words.strides[0] == 0:     # the broadcast zeros of an absent field
        return np.broadcast_to(np.zeros(1, dtype=np.int32), words.shape)
    return np.ascontiguousarray(words).view("<i4")[which::2]


def _layouts(data, which: np.ndarray | None = None) -> set[tuple[int, int]]:
    """The sample layouts (sample_type, read_format) of the attrs `which` (indexes; all
    of them if None)."""
    attrs = data.attrs
    chosen = attrs if which is None else [attrs[i] for i in which.tolist()]
    return {(a.attr.sample_type, a.attr.read_format) for a in chosen}


def _one_layout_named(data, sample_attrs: np.ndarray) -> bool:
    """Whether the attrs the samples name (their indexes, one a sample) share one layout."""
    return len(_layouts(data, np.flatnonzero(np.bincount(sample_attrs)))) == 1


def _one_sampling_layout(data, g: _Gather, o: np.ndarray):
    """(attr, id position) when every sample may have one attr's layout, or None.  One
    attr, or attrs of one layout: (that attr, None).  Several layouts (textrace record's
    sideband dummy event has a layout of its own and no samples): the first sample's
    attr, and where every sample's id is, for _one_layout to read the ids in its one pass
    over the samples and go on only if the attrs they name all share a layout."""
    from .sampleid import sample_id_position
    attrs = data.attrs
    if not attrs:  # a damaged file: the record-by-record path names the damage
        return None
    if len(_layouts(data)) == 1:
        return attrs[0].attr, None
    pos = sample_id_position(attrs[0].attr)
    if pos is None or int(o.max()) + 16 + pos > 8 * len(g.u64):
        return None
    first = int(g.u64[(int(o[0]) >> 3) + 1 + pos // 8])
    return attrs[data._id_to_attr.get(first, 0)].attr, pos


class _SamplePlan(NamedTuple):
    """Where the fixed fields of one sample layout are: each a u64 word at the same place
    in every record."""

    names: list[str]                  # the fixed fields, in order (word 1 on)
    chain: bool                       # a callchain follows them (its nr: word width - 1)
    width: int                        # the words every record has: header, fields, nr
    wanted: list[tuple[int, str]]     # (word, column) of the fields asked for

    @classmethod
    def of(cls, attr, fields: frozenset[str]) -> "_SamplePlan | None":
        """The plan of `attr`'s samples for the columns `fields`; None when READ values
        (of varying length) come before a callchain."""
        st = attr.sample_type
        names = [name for bit, name in _FIXED if st & bit]
        chain = bool(st & S.CALLCHAIN) and not st & S.READ
        if st & S.CALLCHAIN and not chain:
            return None
        raw = set(fields) - {"pid", "tid", "attr", "misc"}
        if fields & {"pid", "tid"}:
            raw.add("pid_tid")
        return cls(names, chain, 1 + len(names) + chain,
                   [(1 + k, name) for k, name in enumerate(names) if name in raw])


class _SampleGather:
    """The SAMPLE records' words `at` (and headers' misc), gathered by the walk that
    locates the records (compiled.walk_records, with gather_samples' checks) into columns
    reserved for the most samples the file can hold (pages only touched where written).
    `failed` once a record fails a check (the general path reads and names it)."""

    def __init__(self, data, at: list[int], width: int, chain: int):
        room = (data._data.end - data._data.offset) // (8 * width) + 1
        self.outs = tuple(np.empty(room, dtype=np.uint64) for _ in at)
        self.misc = np.empty(room, dtype=np.uint16)
        self.at, self.width, self.chain = tuple(at), width, chain
        self.count = 0
        self.failed = False

    def spec(self) -> tuple:
        """walk_records' `samples`: the next rows from self.count on."""
        return self.at, self.outs, self.width, self.chain, self.misc, self.count

    def took(self, gathered: int) -> None:
        """A window's walk gathered that many (-1: one failed)."""
        if gathered < 0:
            self.failed = True
        else:
            self.count += gathered

    def columns(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The gathered columns (in the order of `at`) and the headers' misc."""
        return [o[:self.count] for o in self.outs], self.misc[:self.count]


def _gathered_while_located(data, fields: frozenset[str]) -> SampleArrays | None:
    """sample_arrays(callchains=False) of a file not located yet, its samples gathered by
    located()'s walk: one pass over the file, each record read while the walk has it,
    instead of a second pass that maps every page in again.  Where attrs of several
    layouts exist (textrace record's sideband dummy has one of its own, and no samples),
    the first sample's attr gives the layout, and its id read from every sample must
    name attrs of that layout only.  None where this does not apply: a file located
    already, samples of several layouts, damage (the general path reads and names it)."""
    from .sampleid import sample_id_position
    attrs = data.attrs
    if data.mode != "file" or data._located is not None or not attrs:
        return None
    id_pos = sample_id_position(attrs[0].attr) if len(attrs) > 1 else None
    one_layout = len(_layouts(data)) == 1
    if one_layout:
        attr = attrs[0].attr
    elif id_pos is None:
        return None
    else:
        attr = _first_sample_attr(data, id_pos)
        if attr is None or sample_id_position(attr) != id_pos:
            return None
    plan = _SamplePlan.of(attr, fields)
    if plan is None:
        return None
    read_ids = id_pos is not None and (not one_layout or "attr" in fields)
    at = [k for k, _name in plan.wanted] + ([1 + id_pos // 8] if read_ids else [])
    gather = _SampleGather(data, at, plan.width, plan.width - 1 if plan.chain else -1)
    if located(data, gather) is None or gather.failed:
        return None
    got, misc = gather.columns()
    sample_attrs = _attr_from_ids(data, got.pop()) if read_ids else None
    if not one_layout and not _one_layout_named(data, sample_attrs):
        return None
    attr_idx = sample_attrs if read_ids and "attr" in fields else \
        np.zeros(len(misc), dtype=np.int32)
    cols = {name: col for (_k, name), col in zip(plan.wanted, got)}
    return _arrays(None, True, attr_idx, misc, cols, None, None, fields)


def _first_sample_attr(data, id_pos: int):
    """The attr of the file's first SAMPLE record, by its id (at `id_pos` bytes into its
    body); None if there is none, or the records cannot be walked.  Only the windows up
    to that record are walked (the records before it are the recording's start)."""
    start, end = data._data.offset, data._data.end
    if start % 8 or (end - start) % 8:
        return None
    for _pos, _nxt, offs, kinds in _windows(data._buf, start, end, _WINDOW):
        if offs is None:
            return None
        samples = np.flatnonzero(kinds == RecordType.SAMPLE)
        if len(samples):
            at = int(offs[samples[0]])
            if 16 + id_pos > _HEADER.unpack_from(data._buf, at)[2]:
                return None
            rid = _U64.unpack_from(data._buf, at + 8 + id_pos)[0]
            return data.attrs[data._id_to_attr.get(rid, 0)].attr
    return None


def _one_layout(data, g: _Gather, o: np.ndarray, callchains: bool,
                fields: frozenset[str], attr=None,
                id_pos: int | None = None) -> SampleArrays | None:
    """The common case, every attr with one sample layout and every record 8-aligned: each
    fixed field asked for is a u64 at the same place in every record, all of them gathered
    in one pass with the records' checks (_gather_samples); a record that fails one is
    named as the general path would (_sample_damage).  None when a field would be read
    past the buffer (a damaged file: the general path names the field), or when `id_pos`
    is given (where each sample's id is: attrs of several layouts exist) and the samples'
    ids name attrs of more than one layout."""
    from .sampleid import sample_id_position
    attr = attr if attr is not None else data.attrs[0].attr
    plan = _SamplePlan.of(attr, fields)
    if plan is None:
        return None     # READ values come first, of varying length: the general path
    names, chain, width, wanted = plan
    base = o >> 3
    if int(base.max()) + width > len(g.u64):
        return None
    n = len(o)
    words = g.u64
    ascending = n < 2 or bool((base[1:] > base[:-1]).all())
    start = data._data.offset
    id_word = [1 + id_pos // 8] if id_pos is not None else []
    got, misc, bad = _gather_samples(
        words, base, [k for k, _name in wanted] + ([width - 1] if chain and callchains else [])
        + id_word, width, width - 1 if chain else -1,
        release=(lambda upto: _release(data, start, upto)) if ascending and not callchains
        else None, map_in=(lambda lo, hi: _map_in(data, lo, hi)) if ascending else None)
    sample_attrs = None
    if id_word:
        # the attrs the samples' ids name (a count per attr): all of one layout, or the
        # general path reads each sample by its own (also when a record failed this
        # layout's checks: it may be of another)
        ids = got.pop() if bad < 0 else words[base + id_word[0]]
        sample_attrs = _attr_from_ids(data, ids)
        if not _one_layout_named(data, sample_attrs):
            return None
    if bad >= 0:
        _sample_damage(data, o, words, base, attr, names, chain, width, bad)
    cols = {name: col for (_k, name), col in zip(wanted, got)}
    attr_idx = np.zeros(n, dtype=np.int32)
    if len(data.attrs) > 1 and "attr" in fields:
        pos = sample_id_position(attr)
        if pos is not None and pos == id_pos:
            attr_idx = sample_attrs   # read with the rest
        elif pos is not None:
            attr_idx = _attr_from_ids(data, words[base + 1 + pos // 8])
    nr_all = np.zeros(n, dtype=np.int64) if callchains else None
    chain_pos = np.zeros(n, dtype=np.int64) if callchains else None
    if chain and callchains:
        nr_all, chain_pos = got[-1].astype(np.int64), o + 8 * width
    return _arrays(g, True, attr_idx, misc, cols, nr_all, chain_pos, fields)


def _sample_damage(data, o: np.ndarray, words: np.ndarray, base: np.ndarray, attr,
                   names: list[str], chain: bool, width: int, bad: int) -> None:
    """Raise for the damaged SAMPLE records the one-pass gather found (the first at index
    `bad`), naming the first field that does not fit as the general path would: a record
    too short for the fixed part (the id of several attrs first, then the fields in
    order), then a callchain longer than 8192 entries or than its record."""
    from .sampleid import sample_id_position
    size = (words[base] >> np.uint64(48)).astype(np.int64)
    pos = sample_id_position(attr) if len(data.attrs) > 1 else None
    if pos is not None:
        _check(data, o, 16 + pos > size, "id")
    for k, name in enumerate(names):
        _check(data, o, 16 + 8 * k > size, name)
    if chain:
        _check(data, o, 8 * width > size, "callchain.nr")
        nr = words[base + width - 1]
        _check(data, o, nr > (1 << 13), "callchain.nr")
        _check(data, o, 8 * width + 8 * nr.astype(np.int64) > size, "callchain.nr")
    from ..errors import FormatError
    raise FormatError("SAMPLE record does not fit its layout", file=data.path,
                      offset=int(o[bad]))


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
    return _attr_from_ids(data, g.u64_at(o + 8 + pos, aligned))


def _attr_from_ids(data, ids: np.ndarray) -> np.ndarray:
    """Attr index per sample id (0 for an id no attr has)."""
    n = len(ids)
    if len(data._id_to_attr) <= 16:
        # a few ids (an event per CPU): a comparison pass each beats a binary search per
        # sample (1.6M samples, 4 ids: 1 ms instead of 21 ms)
        out = np.zeros(n, dtype=np.int32)
        for k, a in data._id_to_attr.items():
            if a:
                out[ids == np.uint64(k)] = a
        return out
    known = np.array(sorted(data._id_to_attr), dtype=np.uint64)
    which = np.array([data._id_to_attr[int(k)] for k in known], dtype=np.int32)
    at = np.clip(np.searchsorted(known, ids), 0, max(len(known) - 1, 0))
    return np.where(known[at] == ids, which[at], 0).astype(np.int32) if len(known) else \
        np.zeros(n, dtype=np.int32)


# The task and map records the report follows, by the layouts records.py declares them
# with (layouts.py), bound once here: the loops below see every sideband record.
(_MMAP, _), (_MMAP2, _), (_FORK, _) = layouts.MMAP, layouts.MMAP2, layouts.TASK
_U64 = U64
_HEADER = RECORD_HEADER
_BODY_AT = layouts.BODY_AT


def _picker(declared: layouts.Layout, names: str) -> itemgetter:
    """The values named, in that order, from a tuple unpacked by the `declared` layout."""
    return itemgetter(*(declared[1].index(n) for n in names.split()))


_MMAP_FIELDS = _picker(layouts.MMAP, "pid addr len pgoff")
_MMAP2_FIELDS = _picker(layouts.MMAP2, "pid addr len pgoff prot")
_FORK_FIELDS = _picker(layouts.TASK, "pid ppid")


class MapEvent(NamedTuple):
    """An MMAP or MMAP2 record (`kind` "mmap" or "mmap2": pid, addr, len, pgoff, prot (MMAP2
    only), filename) or a FORK (`kind` "fork": pid, ppid); `time` from its sample_id
    trailer (ns, 0 without one)."""

    kind: str
    time: int
    pid: int
    addr: int = 0
    len: int = 0
    pgoff: int = 0
    prot: int = 0
    filename: str = ""
    ppid: int = 0


def map_events(data, offsets: np.ndarray, *, ordered: bool = True) -> list[MapEvent]:
    """The MMAP, MMAP2 and FORK records at `offsets` (from `located`; other kinds are
    skipped) in time order: sorted by their sample_id time, file order among equal times,
    as perf's ordered delivery gives them (ordered=False: file order).  Records too short
    for their layout raise FormatError."""
    from .sampleid import id_trailer_size, trailer_id_position
    buf, positions = record_bytes(data, offsets)
    attrs = [a.attr for a in data.attrs]

    trailers = {(id_trailer_size(a), trailer_time_back(a)) for a in attrs}
    per_attr = [(id_trailer_size(a), trailer_time_back(a)) for a in attrs]
    id_back = trailer_id_position(attrs[0]) if len(trailers) > 1 else None
    trailer, back = trailers.pop() if len(trailers) == 1 else (0, 0)
    events: list[tuple[int, int, MapEvent]] = []
    # bound once: the loop runs once per mapping and fork (thousands system-wide)
    fork, mmap, mmap2 = int(RecordType.FORK), int(RecordType.MMAP), int(RecordType.MMAP2)
    header, u64 = _HEADER.unpack_from, _U64.unpack_from
    event = tuple.__new__     # MapEvent(...) with every field given, without its __new__
    append = events.append
    # (a record is read at `pos` in `buf`, and named by its offset `off` in the file)
    for seq, (off, pos) in enumerate(zip(offsets.tolist(), positions.tolist())):
        rtype, _misc, size = header(buf, pos)
        if rtype != mmap2 and rtype != fork and rtype != mmap:
            continue
        end = pos + size
        if id_back is not None:   # attrs differ: the record's id says which it is
            rid = u64(buf, end - id_back)[0] if id_back + 8 <= size else None
            trailer, back = per_attr[data._id_to_attr.get(rid, 0)]
        if size < _BODY_AT + trailer:
            _need(data, off, False, rtype)
        time = u64(buf, end - back)[0] if back else 0
        body, body_end = pos + _BODY_AT, end - trailer
        if rtype == fork:
            if body + _FORK.size > body_end:
                _need(data, off, False, "FORK")
            pid, ppid = _FORK_FIELDS(_FORK.unpack_from(buf, body))
            ev = event(MapEvent, ("fork", time, pid, 0, 0, 0, 0, "", ppid))
        else:
            layout = _MMAP2 if rtype == mmap2 else _MMAP
            if body + layout.size > body_end:
                _need(data, off, False, rtype)
            fields = layout.unpack_from(buf, body)
            raw = bytes(buf[body + layout.size:body_end])
            nul = raw.find(b"\0")
            name = (raw if nul < 0 else raw[:nul]).decode("utf-8", "surrogateescape")
            if rtype == mmap2:
                ev = event(MapEvent, ("mmap2", time, *_MMAP2_FIELDS(fields), name, 0))
            else:
                ev = event(MapEvent, ("mmap", time, *_MMAP_FIELDS(fields), 0, name, 0))
        append((time, seq, ev))
    if ordered:
        events.sort()   # by (time, seq): seq is unique, no MapEvent is ever compared
    return [e[2] for e in events]


def _release(data, start: int, end: int) -> None:
    """release_pages() for the whole pages of [start, end) only."""
    import mmap
    m = getattr(data._buf, "obj", None)
    if isinstance(m, mmap.mmap) and hasattr(m, "madvise"):
        lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = end - end % mmap.PAGESIZE
        if hi > lo:
            m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def release_pages(data) -> None:
    """Take a mapped file's pages out of this process's memory (they stay in the page
    cache, and a later read maps them back), as perf's reader does by unmapping each
    window of the file it is done with: once its samples and sideband are read, a report
    needs none of them."""
    import mmap
    m = getattr(data._buf, "obj", None)
    if isinstance(m, mmap.mmap) and hasattr(m, "madvise"):
        m.madvise(mmap.MADV_DONTNEED)


# KSYMBOL and BPF_EVENT by the layouts records.py declares them with, bound once; their
# values in the declared order are those unpacked below
_KSYMBOL, _BPF_EVENT = layouts.KSYMBOL[0], layouts.BPF_EVENT[0]
assert layouts.KSYMBOL[1] == ("addr", "len", "ksym_type", "flags")
assert layouts.BPF_EVENT[1] == ("event_type", "flags", "prog_id", "tag")


class CodeEvent(NamedTuple):
    """A KSYMBOL or BPF_EVENT record with the fields the code history reads (those of
    KsymbolRecord and BpfEventRecord, under the same names), and its sample_id's time,
    cpu and tid (None where the attr has none)."""

    type: int
    time: int | None
    cpu: int | None
    tid: int | None
    addr: int = 0
    len: int = 0
    ksym_type: int = 0
    flags: int = 0
    name: str = ""
    event_type: int = 0
    prog_id: int = 0
    tag: bytes = b""

    @property
    def unregister(self) -> bool:
        """True for a KSYMBOL that removes its symbol."""
        return bool(self.flags & KSYMBOL_FLAG_UNREGISTER)


def code_events(data, offsets: np.ndarray) -> list[CodeEvent]:
    """The KSYMBOL and BPF_EVENT records at `offsets` (from `located`; other kinds are
    skipped), read straight from the file without the record classes (a report needs
    nothing else of them), in time order as PerfData.records_by_time() delivers them:
    by sample_id time, file order among equal times (no time counts as 0)."""
    from .sampleid import trailer_id_position, trailer_layout
    buf, positions = record_bytes(data, offsets)
    events = []
    attrs = [a.attr for a in data.attrs]
    # which attr a record is: the id at perf's is_pos from its end (PerfData's
    # _attr_index_for, without a record object per record)
    back = trailer_id_position(attrs[0]) if len(attrs) > 1 else None
    id_to_attr = data._id_to_attr

    def reader(attr):
        """(trailer bytes, its layout, where time, cpu and tid are in it) of one attr."""
        size, layout, names = trailer_layout(attr)
        return size, layout, tuple(names.index(f) if f in names else None
                                   for f in ("time", "cpu", "tid"))
    readers = [reader(a) for a in attrs]
    only = readers[0] if attrs and back is None else None
    # bound once: the loop below runs once per program function and program event
    ksymbol, bpf_event = int(RecordType.KSYMBOL), int(RecordType.BPF_EVENT)
    header, u64 = _HEADER.unpack_from, _U64.unpack_from
    ksym_fields, ksym_size = _KSYMBOL.unpack_from, _KSYMBOL.size
    bpf_fields, bpf_size = _BPF_EVENT.unpack_from, _BPF_EVENT.size
    event = tuple.__new__     # CodeEvent(...) with every field given, without its __new__
    append = events.append
    # (a record is read at `pos` in `buf`, and named by its offset `off` in the file)
    for off, pos in zip(offsets.tolist(), positions.tolist()):
        rtype, _misc, size = header(buf, pos)
        if rtype != ksymbol and rtype != bpf_event:
            continue
        end = pos + size
        time = cpu = tid = None
        if attrs:
            if only is not None:
                trailer, layout, (ti, ci, di) = only
            elif back + 8 > size:
                trailer, layout, (ti, ci, di) = readers[0]
            else:
                trailer, layout, (ti, ci, di) = readers[
                    id_to_attr.get(u64(buf, end - back)[0], 0)]
            if trailer:
                if size < _BODY_AT + trailer:
                    _need(data, off, False, rtype)
                sid = layout.unpack_from(buf, end - trailer)
                time = sid[ti] if ti is not None else None
                cpu = sid[ci] if ci is not None else None
                tid = sid[di] if di is not None else None
                end -= trailer
        body = pos + _BODY_AT
        if rtype == ksymbol:
            if body + ksym_size > end:
                _need(data, off, False, "KSYMBOL")
            addr, length, ksym_type, flags = ksym_fields(buf, body)
            raw = bytes(buf[body + ksym_size:end])
            nul = raw.find(b"\0")
            name = (raw if nul < 0 else raw[:nul]).decode("utf-8", "surrogateescape")
            append(event(CodeEvent, (rtype, time, cpu, tid, addr, length, ksym_type, flags,
                                     name, 0, 0, b"")))
        else:
            if body + bpf_size > end:
                _need(data, off, False, "BPF_EVENT")
            event_type, flags, prog_id, tag = bpf_fields(buf, body)
            append(event(CodeEvent, (rtype, time, cpu, tid, 0, 0, 0, flags, "", event_type,
                                     prog_id, tag)))
    return sorted(events, key=lambda e: e.time or 0)


def _need(data, offset: int, ok: bool, kind: str | int) -> None:
    """Raise unless `ok`; `kind` the record's name or its type (named only then: a
    report checks thousands of records)."""
    if not ok:
        from ..errors import FormatError
        if not isinstance(kind, str):
            kind = RecordType(kind).name
        raise FormatError(f"{kind} record too short for its layout", file=data.path,
                          offset=offset, field=kind)

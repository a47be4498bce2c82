"""Streaming reader of perf.data, file mode and pipe mode, compressed or not.

The file is mapped, not read: records are decoded from a memoryview when iterated, feature
sections when asked for.  Records of kinds that carry a payload outside their header.size
(HEADER_TRACING_DATA, AUXTRACE) have it attached.  COMPRESSED records are inflated with one
zstd stream across records, as perf writes them, and a record may straddle two of them.
"""

from __future__ import annotations

import heapq
import mmap
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Iterator

from ..errors import FormatError, TruncatedError
from .abi import Feature, RecordType, USER_RECORD_START
from .attr import EventAttr
from . import layouts
from .header import (PIPE_HEADER, RECORD_HEADER as HEADER, SECTION, FileHeader, Section,
                     feature_sections, parse_file_header, sniff)
from .sampleid import (U64, id_trailer_size, parse_sample_id, sample_id_position,
                       trailer_id_position)

if TYPE_CHECKING:
    from .records import Record

# Kinds followed by a payload outside header.size: the payload's size field and the
# record size that holds it.
# records whose payload follows them outside header.size: the layout of its length (the
# body's first value), and the record size that holds it
_PAYLOAD_SIZE = {rtype: (size, HEADER.size + size.size) for rtype, size in (
    (RecordType.AUXTRACE, layouts.first_value(layouts.AUXTRACE)),
    (RecordType.HEADER_TRACING_DATA, layouts.first_value(layouts.TRACING_DATA)))}
_COMPRESSED2 = layouts.COMPRESSED2[0]
DECOMPRESS_SLICE = 1024           # feed zstd this much at a time to bound one step's output
DECOMPRESS_CAP = 64 << 20         # most bytes one COMPRESSED record may inflate to


@dataclass
class Attr:
    """An event of the recording: its attr, the ids the kernel gave it, a name if known."""

    attr: EventAttr
    ids: tuple[int, ...] = ()
    name: str | None = None


@dataclass
class Damage:
    """Where a salvaged read stopped, and why."""

    offset: int
    message: str


@dataclass
class ReadStats:
    """Counts from one walk of the records: by PERF_RECORD_* type, events the kernel said
    it lost, and where a salvaged read stopped."""

    records: int = 0
    by_type: dict[int, int] = field(default_factory=dict)
    lost: int = 0            # events the kernel reported lost (LOST records)
    lost_samples: int = 0    # LOST_SAMPLES records
    damage: Damage | None = None


class _RawRec:
    """A record located in a buffer, not yet decoded."""

    __slots__ = ("offset", "type", "misc", "size", "buf", "pos", "payload")

    def __init__(self, offset, rtype, misc, size, buf, pos, payload=None):
        self.offset = offset  # file offset (of the COMPRESSED record, for inflated ones)
        self.type = rtype
        self.misc = misc
        self.size = size
        self.buf = buf
        self.pos = pos
        self.payload = payload


def map_file(path: str) -> mmap.mmap | bytes:
    """The file mapped read-only (b"" when empty: an empty file cannot be mapped), never
    read into memory; FormatError naming the file when it cannot be opened."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as e:
        raise FormatError(e.strerror or str(e), file=path) from None


class PerfData:
    """A perf.data file.  `PerfData.open(path)`; iterate `records()` or `records_by_time()`."""

    def __init__(self, data, *, path: str, salvage: bool = False):
        self.path = path
        self.salvage = salvage
        self._buf = memoryview(data)
        self.mode = sniff(self._buf, path)
        self.header: FileHeader | None = None
        self.attrs: list[Attr] = []
        self._feature_sections: dict[int, Section] = {}
        self._pipe_features: dict[int, bytes] = {}
        self.stats = ReadStats()
        self.warnings: list[str] = []
        self._id_to_attr: dict[int, int] = {}
        self._comp_mmap_len = 0
        self._located = None  # (offsets, types) once found without a Python loop
        self._kept = None     # bulk.KeptRecords: the sideband records located() copied
        self._truncation: Damage | None = None
        if self.mode == "file":
            self._open_file_mode()
        else:
            self._pipe_prescan()

    @classmethod
    def open(cls, path: str | os.PathLike, *, salvage: bool = False) -> "PerfData":
        """Map a perf.data file (either mode); '-' reads a pipe-mode stream from stdin."""
        path = os.fspath(path)
        if path == "-":
            return cls(sys.stdin.buffer.read(), path="<stdin>", salvage=salvage)
        return cls(map_file(path), path=path, salvage=salvage)

    @classmethod
    def from_stream(cls, stream: BinaryIO, *, path: str = "<stream>",
                    salvage: bool = False) -> "PerfData":
        """Read a whole stream (pipe mode, or a file not on disk) into memory first."""
        return cls(stream.read(), path=path, salvage=salvage)

    # --- file mode ----------------------------------------------------------------------
    def _open_file_mode(self) -> None:
        buf, path = self._buf, self.path
        self.header = h = parse_file_header(buf, path)
        attr_size = h.attr_size
        if attr_size < 64 + SECTION.size or attr_size > 4096:
            raise FormatError(f"attr_size {attr_size} is not a perf_file_attr size",
                              file=path, offset=16, field="header.attr_size")
        if h.attrs.size % attr_size or h.attrs.end > len(buf):
            raise FormatError(f"attrs section [{h.attrs.offset:#x}, +{h.attrs.size:#x}) "
                              f"does not hold whole {attr_size}-byte attrs inside the file",
                              file=path, offset=24, field="header.attrs")
        for i in range(h.attrs.size // attr_size):
            pos = h.attrs.offset + i * attr_size
            attr = EventAttr.parse(buf[:pos + attr_size - SECTION.size], pos, file=path)
            ids_off, ids_size = SECTION.unpack_from(buf, pos + attr_size - SECTION.size)
            if ids_size % 8 or ids_off + ids_size > len(buf):
                raise FormatError(f"ids of attr {i} [{ids_off:#x}, +{ids_size:#x}) overrun",
                                  file=path, offset=pos + attr_size - SECTION.size,
                                  field=f"attr[{i}].ids")
            ids = struct.unpack_from(f"<{ids_size // 8}Q", buf, ids_off)
            self._add_attr(Attr(attr, ids))
        data = h.data
        if data.size == 0 and len(buf) > data.offset:
            # perf record killed before it could patch the header: the data runs to EOF.
            msg = ("data size is 0 in the header (recording not properly ended?); "
                   "reading records up to the end of the file")
            if not self.salvage:
                raise FormatError(msg + ": use --salvage", file=path, offset=48,
                                  field="header.data.size")
            self.warnings.append(msg)
            self._data = Section(data.offset, len(buf) - data.offset)
        elif data.end > len(buf):
            msg = (f"data section [{data.offset:#x}, +{data.size:#x}) runs past the end of "
                   f"the file ({len(buf):#x}): truncated")
            if not self.salvage:
                raise TruncatedError(msg, file=path, offset=40, field="header.data")
            self.warnings.append(msg)
            self._data = Section(data.offset, len(buf) - data.offset)
            # damage even when the cut falls between two records: the header promised more
            self._truncation = Damage(len(buf), msg)
        else:
            self._data = data
            try:
                self._feature_sections = feature_sections(buf, h, path)
            except FormatError as e:
                if not self.salvage:
                    raise
                self.warnings.append(f"feature sections unreadable: {e}")
        comp = self.feature_bytes(Feature.COMPRESSED)
        if comp is not None and len(comp) >= 20:
            self._comp_mmap_len = struct.unpack_from("<I", comp, 16)[0]

    # --- pipe mode ----------------------------------------------------------------------
    def _pipe_prescan(self) -> None:
        """Pipe mode announces attrs and features as records; collect them up front."""
        self._data = Section(PIPE_HEADER.size, len(self._buf) - PIPE_HEADER.size)
        for raw in self._walk(decompress=False):
            if raw.type == RecordType.HEADER_ATTR:
                rec = self._decode(raw)
                self._add_attr(Attr(rec.attr, rec.ids))
            elif raw.type == RecordType.HEADER_FEATURE:
                rec = self._decode(raw)
                self._pipe_features[rec.feat_id] = rec.data
        self.stats = ReadStats()

    def _add_attr(self, a: Attr) -> None:
        idx = len(self.attrs)
        self.attrs.append(a)
        for i in a.ids:
            self._id_to_attr.setdefault(i, idx)

    # --- features -----------------------------------------------------------------------
    @property
    def features(self) -> list[int]:
        """Feature ids present in the file, ascending."""
        return sorted(self._feature_sections) if self.mode == "file" else \
            sorted(self._pipe_features)

    def feature_bytes(self, feat: int) -> memoryview | None:
        """A feature section's raw bytes (from the feature table, or a pipe's
        HEADER_FEATURE record), or None when the file has none of that kind."""
        if self.mode == "file":
            sec = self._feature_sections.get(feat)
            return None if sec is None else self._buf[sec.offset:sec.end]
        data = self._pipe_features.get(feat)
        return None if data is None else memoryview(data)

    @property
    def feature_table_slots(self) -> int:
        """Entries perf reserved in the feature table: one per feature it meant to write,
        which can be more than the features it did write (the rest are left zero)."""
        if self.mode != "file" or not self._feature_sections:
            return len(self._feature_sections)
        first = min(s.offset for s in self._feature_sections.values())
        slots = (first - self.header.feature_table_offset) // SECTION.size
        return max(slots, len(self._feature_sections))

    def feature_offset(self, feat: int) -> int:
        """Where a feature section starts in the file, for errors; 0 in pipe mode."""
        sec = self._feature_sections.get(feat)
        return sec.offset if sec else 0

    def feature(self, feat: int):
        """The decoded feature section, or None when the file has none of that kind."""
        from .features import parse_feature
        data = self.feature_bytes(feat)
        if data is None:
            return None
        nr_cpus = None
        if feat == Feature.CPU_TOPOLOGY:  # its per-cpu part is as long as NRCPUS says
            nrcpus = self.feature(Feature.NRCPUS)
            nr_cpus = nrcpus.nr_cpus_available if nrcpus is not None else None
        return parse_feature(feat, data, file=self.path, offset=self.feature_offset(feat),
                             nr_cpus=nr_cpus)

    # --- walking ------------------------------------------------------------------------
    def _walk(self, decompress: bool = True) -> Iterator[_RawRec]:
        """Locate records in the data section, inflating COMPRESSED ones; bounds-checked."""
        buf, path = self._buf, self.path
        pos, end = self._data.offset, self._data.end
        unpack = HEADER.unpack_from
        inflater = None
        while pos < end:
            if pos + 8 > end:
                yield from self._damaged(pos, "data section ends inside a record header",
                                         "header")
                return
            rtype, misc, size = unpack(buf, pos)
            if size < 8:
                yield from self._damaged(pos, f"record size {size} is smaller than its "
                                              f"8-byte header", "header.size")
                return
            if pos + size > end:
                yield from self._damaged(pos, f"record of {size} bytes runs past the end of "
                                              f"the data at {end:#x}", "header.size")
                return
            if rtype in (RecordType.COMPRESSED, RecordType.COMPRESSED2) and decompress:
                if inflater is None:
                    inflater = _Inflater(path, max(DECOMPRESS_CAP, 4 * self._comp_mmap_len))
                start, stop = pos + HEADER.size, pos + size
                if rtype == RecordType.COMPRESSED2:  # data_size, then data and padding
                    fixed = HEADER.size + _COMPRESSED2.size
                    data_size = _COMPRESSED2.unpack_from(buf, start)[0] if size >= fixed else -1
                    if not 0 <= data_size <= size - fixed:
                        yield from self._damaged(pos, f"COMPRESSED2 data_size {data_size} does "
                                                      f"not fit its {size}-byte record",
                                                 "data_size")
                        return
                    start, stop = pos + fixed, pos + fixed + data_size
                try:
                    yield from inflater.feed(buf[start:stop], pos)
                except FormatError as e:
                    yield from self._damaged(pos, e.message, "COMPRESSED")
                    return
                pos += size
                continue
            payload = None
            if rtype in _PAYLOAD_SIZE:
                payload_size, need = _PAYLOAD_SIZE[rtype]
                extra = payload_size.unpack_from(buf, pos + HEADER.size)[0] if size >= need \
                    else 0
                if pos + size + extra > end:
                    yield from self._damaged(pos, f"payload of {extra} bytes after the record "
                                                  f"runs past the end", "size")
                    return
                payload = buf[pos + size:pos + size + extra]
                yield _RawRec(pos, rtype, misc, size, buf, pos, payload)
                pos += size + extra
                continue
            yield _RawRec(pos, rtype, misc, size, buf, pos)
            pos += size
        if inflater is not None and inflater.pending:
            yield from self._damaged(inflater.last_offset, f"{inflater.pending} bytes of an "
                                     f"unfinished record left in the compressed stream",
                                     "COMPRESSED")

    def _walk_selected(self, types: frozenset[int]) -> Iterator[_RawRec]:
        """Like _walk, but when the records can be located without a Python loop (see
        bulk.locate_records_aligned), only the wanted kinds are visited at all."""
        if self.mode == "file":
            import numpy as np

            from .bulk import locate_records_aligned, of_types
            found = self._located
            if found is None:
                found = self._located = locate_records_aligned(self._buf, self._data.offset,
                                                               self._data.end) or False
            special = [RecordType.COMPRESSED, RecordType.COMPRESSED2, RecordType.AUXTRACE,
                       RecordType.HEADER_TRACING_DATA]
            # counted in one pass over the types (a big file has millions of records)
            counts = np.bincount(found[1], minlength=1 << 16) if found else None
            if found and not counts[special].any():
                offsets, kinds = found
                buf = self._buf
                for t in np.flatnonzero(counts).tolist():
                    if t not in types:
                        self.stats.by_type[t] = int(counts[t])
                        self.stats.records += self.stats.by_type[t]
                for off in offsets[of_types(kinds, types)].tolist():
                    rtype, misc, size = HEADER.unpack_from(buf, off)
                    yield _RawRec(off, rtype, misc, size, buf, off)
                return
        yield from self._walk()

    def raw_records(self, types: frozenset[int], *,
                    bulk: bool = True) -> Iterator[tuple[int, memoryview]]:
        """(file offset, whole record bytes) of every record of these kinds, undecoded.
        `bulk`: locate them with numpy (fast; arrays as long as the file has records),
        else walk record by record (memory flat whatever the file's size)."""
        for raw in (self._walk_selected(types) if bulk else self._walk()):
            if raw.type in types:
                yield raw.offset, memoryview(raw.buf)[raw.pos:raw.pos + raw.size]

    def _damaged(self, offset: int, message: str, fieldname: str):
        err = TruncatedError(message, file=self.path, offset=offset, field=fieldname)
        if not self.salvage:
            raise err
        self.stats.damage = Damage(offset, message)
        self.warnings.append(str(err))
        return
        yield

    # --- decoding -----------------------------------------------------------------------
    def _attr_index_for(self, raw: _RawRec) -> int | None:
        """Which attr a kernel record belongs to: by its id when attrs differ (perf's
        id_pos/is_pos), else the only layout there is."""
        attrs = self.attrs
        if not attrs:
            return None
        if len(attrs) == 1:
            return 0
        if raw.type == RecordType.SAMPLE:
            pos = sample_id_position(attrs[0].attr)
            if pos is None or HEADER.size + pos + U64.size > raw.size:
                return 0
            (rid,) = U64.unpack_from(raw.buf, raw.pos + HEADER.size + pos)
        else:
            back = trailer_id_position(attrs[0].attr)
            if back is None or back + U64.size > raw.size:
                return 0
            (rid,) = U64.unpack_from(raw.buf, raw.pos + raw.size - back)
        return self._id_to_attr.get(rid, 0)

    def _decode(self, raw: _RawRec) -> Record:
        # Imported here: the record classes cost ~25 ms to define, which bulk readers
        # (numpy arrays of samples) never need.
        from .records import ParseContext, RawRecord, record_class
        from . import sample  # noqa: F401  registers SampleRecord
        rtype = raw.type
        body_start = raw.pos + 8
        body_end = raw.pos + raw.size
        idx = attr = None
        sample_id = None
        if rtype < USER_RECORD_START:
            idx = self._attr_index_for(raw)
            attr = self.attrs[idx].attr if idx is not None else None
            if rtype != RecordType.SAMPLE and attr is not None and attr.sample_id_all:
                tsize = id_trailer_size(attr)
                if tsize > raw.size - 8:
                    raise FormatError(f"{raw.size}-byte record cannot hold its {tsize}-byte "
                                      f"sample_id trailer", file=self.path,
                                      offset=raw.offset, field="sample_id")
                sample_id = parse_sample_id(raw.buf, body_end, attr)
                body_end -= tsize
            elif rtype == RecordType.SAMPLE and attr is None:
                raise FormatError("SAMPLE record before any attr", file=self.path,
                                  offset=raw.offset, field="attr")
        cls = record_class(rtype)
        body = raw.buf[body_start:body_end]
        if cls is None:
            return RawRecord(raw_type=rtype, misc=raw.misc, body=bytes(body),
                             sample_id=sample_id, offset=raw.offset, attr_index=idx)
        ctx = ParseContext(self.path, raw.offset, attr, raw.misc)
        try:
            values = cls._parse_body(body, ctx)
        except (struct.error, ValueError, IndexError) as e:
            raise FormatError(f"cannot decode {cls.__name__}: {e}", file=self.path,
                              offset=raw.offset, field=RecordType(rtype).name) from None
        if raw.payload is not None:
            values["data"] = bytes(raw.payload)
        return cls(misc=raw.misc, sample_id=sample_id, offset=raw.offset, attr_index=idx,
                   **values)

    def records(self, types: frozenset[int] | None = None) -> Iterator[Record]:
        """Every record in file order (compressed ones inflated), decoded; with `types`,
        only records of those kinds are decoded and yielded (the rest are still counted)."""
        stats = self.stats = ReadStats()
        if types is not None:  # losses are always counted, whatever is asked for
            wanted, types = types, types | {RecordType.LOST, RecordType.LOST_SAMPLES}
        walk = self._walk() if types is None else self._walk_selected(types)
        for raw in walk:
            if types is not None and raw.type not in types:
                stats.records += 1
                stats.by_type[raw.type] = stats.by_type.get(raw.type, 0) + 1
                continue
            try:
                rec = self._decode(raw)
            except FormatError as e:
                if not self.salvage:
                    raise
                stats.damage = Damage(raw.offset, e.message)
                self.warnings.append(str(e))
                return
            stats.records += 1
            stats.by_type[raw.type] = stats.by_type.get(raw.type, 0) + 1
            if raw.type == RecordType.LOST:
                stats.lost += rec.lost
            elif raw.type == RecordType.LOST_SAMPLES:
                stats.lost_samples += rec.lost
            if types is None or raw.type in wanted:
                yield rec
        if self._truncation is not None and stats.damage is None:
            stats.damage = self._truncation

    def records_by_time(self, types: frozenset[int] | None = None) -> Iterator[Record]:
        """Records in time order, as perf delivers them: queued and flushed at each
        FINISHED_ROUND up to the newest time seen before the previous round; records with
        no time (perf's own, or attrs without sample_id_all) pass through at once."""
        queue: list[tuple[int, int, Record]] = []
        seq = 0
        next_flush = -1
        max_time = -1
        if types is not None:
            types = types | {RecordType.FINISHED_ROUND}
        for rec in self.records(types):
            t = rec.time
            if rec.type == RecordType.FINISHED_ROUND:
                while queue and queue[0][0] <= next_flush:
                    yield heapq.heappop(queue)[2]
                next_flush = max_time
                yield rec
                continue
            if t is None or rec.type >= USER_RECORD_START:
                yield rec
                continue
            max_time = max(max_time, t)
            heapq.heappush(queue, (t, seq, rec))
            seq += 1
        while queue:
            yield heapq.heappop(queue)[2]

    def attr_name(self, idx: int) -> str:
        """The event's name from EVENT_DESC, else "event<idx>"."""
        a = self.attrs[idx]
        return a.name or f"event{idx}"


class _Inflater:
    """One zstd stream across COMPRESSED records; yields the records it holds, keeping a
    record cut across two COMPRESSED records until its rest arrives."""

    def __init__(self, path: str, cap: int):
        import zstandard
        self.zstd_error = zstandard.ZstdError
        self.path = path
        self.cap = cap
        self.dobj = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
        self.rest = b""
        self.last_offset = 0

    @property
    def pending(self) -> int:
        return len(self.rest)

    def feed(self, data: memoryview, offset: int) -> Iterator[_RawRec]:
        self.last_offset = offset
        out = [self.rest]
        total = len(self.rest)
        try:
            for i in range(0, len(data), DECOMPRESS_SLICE):
                chunk = self.dobj.decompress(data[i:i + DECOMPRESS_SLICE])
                total += len(chunk)
                if total > self.cap:
                    raise FormatError(f"inflates past {self.cap} bytes", file=self.path,
                                      offset=offset, field="COMPRESSED")
                out.append(chunk)
        except self.zstd_error as e:
            raise FormatError(f"zstd: {e}", file=self.path, offset=offset,
                              field="COMPRESSED") from None
        buf = b"".join(out)
        pos = 0
        while pos + 8 <= len(buf):
            rtype, misc, size = HEADER.unpack_from(buf, pos)
            if size < 8:
                raise FormatError(f"inflated record size {size} < 8", file=self.path,
                                  offset=offset, field="COMPRESSED")
            if pos + size > len(buf):
                break
            yield _RawRec(offset, rtype, misc, size, buf, pos)
            pos += size
        self.rest = buf[pos:]

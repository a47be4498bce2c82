"""Writes perf.data that perf reads: file mode (perf's own layout) or pipe mode.

File mode puts things where `perf record` does: the 104-byte header, each attr's id array,
the attrs, the records, then the feature table and feature bodies in bit order.  The header
is rewritten by `flush()` with the data size so far, so a writer killed between flushes
leaves a file whose records up to the last flush read back without --salvage.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Iterable

from ..errors import TextraceError
from .abi import PERF_MAGIC, RecordType, USER_RECORD_START
from .header import FILE_HEADER, PIPE_HEADER, SECTION, FileHeader, Section
from .reader import Attr
from .records import (HEADER, AuxtraceRecord, HeaderAttrRecord, HeaderFeatureRecord,
                      PackContext, Record, TracingDataRecord)
from .sampleid import pack_sample_id
from . import sample  # noqa: F401  registers SampleRecord

ATTR_FILE_SIZE_EXTRA = SECTION.size  # perf_file_attr = attr + ids section


def pack_record(rec: Record, attrs: list[Attr]) -> bytes:
    """A record's bytes: header, body from its declared layout, sample_id trailer, and the
    payload that follows AUXTRACE / TRACING_DATA records outside their size."""
    attr = None
    if rec.type < USER_RECORD_START and attrs:
        attr = attrs[rec.attr_index or 0].attr
    body = rec._pack_body(PackContext(attr))
    if rec.type < USER_RECORD_START and rec.type != RecordType.SAMPLE and attr is not None:
        body += pack_sample_id(rec.sample_id, attr)
    size = 8 + len(body)
    if size > 0xFFFF:
        raise TextraceError(f"{rec.type_name} record of {size} bytes exceeds perf's 64 KiB "
                            f"record limit")
    out = HEADER.pack(rec.type, rec.misc, size) + body
    if isinstance(rec, (AuxtraceRecord, TracingDataRecord)):
        out += rec.data
    return out


def create_private(path: str | os.PathLike) -> BinaryIO:
    """Open for writing, created 0600: perf.data holds kernel addresses (defeats KASLR)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


class PerfDataWriter:
    """Streams records into a perf.data file.

    `attrs` must be complete before the first record (their ids go in front of the data).
    Features are added any time before `close()`, as packed bytes keyed by feature id.
    """

    def __init__(self, target: str | os.PathLike | BinaryIO, attrs: list[Attr], *,
                 pipe: bool = False):
        self._own = not hasattr(target, "write")
        self.f: BinaryIO = create_private(target) if self._own else target  # type: ignore
        self.attrs = list(attrs)
        self.pipe = pipe
        self.features: dict[int, bytes] = {}
        self.records_written = 0
        self._closed = False
        self.feature_table_slots = 0  # perf reserves slots for features it then fails to write
        self._pos = 0
        if pipe:
            self.write_bytes(PIPE_HEADER.pack(PERF_MAGIC, PIPE_HEADER.size))
            for a in self.attrs:
                self.write(HeaderAttrRecord(attr=a.attr, ids=tuple(a.ids)))
            self._data_start = PIPE_HEADER.size
        else:
            self._write_file_prefix()
            self._pos = self._data_start

    def _write_file_prefix(self) -> None:
        f = self.f
        f.write(b"\0" * FILE_HEADER.size)
        id_sections = []
        for a in self.attrs:
            id_sections.append(Section(f.tell(), 8 * len(a.ids)))
            f.write(struct.pack(f"<{len(a.ids)}Q", *a.ids))
        sizes = {a.attr.size for a in self.attrs} or {128}
        if len(sizes) != 1:
            raise TextraceError("all attrs of a perf.data file must have one size")
        self._attr_size = sizes.pop() + ATTR_FILE_SIZE_EXTRA
        self._attrs_section = Section(f.tell(), self._attr_size * len(self.attrs))
        for a, ids in zip(self.attrs, id_sections):
            f.write(a.attr.pack() + SECTION.pack(ids.offset, ids.size))
        self._data_start = f.tell()
        self._write_header(data_size=0, features=())

    def _write_header(self, data_size: int, features) -> None:
        h = FileHeader(FILE_HEADER.size, self._attr_size, self._attrs_section,
                       Section(self._data_start, data_size), Section(0, 0), tuple(features))
        here = self.f.tell()
        self.f.seek(0)
        self.f.write(h.pack())
        self.f.seek(here)

    def write(self, rec: Record) -> None:
        """Append one record, packed against this file's attrs (sample_id trailers)."""
        self.write_bytes(pack_record(rec, self.attrs))
        self.records_written += 1

    def write_bytes(self, raw: bytes) -> None:
        """Append already-packed record bytes (e.g. copied straight from a kernel ring)."""
        self.f.write(raw)
        self._pos += len(raw)

    def write_all(self, recs: Iterable[Record]) -> None:
        """write() each record in the order given (perf sorts by time when it reads)."""
        for r in recs:
            self.write(r)

    def add_feature(self, feat: int, data: bytes) -> None:
        """A feature section's bytes: written after the data at close() in file mode, as a
        HEADER_FEATURE record at once in pipe mode."""
        if self.pipe:
            self.write(HeaderFeatureRecord(feat_id=feat, data=bytes(data)))
        else:
            self.features[feat] = bytes(data)

    def flush(self) -> None:
        """Make everything written so far readable, even if the process dies next."""
        self.f.flush()
        if not self.pipe:
            self._write_header(self._pos - self._data_start, ())
            self.f.flush()

    def close(self) -> None:
        """Write the feature table and sections and the final header; idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self.pipe:
            data_size = self._pos - self._data_start
            feats = sorted(self.features)
            slots = max(len(feats), self.feature_table_slots)
            body = self._pos + SECTION.size * slots
            sections = []
            for fid in feats:
                sections.append(SECTION.pack(body, len(self.features[fid])))
                body += len(self.features[fid])
            self.f.write(b"".join(sections).ljust(SECTION.size * slots, b"\0"))
            for fid in feats:
                self.f.write(self.features[fid])
            self._write_header(data_size, feats)
        self.f.flush()
        if self._own:
            self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

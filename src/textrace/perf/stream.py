"""textrace's entries in the data stream: written as they arrive, so a killed recorder keeps
them.

An entry is what textrace's own section holds (private.Kind: a capture, kernel code, an
unreported change, how the recording was made), cut into chunks that each travel in one
PERF_RECORD_FINISHED_INIT record after the record header.  perf 6.1 (checked on this
machine: `perf report -D`, `perf report`, `perf script`, `perf inject`) hands FINISHED_INIT
to a stub that ignores everything past the header, takes it out of time ordering (it is a
user record), and says nothing; an unknown user type (83, 100) instead stops `perf script`
with "failed to process type".  A real FINISHED_INIT is 8 bytes; ours start with MAGIC.

Chunk layout after the 8-byte record header (declared once, CHUNK):
    {char magic[8]; u32 kind; u32 seq; u16 index; u16 count; u32 len; u32 crc32; u32 flags}
    data[len], zero-padded to 8.  flags & ZSTD (private.py): the entry is one zstd frame.
`seq` numbers entries within a file; an entry's `count` chunks are written one after the
other, so a reader keeps an entry only when all of them are there and each crc32 matches.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterator

from ..errors import FormatError
from .abi import RecordType
from .header import RECORD_HEADER
from .private import ZSTD, inflate

MAGIC = b"TXTRSTM1"
CHUNK = struct.Struct("<8sIIHHIII")
MAX_RECORD = 0xFFF8                       # perf's u16 record size, 8-aligned
MAX_CHUNK = MAX_RECORD - RECORD_HEADER.size - CHUNK.size
MAX_CHUNKS = 0xFFFF                       # u16 count: an entry is at most ~4 GiB


@dataclass
class StreamEntry:
    """One entry put back together from its chunks: a private.Kind, its data (inflated),
    and `seq`, its number in the file."""

    kind: int
    data: bytes
    offset: int          # file offset of its first chunk's record
    seq: int


@dataclass
class StreamDamage:
    """A chunk or entry that was dropped (bad crc32, missing chunks) and why."""

    offset: int
    message: str


def pack_entry(kind: int, seq: int, data: bytes, flags: int = 0) -> bytes:
    """The records that carry one entry."""
    n = max(1, -(-len(data) // MAX_CHUNK))
    if n > MAX_CHUNKS:
        raise ValueError(f"a stream entry of {len(data)} bytes needs more than "
                         f"{MAX_CHUNKS} chunks")
    out = []
    for i in range(n):
        part = data[i * MAX_CHUNK:(i + 1) * MAX_CHUNK]
        pad = -len(part) % 8
        size = RECORD_HEADER.size + CHUNK.size + len(part) + pad
        out.append(RECORD_HEADER.pack(RecordType.FINISHED_INIT, 0, size))
        out.append(CHUNK.pack(MAGIC, kind, seq, i, n, len(part), zlib.crc32(part), flags))
        out.append(part)
        out.append(b"\0" * pad)
    return b"".join(out)


def is_chunk(buf, pos: int, size: int) -> bool:
    """Whether the FINISHED_INIT record at pos (of `size` bytes) is one of ours."""
    return size >= RECORD_HEADER.size + CHUNK.size and \
        bytes(buf[pos + 8:pos + 16]) == MAGIC


def read_entries(chunks: Iterator[tuple[int, memoryview]],
                 damage: list[StreamDamage]) -> Iterator[StreamEntry]:
    """Entries from (file offset, record bytes) of FINISHED_INIT records in file order.
    Chunks that do not add up to a whole entry (cut short by a kill, a wrong crc32, out of
    order) are left out and said in `damage`."""
    cur: list | None = None   # [kind, seq, count, offset, parts, flags]
    for offset, rec in chunks:
        if len(rec) < RECORD_HEADER.size + CHUNK.size or bytes(rec[8:16]) != MAGIC:
            continue          # perf's own FINISHED_INIT
        _m, kind, seq, index, count, n, crc, flags = CHUNK.unpack_from(rec, RECORD_HEADER.size)
        body = rec[RECORD_HEADER.size + CHUNK.size:]
        if n > len(body) or count == 0 or index >= count:
            damage.append(StreamDamage(offset, f"textrace stream chunk {index}/{count} of "
                                               f"entry {seq} claims {n} bytes in a "
                                               f"{len(body)}-byte record"))
            cur = None
            continue
        part = bytes(body[:n])
        if zlib.crc32(part) != crc:
            damage.append(StreamDamage(offset, f"textrace stream chunk {index}/{count} of "
                                               f"entry {seq}: crc32 mismatch"))
            cur = None
            continue
        if index == 0:
            if cur is not None:
                damage.append(StreamDamage(cur[3], f"textrace stream entry {cur[1]} ends "
                                                   f"after {len(cur[4])} of {cur[2]} chunks"))
            cur = [kind, seq, count, offset, [part], flags]
        elif cur is None or cur[1] != seq or len(cur[4]) != index or cur[2] != count:
            damage.append(StreamDamage(offset, f"textrace stream chunk {index}/{count} of "
                                               f"entry {seq} without the chunks before it"))
            cur = None
            continue
        else:
            cur[4].append(part)
        if len(cur[4]) == cur[2]:
            data = b"".join(cur[4])
            if cur[5] & ZSTD:
                try:
                    data = inflate(data, None, cur[3])
                except FormatError as e:
                    damage.append(StreamDamage(cur[3], f"textrace stream entry {cur[1]}: "
                                                       f"{e.message}"))
                    cur = None
                    continue
            yield StreamEntry(cur[0], data, cur[3], cur[1])
            cur = None
    if cur is not None:
        damage.append(StreamDamage(cur[3], f"textrace stream entry {cur[1]} ends after "
                                           f"{len(cur[4])} of {cur[2]} chunks (cut short)"))

"""textrace's own feature section inside perf.data.

perf.data has no place for what textrace records beyond perf's features: why a program's
capture failed, how it was captured, the kallsyms snapshot taken at record time, kernel code
read on demand.  These go in feature bit 255 of adds_features, which perf (6.1 checked)
skips like any bit it does not know, so perf still reads the file.

Layout: magic "TXTRACE1", then entries {u32 kind; u32 flags; u64 size; data[size]; pad to 8}.
Unknown kinds are kept, so older readers skip what newer writers add.  Flag ZSTD: the data
is one zstd frame (kernel code is large and compresses ~3:1).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from ..errors import FormatError

FEATURE_BIT = 255
MAGIC = b"TXTRACE1"
ENTRY = struct.Struct("<IIQ")
ZSTD = 1                    # entry flag: data is zstd-compressed
MAX_INFLATED = 1 << 30      # no entry inflates beyond this (a corrupt frame must not)


class Kind(enum.IntEnum):
    CAPTURES = 1      # JSON lines: one capture outcome per BPF program
    KALLSYMS = 2      # /proc/kallsyms text at record start (zstd-compressed)
    KERNEL_CODE = 3   # code read from the kernel: {u64 addr; u64 time; u32 len; u32 0; bytes}
    RECORD_INFO = 4   # JSON: how the recording was made (capture mode, clock, losses)
    UNREPORTED = 5    # JSON lines: code changes no TEXT_POKE reported (unreported.py)
    PACKS = 6         # JSON lines: bpf_prog_pack extents, snapshots, freed-range reads (freed.py)


COMPRESSED = frozenset({Kind.KERNEL_CODE, Kind.PACKS})


@dataclass
class PrivateSection:
    entries: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, kind: int) -> list[bytes]:
        return [data for k, data in self.entries if k == kind]

    def add(self, kind: int, data: bytes) -> None:
        self.entries.append((int(kind), bytes(data)))

    def pack(self) -> bytes:
        import zstandard
        out = [MAGIC]
        for kind, data in self.entries:
            flags = 0
            if kind in COMPRESSED:
                data, flags = zstandard.ZstdCompressor(level=3).compress(data), ZSTD
            out.append(ENTRY.pack(kind, flags, len(data)))
            out.append(data + b"\0" * (-len(data) % 8))
        return b"".join(out)

    @classmethod
    def parse(cls, buf, *, file: str | None = None, offset: int = 0) -> "PrivateSection":
        buf = memoryview(buf)
        if bytes(buf[:8]) != MAGIC:
            raise FormatError("textrace section does not start with TXTRACE1", file=file,
                              offset=offset, field="textrace.magic")
        pos, entries = 8, []
        while pos < len(buf):
            if pos + ENTRY.size > len(buf):
                raise FormatError("textrace section ends inside an entry header", file=file,
                                  offset=offset + pos, field="textrace.entry")
            kind, flags, size = ENTRY.unpack_from(buf, pos)
            pos += ENTRY.size
            if size > len(buf) - pos:
                raise FormatError(f"entry of {size} bytes overruns the section", file=file,
                                  offset=offset + pos - 8, field="textrace.entry.size")
            data = bytes(buf[pos:pos + size])
            if flags & ZSTD:
                data = _inflate(data, file, offset + pos)
            entries.append((kind, data))
            pos += size + (-size % 8)
        return cls(entries)


def _inflate(data: bytes, file: str | None, offset: int) -> bytes:
    import zstandard
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_INFLATED)
    except zstandard.ZstdError as e:
        raise FormatError(f"compressed entry does not inflate: {e}", file=file,
                          offset=offset, field="textrace.entry.data") from None


KERNEL_CODE = struct.Struct("<QQII")


def pack_kernel_code(addr: int, time: int, code: bytes) -> bytes:
    return KERNEL_CODE.pack(addr, time, len(code), 0) + code


def unpack_kernel_code(data: bytes) -> tuple[int, int, bytes]:
    addr, time, n, _ = KERNEL_CODE.unpack_from(data, 0)
    return addr, time, data[KERNEL_CODE.size:KERNEL_CODE.size + n]


def pack_packs_entries(entries: list[dict]) -> bytes:
    """Kind.PACKS: one JSON object a line, each with "t" saying what it is (vmalloc, pack,
    snapshot, header, freed, info; see freed.py)."""
    import json
    return b"\n".join(json.dumps(e, separators=(",", ":")).encode() for e in entries)


def unpack_packs_entries(data: bytes, *, file: str | None = None) -> list[dict]:
    import json
    out = []
    for k, line in enumerate(data.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError as e:
            raise FormatError(f"pack entry {k} is not JSON: {e}", file=file,
                              field="textrace.packs") from None
        if not isinstance(entry, dict) or "t" not in entry:
            raise FormatError(f"pack entry {k} has no kind", file=file, field="textrace.packs")
        out.append(entry)
    return out


def private_section(data) -> PrivateSection | None:
    """textrace's section of a PerfData, or None in a file textrace did not record."""
    raw = data.feature_bytes(FEATURE_BIT)
    if raw is None:
        return None
    return PrivateSection.parse(raw, file=data.path, offset=data.feature_offset(FEATURE_BIT))

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
    """What an entry of textrace's section holds; numbers are on disk, never reused."""

    CAPTURES = 1      # JSON lines: one capture outcome per BPF program
    KALLSYMS = 2      # /proc/kallsyms text at record start (zstd-compressed)
    KERNEL_CODE = 3   # code read from the kernel: {u64 addr; u64 time; u32 len; u32 0; bytes}
    RECORD_INFO = 4   # JSON: how the recording was made (capture mode, clock, losses)
    UNREPORTED = 5    # JSON lines: code changes no TEXT_POKE reported (recorder/image_watch.py)
    CAPTURE = 6       # one program's capture (capture.py); in the data stream (stream.py)
    BTF = 7           # {u32 btf id; u32 0; raw BTF}: BTF kept out of HEADER_BPF_BTF
    #                   (recorder/finish.py)
    PACKS = 8         # JSON lines: bpf_prog_pack extents, snapshots, freed-range reads
    #                   (recorder/pack_watch.py)


COMPRESSED = frozenset({Kind.KERNEL_CODE, Kind.PACKS})


@dataclass
class PrivateSection:
    """textrace's section (feature bit 255) as (kind, data) entries in file order, data
    already inflated."""

    entries: list[tuple[int, bytes]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # file offset of each entry's data
    damage: list[str] = field(default_factory=list)  # what a salvaged parse skipped

    def items(self):
        """(kind, data, file offset) of every entry."""
        offs = self.offsets or [0] * len(self.entries)
        return [(k, d, o) for (k, d), o in zip(self.entries, offs)]

    def get(self, kind: int) -> list[bytes]:
        """The data of every entry of one kind, in file order."""
        return [data for k, data in self.entries if k == kind]

    def add(self, kind: int, data: bytes) -> None:
        """Append an entry (compressed on pack() if its kind is in COMPRESSED)."""
        self.entries.append((int(kind), bytes(data)))

    def pack(self) -> bytes:
        """The section's bytes: magic, then each entry padded to 8, zstd where COMPRESSED."""
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
    def parse(cls, buf, *, file: str | None = None, offset: int = 0,
              salvage: bool = False) -> "PrivateSection":
        """The entries; with `salvage`, those before the first damage to the layout, less
        those that do not inflate (each said in `damage`), instead of a FormatError."""
        buf = memoryview(buf)
        out = cls()
        dctx = None   # one decompressor for every entry (making one costs more than
        #               inflating a small entry: 1682 entries in 4 ms instead of 17 ms)
        try:
            if bytes(buf[:8]) != MAGIC:
                raise FormatError("textrace section does not start with TXTRACE1", file=file,
                                  offset=offset, field="textrace.magic")
            pos = 8
            while pos < len(buf):
                if pos + ENTRY.size > len(buf):
                    raise FormatError("textrace section ends inside an entry header",
                                      file=file, offset=offset + pos, field="textrace.entry")
                kind, flags, size = ENTRY.unpack_from(buf, pos)
                pos += ENTRY.size
                if size > len(buf) - pos:
                    raise FormatError(f"entry of {size} bytes overruns the section",
                                      file=file, offset=offset + pos - 8,
                                      field="textrace.entry.size")
                data = bytes(buf[pos:pos + size])
                at, pos = pos, pos + size + (-size % 8)
                if flags & ZSTD:
                    if dctx is None:
                        import zstandard
                        dctx = zstandard.ZstdDecompressor()
                    try:
                        data = inflate(data, file, offset + at, dctx)
                    except FormatError as e:
                        if not salvage:
                            raise
                        out.damage.append(f"{e} (entry skipped)")
                        continue
                out.entries.append((kind, data))
                out.offsets.append(offset + at)
        except FormatError as e:
            if not salvage:
                raise
            out.damage.append(f"{e} (the rest of the section skipped)")
        return out


def inflate(data: bytes, file: str | None, offset: int, dctx=None) -> bytes:
    """A zstd entry's bytes (of this section or of the stream, perf/stream.py), at most
    MAX_INFLATED; what does not inflate is a FormatError at `offset`.  `dctx`: a
    zstandard.ZstdDecompressor to use (each call starts it afresh), else a new one."""
    import zstandard
    try:
        return (dctx if dctx is not None else zstandard.ZstdDecompressor()).decompress(
            data, max_output_size=MAX_INFLATED)
    except zstandard.ZstdError as e:
        raise FormatError(f"compressed entry does not inflate: {e}", file=file,
                          offset=offset, field="textrace.entry.data") from None
    except MemoryError:
        raise FormatError("compressed entry inflates beyond memory", file=file,
                          offset=offset, field="textrace.entry.data") from None


KERNEL_CODE = struct.Struct("<QQII")


def pack_kernel_code(addr: int, time: int, code: bytes) -> bytes:
    """A KERNEL_CODE entry: kernel virtual address, time of the read (ns, the recording's
    clock), then the bytes."""
    return KERNEL_CODE.pack(addr, time, len(code), 0) + code


def unpack_kernel_code(data: bytes) -> tuple[int, int, bytes]:
    """(addr, time, bytes) of a KERNEL_CODE entry (pack_kernel_code's layout)."""
    addr, time, n, _ = KERNEL_CODE.unpack_from(data, 0)
    return addr, time, data[KERNEL_CODE.size:KERNEL_CODE.size + n]


def private_section(data) -> PrivateSection | None:
    """textrace's section of a PerfData, or None in a file without one (perf's own, or a
    recording not finished: its entries are in the stream, see recorded.py)."""
    raw = data.feature_bytes(FEATURE_BIT)
    if raw is None:
        return None
    return PrivateSection.parse(raw, file=data.path, offset=data.feature_offset(FEATURE_BIT),
                                salvage=getattr(data, "salvage", False))

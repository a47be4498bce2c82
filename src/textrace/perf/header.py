"""The perf.data file header (struct perf_file_header) and pipe header.

File mode:  header | attrs (perf_file_attr[]) | id arrays | data | feature section table | features
Pipe mode:  16-byte header, then records only (attrs and features travel as records).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import FormatError, TruncatedError
from .abi import FEATURE_BITS, PERF_MAGIC

FILE_HEADER = struct.Struct("<8sQQ QQ QQ QQ 32s")  # 104 bytes
PIPE_HEADER = struct.Struct("<8sQ")                 # 16 bytes
SECTION = struct.Struct("<QQ")                       # perf_file_section {offset, size}
RECORD_HEADER = struct.Struct("<IHH")                # perf_event_header {type, misc, size}


@dataclass(frozen=True)
class Section:
    """perf_file_section: [offset, offset + size) of the file."""

    offset: int
    size: int

    @property
    def end(self) -> int:
        """The file offset just past the section."""
        return self.offset + self.size


@dataclass(frozen=True)
class FileHeader:
    """perf_file_header.  `features` lists the set bits of adds_features, ascending."""

    size: int
    attr_size: int
    attrs: Section
    data: Section
    event_types: Section
    features: tuple[int, ...] = field(default=())

    def pack(self) -> bytes:
        """The 104-byte header, `features` set as bits of adds_features."""
        bitmap = 0
        for bit in self.features:
            bitmap |= 1 << bit
        return FILE_HEADER.pack(
            PERF_MAGIC, self.size, self.attr_size, self.attrs.offset, self.attrs.size,
            self.data.offset, self.data.size, self.event_types.offset, self.event_types.size,
            bitmap.to_bytes(FEATURE_BITS // 8, "little"))

    @property
    def feature_table_offset(self) -> int:
        """Where the perf_file_section array of the feature sections begins."""
        return self.data.offset + self.data.size


def sniff(buf, file: str | None = None) -> str:
    """'file' or 'pipe', from the magic and header size; anything else is a FormatError."""
    if len(buf) < PIPE_HEADER.size:
        raise TruncatedError(f"{len(buf)} bytes is too short for a perf.data header",
                             file=file, offset=0, field="header")
    magic, size = PIPE_HEADER.unpack_from(buf, 0)
    if magic != PERF_MAGIC:
        if magic == PERF_MAGIC[::-1]:
            raise FormatError("big-endian perf.data is not supported", file=file, offset=0,
                              field="magic")
        if magic.startswith(b"PERFFILE"):
            raise FormatError("perf.data version 1 (PERFFILE) is not supported", file=file,
                              offset=0, field="magic")
        raise FormatError(f"not a perf.data file (magic {magic!r})", file=file, offset=0,
                          field="magic")
    if size == PIPE_HEADER.size:
        return "pipe"
    if size == FILE_HEADER.size:
        return "file"
    raise FormatError(f"header size {size} is neither 104 (file) nor 16 (pipe)", file=file,
                      offset=8, field="header.size")


def parse_file_header(buf, file: str | None = None) -> FileHeader:
    """The file-mode header at the start of buf (sniff() said "file")."""
    if len(buf) < FILE_HEADER.size:
        raise TruncatedError("file ends inside the 104-byte header", file=file, offset=0,
                             field="header")
    (_magic, size, attr_size, a_off, a_size, d_off, d_size, e_off, e_size,
     bitmap) = FILE_HEADER.unpack_from(buf, 0)
    bits = int.from_bytes(bitmap, "little")
    feats = tuple(b for b in range(FEATURE_BITS) if bits >> b & 1)
    return FileHeader(size, attr_size, Section(a_off, a_size), Section(d_off, d_size),
                      Section(e_off, e_size), feats)


def feature_sections(buf, header: FileHeader, file: str | None = None) -> dict[int, Section]:
    """Feature id -> where its bytes are.  Sections are checked against the file's length."""
    table = header.feature_table_offset
    out: dict[int, Section] = {}
    for i, feat in enumerate(header.features):
        pos = table + i * SECTION.size
        if pos + SECTION.size > len(buf):
            raise TruncatedError(f"feature table ends early ({len(header.features)} features "
                                 f"announced)", file=file, offset=pos, field=f"feature[{feat}]")
        off, size = SECTION.unpack_from(buf, pos)
        if off + size > len(buf):
            raise FormatError(f"feature {feat} section [{off:#x}, +{size:#x}) runs past the "
                              f"end of the file ({len(buf):#x})", file=file, offset=pos,
                              field=f"feature[{feat}]")
        out[feat] = Section(off, size)
    return out

"""BTF blobs: fetched by id from the kernel, and the little of their format textrace needs
(the header and the string section, where line_info keeps file names and source lines)."""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

from ..errors import FormatError
from .syscall import btf_fd_by_id, obj_info

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type/str off+len
_BTF_INFO = struct.Struct("<QIIQII")  # btf, btf_size, id, name, name_len, kernel_btf


def read_btf(btf_id: int) -> bytes:
    """The raw BTF of `btf_id` (two calls: size, then data)."""
    fd = btf_fd_by_id(btf_id)
    try:
        info = ctypes.create_string_buffer(_BTF_INFO.size)
        obj_info(fd, info)
        size = _BTF_INFO.unpack(info.raw)[1]
        data = ctypes.create_string_buffer(max(size, 1))
        info = ctypes.create_string_buffer(_BTF_INFO.pack(ctypes.addressof(data), size, 0, 0,
                                                          0, 0), _BTF_INFO.size)
        obj_info(fd, info)
        return data.raw[:size]
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Btf:
    data: bytes
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int

    @classmethod
    def parse(cls, data: bytes, *, file: str | None = None, offset: int = 0) -> "Btf":
        if len(data) < _HEADER.size:
            raise FormatError("BTF shorter than its header", file=file, offset=offset,
                              field="btf.header")
        magic, _version, _flags, hdr_len, t_off, t_len, s_off, s_len = \
            _HEADER.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            raise FormatError(f"BTF magic {magic:#x} is not 0xeb9f", file=file, offset=offset,
                              field="btf.magic")
        for name, off, n in (("type", t_off, t_len), ("str", s_off, s_len)):
            if hdr_len + off + n > len(data):
                raise FormatError(f"BTF {name} section overruns the blob", file=file,
                                  offset=offset, field=f"btf.{name}_len")
        return cls(bytes(data), hdr_len, t_off, t_len, s_off, s_len)

    def string_at(self, off: int) -> str:
        """The string at `off` in the string section ('' when out of range)."""
        if off >= self.str_len:
            return ""
        start = self.hdr_len + self.str_off + off
        end = self.data.find(b"\0", start, self.hdr_len + self.str_off + self.str_len)
        return self.data[start:end if end >= 0 else None].decode("utf-8", "replace")

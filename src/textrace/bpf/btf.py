"""BTF blobs: fetched by id from the kernel, and the little of their format textrace needs
(include/uapi/linux/btf.h): the header, the string section (where line_info keeps file
names and source lines) and, per type id, its kind and name (func_info's type ids name
the program's functions).  Every offset is checked against the blob: bad bytes raise
FormatError naming the field."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

from ..errors import FormatError
from .syscall import Layout, btf_fd_by_id, obj_info

BTF_MAGIC = 0xEB9F
BTF_HEADER = Layout("struct btf_header", (
    ("magic", "H"), ("version", "B"), ("flags", "B"), ("hdr_len", "I"), ("type_off", "I"),
    ("type_len", "I"), ("str_off", "I"), ("str_len", "I")))
BTF_INFO = Layout("struct bpf_btf_info", (
    ("btf", "Q"), ("btf_size", "I"), ("id", "I"), ("name", "Q"), ("name_len", "I"),
    ("kernel_btf", "I")))
BTF_TYPE = Layout("struct btf_type", (("name_off", "I"), ("info", "I"), ("size_or_type", "I")))

# BTF_KIND_* by number, and the bytes that follow struct btf_type: (fixed, per vlen item)
KINDS = ("UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF",
         "VOLATILE", "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT",
         "DECL_TAG", "TYPE_TAG", "ENUM64")
_TAIL = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
         15: (0, 12), 17: (4, 0), 19: (0, 12)}


@dataclass(frozen=True)
class BtfInfo:
    """struct bpf_btf_info of one kernel BTF object."""

    id: int
    name: str          # "vmlinux", a module's name, or "" for a program's BTF
    size: int          # bytes of raw BTF
    kernel_btf: bool   # vmlinux or module BTF, not loaded by a program


def _get_info(fd: int, **fields) -> tuple[dict, ctypes.Array]:
    buf = ctypes.create_string_buffer(BTF_INFO.pack(**fields), BTF_INFO.size)
    obj_info(fd, buf)
    return BTF_INFO.unpack(buf.raw), buf


def read_btf_info(btf_id: int) -> BtfInfo:
    """struct bpf_btf_info of a kernel BTF object: its name (a module's, "vmlinux", or
    empty for a program's) and size; two calls, the second with room for the name."""
    fd = btf_fd_by_id(btf_id)
    try:
        first, _ = _get_info(fd)
        name = ctypes.create_string_buffer(max(first["name_len"] + 1, 1))
        got, _ = _get_info(fd, name=ctypes.addressof(name), name_len=len(name))
        return BtfInfo(got["id"], name.value.decode("utf-8", "replace"), got["btf_size"],
                       bool(got["kernel_btf"]))
    finally:
        os.close(fd)


def read_btf(btf_id: int) -> bytes:
    """The raw BTF of `btf_id` (two calls: size, then data)."""
    fd = btf_fd_by_id(btf_id)
    try:
        first, _ = _get_info(fd)
        size = first["btf_size"]
        data = ctypes.create_string_buffer(max(size, 1))
        got, _ = _get_info(fd, btf=ctypes.addressof(data), btf_size=size)
        return data.raw[:min(size, got["btf_size"])]
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Btf:
    """One BTF blob, checked at parse time; types are indexed on first use.  Only
    standalone BTF (a program's, or vmlinux) numbers its types from 1; split BTF (a
    module's) would continue after its base and is not resolved here."""

    data: bytes
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int
    file: str | None = field(default=None, compare=False)
    offset: int = field(default=0, compare=False)  # of the blob in `file`, for errors
    _types: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def parse(cls, data: bytes, *, file: str | None = None, offset: int = 0) -> "Btf":
        """Check the header and section bounds of a raw BTF blob (FormatError naming
        `file` and the blob's `offset` in it); the types are not decoded yet."""
        def bad(message, name, at=0):
            return FormatError(message, file=file, offset=offset + at, field=f"btf.{name}")

        if len(data) < BTF_HEADER.size:
            raise bad(f"{len(data)} bytes is shorter than the BTF header", "header")
        h = BTF_HEADER.unpack(data)
        if h["magic"] != BTF_MAGIC:
            raise bad(f"magic {h['magic']:#x} is not {BTF_MAGIC:#x}", "magic")
        if h["version"] != 1:
            raise bad(f"version {h['version']} is not 1", "version", 2)
        if not BTF_HEADER.size <= h["hdr_len"] <= len(data):
            raise bad(f"hdr_len {h['hdr_len']} is outside {BTF_HEADER.size}..{len(data)}",
                      "hdr_len", 4)
        body = len(data) - h["hdr_len"]
        for name in ("type", "str"):
            off, n = h[f"{name}_off"], h[f"{name}_len"]
            if off + n > body:
                raise bad(f"{name} section {off}+{n} overruns the {body} bytes after the "
                          f"header", f"{name}_len", BTF_HEADER.offset[f"{name}_len"])
        if h["str_len"] and data[h["hdr_len"] + h["str_off"]] != 0:
            raise bad("the string section does not start with an empty string", "str_off",
                      BTF_HEADER.offset["str_off"])
        return cls(bytes(data), h["hdr_len"], h["type_off"], h["type_len"], h["str_off"],
                   h["str_len"], file, offset)

    @classmethod
    def from_kernel(cls, btf_id: int) -> "Btf":
        """The kernel's BTF object `btf_id`, read through the bpf syscall (needs
        CAP_SYS_ADMIN; NoSuchObject once the object is freed)."""
        return cls.parse(read_btf(btf_id), file=f"<btf id {btf_id}>")

    def _bad(self, message: str, name: str, at: int) -> FormatError:
        return FormatError(message, file=self.file, offset=self.offset + at,
                           field=f"btf.{name}")

    def string_at(self, off: int) -> str:
        """The NUL-terminated string at `off` in the string section."""
        if not 0 <= off < self.str_len:
            raise self._bad(f"string offset {off} is outside the {self.str_len}-byte "
                            f"string section", "name_off", self.hdr_len + self.str_off)
        start = self.hdr_len + self.str_off + off
        end = self.data.find(b"\0", start, self.hdr_len + self.str_off + self.str_len)
        if end < 0:
            raise self._bad(f"string at {off} runs off the end of the string section",
                            "str_len", start)
        return self.data[start:end].decode("utf-8", "replace")

    def _index(self) -> list:
        """(kind, name_off, info, size_or_type, offset) per type; index 0 is void."""
        if self._types:
            return self._types
        types = [(0, 0, 0, 0, 0)]
        pos = self.hdr_len + self.type_off
        end = pos + self.type_len
        while pos < end:
            if pos + BTF_TYPE.size > end:
                raise self._bad("a type record runs off the end of the type section",
                                "type_len", pos)
            name_off, info, size_or_type = BTF_TYPE.struct.unpack_from(self.data, pos)
            kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
            if not 0 < kind < len(KINDS):
                raise self._bad(f"type [{len(types)}] has unknown kind {kind}", "type.info",
                                pos + 4)
            fixed, per_item = _TAIL.get(kind, (0, 0))
            types.append((kind, name_off, info, size_or_type, pos))
            pos += BTF_TYPE.size + fixed + per_item * vlen
        if pos != end:
            raise self._bad("the last type record runs off the end of the type section",
                            "type_len", end)
        self._types.extend(types)
        return self._types

    @property
    def type_count(self) -> int:
        """Type ids run from 1 to type_count (0 is void)."""
        return len(self._index()) - 1

    def kind(self, type_id: int) -> str:
        """BTF_KIND_* name without the prefix ("FUNC", "INT", ...)."""
        return KINDS[self._type(type_id)[0]]

    def type_name(self, type_id: int) -> str:
        """The type's name, "" for anonymous types and void."""
        return self.string_at(self._type(type_id)[1]) if type_id else ""

    def _type(self, type_id: int):
        types = self._index()
        if not 0 <= type_id < len(types):
            raise self._bad(f"type id {type_id} is not among the {len(types) - 1} types",
                            "type_id", self.hdr_len + self.type_off)
        return types[type_id]

"""struct bpf_prog_info: read from the kernel, and in perf's linear ("bpil") layout.

Reading follows perf's two passes: ask once for the counts and lengths, allocate every
array, ask again.  The linear layout is how perf.data's HEADER_BPF_PROG_INFO stores a
program (tools/perf/util/bpf-utils.c): the info struct with each array pointer replaced by
the array's offset in a data blob that follows, arrays in a fixed order, each padded to 8.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import struct
from dataclasses import dataclass, field

from ..errors import FormatError
from .syscall import obj_info, prog_fd_by_id

# The struct as of Linux 6.x (232 bytes); names are the kernel's.
_INFO = struct.Struct("<II8sIIQQQII Q16sII QQII QQII QIIQ QIII IQ QQQ III 4x")
_INFO_NAMES = (
    "type", "id", "tag", "jited_prog_len", "xlated_prog_len", "jited_prog_insns",
    "xlated_prog_insns", "load_time", "created_by_uid", "nr_map_ids",
    "map_ids", "name", "ifindex", "gpl_compatible",
    "netns_dev", "netns_ino", "nr_jited_ksyms", "nr_jited_func_lens",
    "jited_ksyms", "jited_func_lens", "btf_id", "func_info_rec_size",
    "func_info", "nr_func_info", "nr_line_info", "line_info",
    "jited_line_info", "nr_jited_line_info", "line_info_rec_size", "jited_line_info_rec_size",
    "nr_prog_tags", "prog_tags", "run_time_ns", "run_cnt", "recursion_misses",
    "verified_insns", "attach_btf_obj_id", "attach_btf_id",
)
INFO_SIZE = _INFO.size
_OFF = {}
_pos = 0
for _name, _code in zip(_INFO_NAMES, ("I", "I", "8s", "I", "I", "Q", "Q", "Q", "I", "I", "Q",
                                      "16s", "I", "I", "Q", "Q", "I", "I", "Q", "Q", "I", "I",
                                      "Q", "I", "I", "Q", "Q", "I", "I", "I", "I", "Q", "Q",
                                      "Q", "Q", "I", "I", "I")):
    _OFF[_name] = _pos
    _pos += struct.calcsize("<" + _code)


@dataclass(frozen=True)
class _Array:
    """One array of bpf_prog_info: pointer field, count field, and element size (fixed,
    or read from a rec_size field)."""

    ptr: str
    count: str
    size: int | str


# perf's PERF_BPIL_* order: the bit number in `arrays` and the order in the data blob.
BPIL_ARRAYS = (
    _Array("jited_prog_insns", "jited_prog_len", 1),
    _Array("xlated_prog_insns", "xlated_prog_len", 1),
    _Array("map_ids", "nr_map_ids", 4),
    _Array("jited_ksyms", "nr_jited_ksyms", 8),
    _Array("jited_func_lens", "nr_jited_func_lens", 4),
    _Array("func_info", "nr_func_info", "func_info_rec_size"),
    _Array("line_info", "nr_line_info", "line_info_rec_size"),
    _Array("jited_line_info", "nr_jited_line_info", "jited_line_info_rec_size"),
    _Array("prog_tags", "nr_prog_tags", 8),
)
ALL_ARRAYS = (1 << len(BPIL_ARRAYS)) - 1


# enum bpf_prog_type (include/uapi/linux/bpf.h)
PROG_TYPES = (
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp",
    "perf_event", "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops",
    "sk_skb", "cgroup_device", "sk_msg", "raw_tracepoint", "cgroup_sock_addr",
    "lwt_seg6local", "lirc_mode2", "sk_reuseport", "flow_dissector", "cgroup_sysctl",
    "raw_tracepoint_writable", "cgroup_sockopt", "tracing", "struct_ops", "ext", "lsm",
    "sk_lookup", "syscall", "netfilter")


def prog_type_name(t: int) -> str:
    return PROG_TYPES[t] if 0 <= t < len(PROG_TYPES) else f"type_{t}"


def _round8(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True)
class LineInfo:
    insn_off: int      # xlated instruction index
    file_name_off: int  # offsets into the program's BTF string section
    line_off: int
    line: int
    col: int


@dataclass(frozen=True)
class ProgInfo:
    """What the kernel told about one program.  `info` holds the struct's scalar fields by
    their kernel names; the arrays are decoded."""

    info: dict
    info_len: int
    arrays: int = ALL_ARRAYS
    jited_insns: bytes = b""
    xlated_insns: bytes = b""
    map_ids: tuple[int, ...] = ()
    jited_ksyms: tuple[int, ...] = ()
    jited_func_lens: tuple[int, ...] = ()
    func_info: tuple[tuple[int, int], ...] = ()      # (insn_off, type_id)
    line_info: tuple[LineInfo, ...] = ()
    jited_line_info: tuple[int, ...] = ()            # JIT address per line_info entry
    prog_tags: tuple[bytes, ...] = ()
    raw_info: bytes = field(default=b"", compare=False, repr=False)
    raw_arrays: dict = field(default_factory=dict, compare=False, repr=False)
    # perf.data's data blob as read: perf mallocs it, so its padding holds whatever was in
    # memory, and an exact rewrite must carry those bytes too
    raw_data: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> int:
        return self.info["id"]

    @property
    def tag(self) -> bytes:
        return self.info["tag"]

    @property
    def name(self) -> str:
        return self.info["name"].split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def type(self) -> int:
        return self.info["type"]

    def funcs(self) -> list[tuple[int, int, bytes]]:
        """(JIT address, length, bytes) of every function: main program, then subprograms,
        cut from the one jited image the kernel returns for all of them."""
        out, pos = [], 0
        lens = self.jited_func_lens or ((len(self.jited_insns),) if self.jited_ksyms else ())
        for addr, n in zip(self.jited_ksyms, lens):
            out.append((addr, n, self.jited_insns[pos:pos + n]))
            pos += n
        return out

    # --- perf's linear layout ------------------------------------------------------------
    def to_bpil(self) -> tuple[int, int, int, bytes, bytes]:
        """(info_len, data_len, arrays, info bytes, data) as perf writes them."""
        info = bytearray(self.raw_info or _pack_info(self.info, self.info_len))
        if self.raw_data is not None:
            return len(info), len(self.raw_data), self.arrays, bytes(info), self.raw_data
        data = bytearray()
        for bit, a in enumerate(BPIL_ARRAYS):
            if not self.arrays >> bit & 1:
                continue
            blob = self.raw_arrays[a.ptr] if a.ptr in self.raw_arrays else \
                self._array_bytes(a)
            struct.pack_into("<Q", info, _OFF[a.ptr], len(data))
            data += blob.ljust(_round8(len(blob)), b"\0")
        return len(info), len(data), self.arrays, bytes(info), bytes(data)

    def _array_bytes(self, a: _Array) -> bytes:
        if a.ptr == "jited_prog_insns":
            return self.jited_insns
        if a.ptr == "xlated_prog_insns":
            return self.xlated_insns
        if a.ptr == "map_ids":
            return struct.pack(f"<{len(self.map_ids)}I", *self.map_ids)
        if a.ptr == "jited_ksyms":
            return struct.pack(f"<{len(self.jited_ksyms)}Q", *self.jited_ksyms)
        if a.ptr == "jited_func_lens":
            return struct.pack(f"<{len(self.jited_func_lens)}I", *self.jited_func_lens)
        if a.ptr == "func_info":
            return b"".join(struct.pack("<II", *f) for f in self.func_info)
        if a.ptr == "line_info":
            return b"".join(struct.pack("<IIII", li.insn_off, li.file_name_off, li.line_off,
                                        li.line << 10 | li.col) for li in self.line_info)
        if a.ptr == "jited_line_info":
            return struct.pack(f"<{len(self.jited_line_info)}Q", *self.jited_line_info)
        return b"".join(self.prog_tags)

    @classmethod
    def from_bpil(cls, info_len: int, data_len: int, arrays: int, info: bytes,
                  data: bytes, *, file: str | None = None, offset: int = 0) -> "ProgInfo":
        """Decode perf's linear layout; every array must lie inside `data`."""
        fields = _unpack_info(info)
        blobs = {}
        for bit, a in enumerate(BPIL_ARRAYS):
            if not arrays >> bit & 1:
                continue
            n = fields[a.count]
            size = fields[a.size] if isinstance(a.size, str) else a.size
            off = fields[a.ptr]
            if off + n * size > len(data):
                raise FormatError(f"{a.ptr}: {n} x {size} bytes at {off} overrun the "
                                  f"{len(data)}-byte data", file=file, offset=offset,
                                  field=f"bpf_prog_info.{a.ptr}")
            blobs[a.ptr] = bytes(data[off:off + n * size])
        return dataclasses.replace(_from_blobs(fields, info_len, arrays, blobs, bytes(info)),
                                   raw_data=bytes(data))


def _unpack_info(raw: bytes) -> dict:
    return dict(zip(_INFO_NAMES, _INFO.unpack(bytes(raw[:INFO_SIZE]).ljust(INFO_SIZE,
                                                                             b"\0"))))


def _pack_info(fields: dict, info_len: int) -> bytes:
    return _INFO.pack(*(fields[n] for n in _INFO_NAMES))[:info_len].ljust(info_len, b"\0")


def _from_blobs(fields: dict, info_len: int, arrays: int, blobs: dict,
                raw_info: bytes) -> ProgInfo:
    def u(fmt, key):
        b = blobs.get(key, b"")
        n = len(b) // struct.calcsize(fmt)
        return struct.unpack(f"<{n}{fmt}", b[:n * struct.calcsize(fmt)])

    fi_size = fields["func_info_rec_size"] or 8
    func_info = tuple(struct.unpack_from("<II", blobs.get("func_info", b""), k)
                      for k in range(0, len(blobs.get("func_info", b"")) - 7, fi_size))
    li_size = fields["line_info_rec_size"] or 16
    li_blob = blobs.get("line_info", b"")
    line_info = []
    for k in range(0, len(li_blob) - 15, li_size):
        insn_off, file_off, line_off, line_col = struct.unpack_from("<IIII", li_blob, k)
        line_info.append(LineInfo(insn_off, file_off, line_off, line_col >> 10,
                                  line_col & 0x3FF))
    jl_size = fields["jited_line_info_rec_size"] or 8
    jl_blob = blobs.get("jited_line_info", b"")
    jited_lines = tuple(struct.unpack_from("<Q", jl_blob, k)[0]
                        for k in range(0, len(jl_blob) - 7, jl_size))
    tags = blobs.get("prog_tags", b"")
    return ProgInfo(
        info=fields, info_len=info_len, arrays=arrays,
        jited_insns=blobs.get("jited_prog_insns", b""),
        xlated_insns=blobs.get("xlated_prog_insns", b""),
        map_ids=u("I", "map_ids"), jited_ksyms=u("Q", "jited_ksyms"),
        jited_func_lens=u("I", "jited_func_lens"), func_info=func_info,
        line_info=tuple(line_info), jited_line_info=jited_lines,
        prog_tags=tuple(tags[k:k + 8] for k in range(0, len(tags), 8)),
        raw_info=raw_info, raw_arrays=dict(blobs))


def read_prog_info(fd: int, arrays: int = ALL_ARRAYS) -> ProgInfo:
    """The program's info and the arrays asked for, read with two calls as perf does."""
    first = ctypes.create_string_buffer(INFO_SIZE)
    info_len = min(obj_info(fd, first), INFO_SIZE)
    fields = _unpack_info(first.raw)
    info = bytearray(first.raw[:INFO_SIZE])
    buffers = {}
    for bit, a in enumerate(BPIL_ARRAYS):
        if not arrays >> bit & 1:
            struct.pack_into("<I", info, _OFF[a.count], 0)  # the kernel fills nothing
            continue
        n = fields[a.count]
        size = fields[a.size] if isinstance(a.size, str) else a.size
        buf = ctypes.create_string_buffer(max(n * size, 1))
        buffers[a.ptr] = (buf, n * size)
        struct.pack_into("<Q", info, _OFF[a.ptr], ctypes.addressof(buf))
    second = ctypes.create_string_buffer(bytes(info), INFO_SIZE)
    obj_info(fd, second)
    got = _unpack_info(second.raw)
    blobs = {}
    for bit, a in enumerate(BPIL_ARRAYS):
        if a.ptr in buffers:
            buf, cap = buffers[a.ptr]
            size = got[a.size] if isinstance(a.size, str) else a.size
            blobs[a.ptr] = buf.raw[:min(cap, got[a.count] * size)]
            got[a.ptr] = 0
    # pointers are meaningless outside this process: keep offsets-to-be as zeros
    raw = _pack_info(got, info_len)
    return _from_blobs(got, info_len, arrays, blobs, raw)


def read_prog_by_id(prog_id: int, arrays: int = ALL_ARRAYS) -> ProgInfo:
    """GET_FD_BY_ID then read: raises NoSuchObject once the program is gone."""
    fd = prog_fd_by_id(prog_id)
    try:
        return read_prog_info(fd, arrays)
    finally:
        os.close(fd)

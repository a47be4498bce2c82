"""struct bpf_prog_info: read from the kernel, and in perf's linear ("bpil") layout.

Reading follows perf's two passes: ask once for the counts and lengths, allocate every
array, ask again.  The linear layout is how perf.data's HEADER_BPF_PROG_INFO stores a
program (tools/perf/util/bpf-utils.c, perf 6.1): u32 info_len, u32 data_len, u64 arrays
(bit i set when array i of BPIL_ARRAYS is present), the info struct with each present
array's pointer replaced by the array's offset in `data`, then `data`: the present arrays
in BPIL_ARRAYS order, each padded to 8 bytes.  perf sizes `data` from the first pass's
counts and mallocs it, so padding bytes are whatever was in memory; a ProgInfo decoded
from perf's bytes keeps them and writes them back unchanged.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import struct
from dataclasses import dataclass, field

from ..errors import FormatError
from .syscall import Layout, obj_info, prog_fd_by_id

# struct bpf_prog_info as of Linux 6.1 .. 6.18 (232 bytes); names are the kernel's.
PROG_INFO = Layout("struct bpf_prog_info", (
    ("type", "I"), ("id", "I"), ("tag", "8s"), ("jited_prog_len", "I"),
    ("xlated_prog_len", "I"), ("jited_prog_insns", "Q"), ("xlated_prog_insns", "Q"),
    ("load_time", "Q"), ("created_by_uid", "I"), ("nr_map_ids", "I"), ("map_ids", "Q"),
    ("name", "16s"), ("ifindex", "I"),
    ("gpl_compatible", "I"),  # bit 0; the other 31 bits are padding
    ("netns_dev", "Q"), ("netns_ino", "Q"), ("nr_jited_ksyms", "I"),
    ("nr_jited_func_lens", "I"), ("jited_ksyms", "Q"), ("jited_func_lens", "Q"),
    ("btf_id", "I"), ("func_info_rec_size", "I"), ("func_info", "Q"), ("nr_func_info", "I"),
    ("nr_line_info", "I"), ("line_info", "Q"), ("jited_line_info", "Q"),
    ("nr_jited_line_info", "I"), ("line_info_rec_size", "I"),
    ("jited_line_info_rec_size", "I"), ("nr_prog_tags", "I"), ("prog_tags", "Q"),
    ("run_time_ns", "Q"), ("run_cnt", "Q"), ("recursion_misses", "Q"),
    ("verified_insns", "I"), ("attach_btf_obj_id", "I"), ("attach_btf_id", "I"),
    (None, "4x")))
_INFO = PROG_INFO.struct
_INFO_NAMES = PROG_INFO.names
INFO_SIZE = PROG_INFO.size
_OFF = PROG_INFO.offset

BPF_TAG_SIZE = 8


@dataclass(frozen=True)
class _Array:
    """One array of bpf_prog_info: pointer field, count field, and element size (fixed,
    or read from a rec_size field, with the smallest record the decoder accepts)."""

    ptr: str
    count: str
    size: int | str
    min_size: int = 1


# perf's PERF_BPIL_* order: the bit number in `arrays` and the order in the data blob.
BPIL_ARRAYS = (
    _Array("jited_prog_insns", "jited_prog_len", 1),
    _Array("xlated_prog_insns", "xlated_prog_len", 1),
    _Array("map_ids", "nr_map_ids", 4),
    _Array("jited_ksyms", "nr_jited_ksyms", 8),
    _Array("jited_func_lens", "nr_jited_func_lens", 4),
    _Array("func_info", "nr_func_info", "func_info_rec_size", 8),
    _Array("line_info", "nr_line_info", "line_info_rec_size", 16),
    _Array("jited_line_info", "nr_jited_line_info", "jited_line_info_rec_size", 8),
    _Array("prog_tags", "nr_prog_tags", BPF_TAG_SIZE),
)
ALL_ARRAYS = (1 << len(BPIL_ARRAYS)) - 1
_ARRAY_BIT = {a.ptr: bit for bit, a in enumerate(BPIL_ARRAYS)}
# What `perf record` asks for (tools/perf/util/bpf-event.c, perf 6.1): everything but the
# xlated instructions and the map ids.
PERF_ARRAYS = ALL_ARRAYS & ~(1 << _ARRAY_BIT["xlated_prog_insns"]) \
    & ~(1 << _ARRAY_BIT["map_ids"])
# The JIT images alone, with where each function sits.
JIT_ARRAYS = sum(1 << _ARRAY_BIT[a] for a in ("jited_prog_insns", "jited_ksyms",
                                             "jited_func_lens"))


# enum bpf_prog_type (include/uapi/linux/bpf.h)
PROG_TYPES = (
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp",
    "perf_event", "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops",
    "sk_skb", "cgroup_device", "sk_msg", "raw_tracepoint", "cgroup_sock_addr",
    "lwt_seg6local", "lirc_mode2", "sk_reuseport", "flow_dissector", "cgroup_sysctl",
    "raw_tracepoint_writable", "cgroup_sockopt", "tracing", "struct_ops", "ext", "lsm",
    "sk_lookup", "syscall", "netfilter")


def prog_type_name(t: int) -> str:
    """enum bpf_prog_type as bpftool names it ("kprobe", "xdp"); "type_N" for one newer
    than this table."""
    return PROG_TYPES[t] if 0 <= t < len(PROG_TYPES) else f"type_{t}"


def _round8(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True)
class LineInfo:
    """struct bpf_line_info, with line_col split: line = line_col >> 10, col = & 0x3ff."""

    insn_off: int       # xlated instruction index
    file_name_off: int  # offsets into the program's BTF string section
    line_off: int
    line: int
    col: int

    @property
    def line_col(self) -> int:
        """The kernel's packed form: line << 10 | col."""
        return self.line << 10 | self.col


@dataclass(frozen=True)
class ProgInfo:
    """What the kernel told about one program.  `info` holds the struct's scalar fields by
    their kernel names (also readable as attributes: `p.btf_id`, `p.load_time`); array
    pointer fields are 0 there, the arrays themselves are decoded into the fields below.
    Units: load_time in ns of CLOCK_BOOTTIME; run_time_ns in ns (counted only while
    kernel.bpf_stats_enabled); jited_ksyms and jited_line_info are kernel virtual addresses.
    """

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
    prog_tags: tuple[bytes, ...] = ()                # per function, as jited_ksyms
    raw_info: bytes = field(default=b"", compare=False, repr=False)
    raw_arrays: dict = field(default_factory=dict, compare=False, repr=False)
    # perf.data's data blob as read: perf mallocs it, so its padding holds whatever was in
    # memory, and an exact rewrite must carry those bytes too
    raw_data: bytes | None = field(default=None, compare=False, repr=False)

    def __getattr__(self, name: str):
        # only reached for names that are not dataclass fields or properties
        info = self.__dict__.get("info")
        if info is not None and name in info:
            return info[name]
        raise AttributeError(name)

    @property
    def id(self) -> int:
        """The kernel's program id (idr_alloc_cyclic: not reused before the ids wrap)."""
        return self.info["id"]

    @property
    def tag(self) -> bytes:
        """The 8-byte hash the kernel computes over the program's instructions (map fds
        zeroed): the name part of bpf_prog_<tag> ksyms."""
        return self.info["tag"]

    @property
    def name(self) -> str:
        """The name the loader gave (BPF_OBJ_NAME_LEN, 16 bytes with the NUL)."""
        return self.info["name"].split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def type(self) -> int:
        """enum bpf_prog_type; prog_type_name() names it."""
        return self.info["type"]

    @property
    def gpl_compatible(self) -> bool:
        """The program declared a GPL-compatible license (bit 0 of the info's bitfield)."""
        return bool(self.info["gpl_compatible"] & 1)

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
        """(info_len, data_len, arrays, info bytes, data) as perf writes them.  Bytes read
        from perf.data come back unchanged as long as what they decode to is unchanged."""
        if self.raw_data is not None and self.raw_info:
            try:
                same = _decode_bpil(len(self.raw_info), self.arrays, self.raw_info,
                                    self.raw_data) == self
            except FormatError:
                same = False
            if same:
                return (len(self.raw_info), len(self.raw_data), self.arrays,
                        bytes(self.raw_info), bytes(self.raw_data))
        if self.raw_info and len(self.raw_info) == self.info_len and \
                _normalised(unpack_info(self.raw_info)) == self.info:
            info = bytearray(self.raw_info)
        else:
            info = bytearray(_pack_info(self.info, self.info_len))
        data = bytearray()
        for bit, a in enumerate(BPIL_ARRAYS):
            if not self.arrays >> bit & 1:
                continue
            blob = self._array_bytes(a)
            struct.pack_into("<Q", info, _OFF[a.ptr], len(data))
            data += blob.ljust(_round8(len(blob)), b"\0")
        return len(info), len(data), self.arrays, bytes(info), bytes(data)

    def _array_bytes(self, a: _Array) -> bytes:
        def recs(fmt, items, size_field):
            size = max(self.info[size_field], struct.calcsize(fmt))
            return b"".join(struct.pack(fmt, *r).ljust(size, b"\0") for r in items)

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
            return recs("<II", self.func_info, "func_info_rec_size")
        if a.ptr == "line_info":
            return recs("<IIII", ((li.insn_off, li.file_name_off, li.line_off, li.line_col)
                                  for li in self.line_info), "line_info_rec_size")
        if a.ptr == "jited_line_info":
            return recs("<Q", ((x,) for x in self.jited_line_info),
                        "jited_line_info_rec_size")
        return b"".join(self.prog_tags)

    @classmethod
    def from_bpil(cls, info_len: int, data_len: int, arrays: int, info: bytes,
                  data: bytes, *, file: str | None = None, offset: int = 0) -> "ProgInfo":
        """Decode perf's linear layout; every array must lie inside `data`.  `file` and
        `offset` (of this program's entry) only name the place in errors."""
        if len(info) != info_len or len(data) != data_len:
            raise FormatError(f"info is {len(info)} bytes for info_len {info_len}, data "
                              f"{len(data)} for data_len {data_len}", file=file,
                              offset=offset, field="bpf_prog_info.info_len")
        return _decode_bpil(info_len, arrays, info, data, file=file, offset=offset)


def bpil_id(info: bytes) -> int:
    """The program id in a bpf_prog_info's bytes (as from_bpil would decode it, short
    structs zero-filled), read without decoding the rest: a file's 5000 programs are
    indexed by id, and a view decodes only the one it asks for."""
    at = _OFF["id"]
    return int.from_bytes(bytes(info[at:at + 4]).ljust(4, b"\0"), "little")


def unpack_info(raw: bytes) -> dict:
    """struct bpf_prog_info's fields by name from its raw bytes (short ones zero-filled, as
    an older kernel's shorter struct reads); recorder/finish.py reads a capture's counts with it."""
    return PROG_INFO.unpack(bytes(raw[:INFO_SIZE]).ljust(INFO_SIZE, b"\0"))


def _pack_info(fields: dict, info_len: int) -> bytes:
    return _INFO.pack(*(fields[n] for n in _INFO_NAMES))[:info_len].ljust(info_len, b"\0")


def _normalised(fields: dict) -> dict:
    """The fields with every array pointer zeroed: pointers (and perf's offsets) say where
    the arrays were, not what they hold."""
    for a in BPIL_ARRAYS:
        fields[a.ptr] = 0
    return fields


def _decode_bpil(info_len: int, arrays: int, info: bytes, data: bytes, *,
                 file: str | None = None, offset: int = 0) -> ProgInfo:
    if arrays >> len(BPIL_ARRAYS):
        raise FormatError(f"arrays bitmap {arrays:#x} has bits beyond the "
                          f"{len(BPIL_ARRAYS)} arrays perf knows", file=file, offset=offset,
                          field="bpf_prog_info.arrays")
    fields = unpack_info(info)
    blobs = {}
    for bit, a in enumerate(BPIL_ARRAYS):
        if not arrays >> bit & 1:
            continue
        n = fields[a.count]
        size = fields[a.size] if isinstance(a.size, str) else a.size
        if n and size < a.min_size:
            raise FormatError(f"{a.size} {size} is smaller than one record "
                              f"({a.min_size} bytes)", file=file, offset=offset,
                              field=f"bpf_prog_info.{a.size}")
        off = fields[a.ptr]
        if off + n * size > len(data):
            raise FormatError(f"{a.ptr}: {n} x {size} bytes at {off} overrun the "
                              f"{len(data)}-byte data", file=file, offset=offset,
                              field=f"bpf_prog_info.{a.ptr}")
        blobs[a.ptr] = bytes(data[off:off + n * size])
    return dataclasses.replace(from_blobs(fields, info_len, arrays, blobs, bytes(info)),
                               raw_data=bytes(data))


def from_blobs(fields: dict, info_len: int, arrays: int, blobs: dict,
               raw_info: bytes) -> ProgInfo:
    """A ProgInfo from bpf_prog_info's fields and its arrays' bytes by name (`blobs`), as the
    syscall, the capture program and the store each deliver them."""
    def u(fmt, key):
        b = blobs.get(key, b"")
        n = len(b) // struct.calcsize(fmt)
        return struct.unpack(f"<{n}{fmt}", b[:n * struct.calcsize(fmt)])

    def records(key, size_field, fmt):
        b = blobs.get(key, b"")
        size = fields[size_field] or struct.calcsize(fmt)
        return [struct.unpack_from(fmt, b, k)
                for k in range(0, len(b) - struct.calcsize(fmt) + 1, size)]

    fields = _normalised(dict(fields))
    func_info = tuple(records("func_info", "func_info_rec_size", "<II"))
    line_info = tuple(LineInfo(insn_off, file_off, line_off, line_col >> 10, line_col & 0x3FF)
                      for insn_off, file_off, line_off, line_col
                      in records("line_info", "line_info_rec_size", "<IIII"))
    jited_lines = tuple(x for (x,) in records("jited_line_info", "jited_line_info_rec_size",
                                              "<Q"))
    tags = blobs.get("prog_tags", b"")
    return ProgInfo(
        info=fields, info_len=info_len, arrays=arrays,
        jited_insns=blobs.get("jited_prog_insns", b""),
        xlated_insns=blobs.get("xlated_prog_insns", b""),
        map_ids=u("I", "map_ids"), jited_ksyms=u("Q", "jited_ksyms"),
        jited_func_lens=u("I", "jited_func_lens"), func_info=func_info,
        line_info=line_info, jited_line_info=jited_lines,
        prog_tags=tuple(tags[k:k + BPF_TAG_SIZE] for k in range(0, len(tags), BPF_TAG_SIZE)),
        raw_info=raw_info, raw_arrays=dict(blobs))


def read_prog_info(fd: int, arrays: int = ALL_ARRAYS) -> ProgInfo:
    """The program's info and the arrays asked for (a BPIL_ARRAYS bitmap), read with two
    calls as perf does.  Root sees the JIT image and addresses; without the right to dump
    raw kernel data the kernel reports the JIT lengths as 0."""
    first = ctypes.create_string_buffer(INFO_SIZE)
    info_len = min(obj_info(fd, first), INFO_SIZE)
    fields = unpack_info(first.raw)
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
    got = unpack_info(second.raw)
    blobs = {}
    for bit, a in enumerate(BPIL_ARRAYS):
        if a.ptr in buffers:
            buf, cap = buffers[a.ptr]
            size = got[a.size] if isinstance(a.size, str) else a.size
            blobs[a.ptr] = buf.raw[:min(cap, got[a.count] * size)]
    got = _normalised(got)
    return from_blobs(got, info_len, arrays, blobs, _pack_info(got, info_len))


def read_prog_by_id(prog_id: int, arrays: int = ALL_ARRAYS) -> ProgInfo:
    """GET_FD_BY_ID then read: raises NoSuchObject once the program is gone."""
    fd = prog_fd_by_id(prog_id)
    try:
        return read_prog_info(fd, arrays)
    finally:
        os.close(fd)

"""The bpf(2) syscall, through ctypes.

Commands and attr layouts follow include/uapi/linux/bpf.h; every attr (and every info
struct in the sibling modules) is one declared `Layout` with the kernel's field names, used
for both packing and unpacking.  Errors become exceptions of our own: EPERM is a
`PermissionProblem` naming the capability the command needs, ENOENT a `NoSuchObject`,
anything else a `BpfError` carrying the errno.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import struct

from ..errors import KernelError, PermissionProblem

NR_BPF = 321  # x86-64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint)


class Cmd(enum.IntEnum):
    """enum bpf_cmd (the ones textrace issues)."""

    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    PROG_LOAD = 5
    PROG_TEST_RUN = 10
    PROG_GET_NEXT_ID = 11
    MAP_GET_NEXT_ID = 12
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15
    BTF_GET_FD_BY_ID = 19
    BTF_GET_NEXT_ID = 23


class Layout:
    """One C struct, declared once: (kernel field name, struct code) pairs in order, little
    endian, with padding written as (None, "4x").  `pack(**fields)` leaves absent fields
    zero; `unpack(buf)` gives a dict by field name; `offset[name]` is the byte offset."""

    def __init__(self, cname: str, fields: tuple[tuple[str | None, str], ...]):
        self.cname = cname
        self.names = tuple(n for n, _ in fields if n is not None)
        self.struct = struct.Struct("<" + "".join(code for _, code in fields))
        self.size = self.struct.size
        self.offset: dict[str, int] = {}
        self.code: dict[str, str] = {}
        pos = 0
        for name, code in fields:
            if name is not None:
                self.offset[name] = pos
                self.code[name] = code
            pos += struct.calcsize("<" + code)
        self._zero = tuple(b"" if self.code[n].endswith("s") else 0 for n in self.names)

    def pack(self, **fields) -> bytes:
        """The struct's bytes; fields not given are zero, unknown names a TypeError."""
        unknown = set(fields) - set(self.offset)
        if unknown:
            raise TypeError(f"{self.cname} has no field {', '.join(sorted(unknown))}")
        return self.struct.pack(*(fields.get(n, z) for n, z in zip(self.names, self._zero)))

    def unpack(self, buf, offset: int = 0) -> dict:
        """The struct at `offset` of buf, by the kernel's field names."""
        return dict(zip(self.names, self.struct.unpack_from(buf, offset)))


# union bpf_attr, the member each command reads.  The start/prog/map/btf id share offset 0.
ATTR_GET_ID = Layout("bpf_attr (*_GET_NEXT_ID, *_GET_FD_BY_ID)", (
    ("start_id", "I"), ("next_id", "I"), ("open_flags", "I")))
ATTR_INFO = Layout("bpf_attr.info (OBJ_GET_INFO_BY_FD)", (
    ("bpf_fd", "I"), ("info_len", "I"), ("info", "Q")))
ATTR_PROG_LOAD = Layout("bpf_attr (PROG_LOAD)", (
    ("prog_type", "I"), ("insn_cnt", "I"), ("insns", "Q"), ("license", "Q"),
    ("log_level", "I"), ("log_size", "I"), ("log_buf", "Q"), ("kern_version", "I"),
    ("prog_flags", "I"), ("prog_name", "16s"), ("prog_ifindex", "I"),
    ("expected_attach_type", "I"), ("prog_btf_fd", "I"), ("func_info_rec_size", "I"),
    ("func_info", "Q"), ("func_info_cnt", "I"), ("line_info_rec_size", "I"),
    ("line_info", "Q"), ("line_info_cnt", "I"), ("attach_btf_id", "I"),
    ("attach_prog_fd", "I"), ("core_relo_cnt", "I"), ("fd_array", "Q"), ("core_relos", "Q"),
    ("core_relo_rec_size", "I"), (None, "4x")))
ATTR_MAP_CREATE = Layout("bpf_attr (MAP_CREATE)", (
    ("map_type", "I"), ("key_size", "I"), ("value_size", "I"), ("max_entries", "I"),
    ("map_flags", "I"), ("inner_map_fd", "I"), ("numa_node", "I"), ("map_name", "16s"),
    ("map_ifindex", "I"), ("btf_fd", "I"), ("btf_key_type_id", "I"),
    ("btf_value_type_id", "I"), ("btf_vmlinux_value_type_id", "I"), ("map_extra", "Q")))
ATTR_MAP_ELEM = Layout("bpf_attr (MAP_*_ELEM)", (
    ("map_fd", "I"), (None, "4x"), ("key", "Q"), ("value", "Q"), ("flags", "Q")))

ATTR_TEST_RUN = Layout("bpf_attr.test (PROG_TEST_RUN)", (
    ("prog_fd", "I"), ("retval", "I"), ("data_size_in", "I"), ("data_size_out", "I"),
    ("data_in", "Q"), ("data_out", "Q"), ("repeat", "I"), ("duration", "I"),
    ("ctx_size_in", "I"), ("ctx_size_out", "I"), ("ctx_in", "Q"), ("ctx_out", "Q"),
    ("flags", "I"), ("cpu", "I"), ("batch_size", "I"), (None, "4x")))

ATTR_SIZE = 144  # sizeof(union bpf_attr) of Linux 6.1; newer kernels take a shorter attr


def _cmd_name(cmd: int) -> str:
    try:
        return Cmd(cmd).name
    except ValueError:
        return f"cmd {cmd}"


def bpf(cmd: int, attr: bytearray | bytes) -> int:
    """Issue one bpf command; a bytearray attr is updated in place from the kernel's copy."""
    buf = ctypes.create_string_buffer(bytes(attr).ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    ret = _libc.syscall(NR_BPF, int(cmd), buf, ATTR_SIZE)
    if ret < 0:
        raise _error(int(cmd), ctypes.get_errno())
    if isinstance(attr, bytearray):
        attr[:] = buf.raw[:len(attr)]
    return ret


class BpfError(KernelError):
    """A bpf command failed; `errno` says why."""

    def __init__(self, message: str, err: int, what: str):
        super().__init__(message, field=what)
        self.errno = err


class NoSuchObject(BpfError):
    """The id names nothing (any more): ENOENT.  For a BPF program, it was unloaded."""


# The capability each command checks (kernel/bpf/syscall.c, Linux 6.x): walking ids and
# turning ids into fds is CAP_SYS_ADMIN only, loading needs CAP_BPF.
_ADMIN = "CAP_SYS_ADMIN (CAP_BPF alone is not enough), or root"
_NEEDS = {
    Cmd.PROG_GET_NEXT_ID: _ADMIN, Cmd.MAP_GET_NEXT_ID: _ADMIN, Cmd.BTF_GET_NEXT_ID: _ADMIN,
    Cmd.PROG_GET_FD_BY_ID: _ADMIN, Cmd.MAP_GET_FD_BY_ID: _ADMIN,
    Cmd.BTF_GET_FD_BY_ID: _ADMIN,
    Cmd.PROG_LOAD: "CAP_BPF (plus CAP_PERFMON or CAP_NET_ADMIN for some program types), "
                   "or root",
}


def _error(cmd: int, err: int) -> Exception:
    what = f"bpf({_cmd_name(cmd)})"
    # PROG_LOAD's EACCES is the verifier rejecting the program, not a missing capability
    if err == errno.EPERM or (err == errno.EACCES and cmd != Cmd.PROG_LOAD):
        needs = _NEEDS.get(cmd, "CAP_BPF, or root")
        return PermissionProblem(f"{os.strerror(err)}: needs {needs}", field=what)
    cls = NoSuchObject if err == errno.ENOENT else BpfError
    return cls(os.strerror(err), err, what)


def _by_id(cmd: Cmd, obj_id: int) -> int:
    return bpf(cmd, ATTR_GET_ID.pack(start_id=obj_id))


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd holding program `prog_id` (NoSuchObject once it is unloaded)."""
    return _by_id(Cmd.PROG_GET_FD_BY_ID, prog_id)


def btf_fd_by_id(btf_id: int) -> int:
    """A new fd holding BTF object `btf_id` (NoSuchObject once it is freed)."""
    return _by_id(Cmd.BTF_GET_FD_BY_ID, btf_id)


def next_ids(cmd: Cmd = Cmd.PROG_GET_NEXT_ID):
    """Every id the kernel has now, ascending (programs by default; BTF_GET_NEXT_ID and
    MAP_GET_NEXT_ID walk the others)."""
    start = 0
    while True:
        attr = bytearray(ATTR_GET_ID.pack(start_id=start))
        try:
            bpf(cmd, attr)
        except NoSuchObject:
            return
        start = ATTR_GET_ID.unpack(attr)["next_id"]
        yield start


def obj_info(fd: int, info: ctypes.Array) -> int:
    """BPF_OBJ_GET_INFO_BY_FD into `info` (a ctypes buffer); returns the kernel's info_len,
    min(len(info), the kernel's own struct size)."""
    attr = bytearray(ATTR_INFO.pack(bpf_fd=fd, info_len=len(info),
                                    info=ctypes.addressof(info)))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    return ATTR_INFO.unpack(attr)["info_len"]


BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_MAP_TYPE_ARRAY = 2
# src_reg of a BPF_LD_IMM64 whose imm is a map fd (the kernel rewrites it to the map)
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_CALL = 1  # src_reg of a BPF_CALL to a bpf-to-bpf subprogram



class IdPoller:
    """The fastest user-space path to a new program: preallocated attrs and raw syscalls,
    no Python objects per call.  `poll()` returns (id, fd or -1) of the next program after
    the last one seen, or None when there is none yet."""

    def __init__(self, last_id: int):
        self.last = last_id
        self._next = ctypes.create_string_buffer(ATTR_SIZE)
        self._byid = ctypes.create_string_buffer(ATTR_SIZE)
        self._next_view = (ctypes.c_uint32 * 2).from_buffer(self._next)
        self._byid_view = (ctypes.c_uint32 * 1).from_buffer(self._byid)

    def poll(self) -> tuple[int, int] | None:
        """(id, fd or -1) of the next program id after the last seen, or None."""
        nxt = self._next_view
        nxt[0] = self.last
        if _libc.syscall(NR_BPF, Cmd.PROG_GET_NEXT_ID, self._next, ATTR_SIZE) < 0:
            return None
        prog_id = nxt[1]
        self.last = prog_id
        return prog_id, self.take(prog_id)

    def take(self, prog_id: int) -> int:
        """An fd on program `prog_id`, or -1 when it is gone already."""
        self._byid_view[0] = prog_id
        return _libc.syscall(NR_BPF, Cmd.PROG_GET_FD_BY_ID, self._byid, ATTR_SIZE)


def prog_load(insns: bytes, *, prog_type: int = BPF_PROG_TYPE_SOCKET_FILTER, name: str = "",
              license: str = "GPL", log_size: int = 0, expected_attach_type: int = 0) -> int:
    """Load raw instructions (8 bytes each); returns the program fd.  For tests and storm
    workloads: real loaders use libbpf.  When the verifier refuses the program and no log
    was asked for, the load is retried once with a log so the error says why."""
    if len(insns) % 8:
        raise ValueError(f"{len(insns)} bytes of instructions is not a multiple of 8")
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode() + b"\0")

    def load(log):
        return bpf(Cmd.PROG_LOAD, ATTR_PROG_LOAD.pack(
            prog_type=prog_type, insn_cnt=len(insns) // 8, insns=ctypes.addressof(insn_buf),
            license=ctypes.addressof(lic), log_level=1 if log else 0,
            log_size=len(log) if log else 0, log_buf=ctypes.addressof(log) if log else 0,
            prog_name=name.encode()[:15], expected_attach_type=expected_attach_type))

    log = ctypes.create_string_buffer(log_size) if log_size else None
    try:
        return load(log)
    except BpfError as e:
        if log is None and e.errno in (errno.EACCES, errno.EINVAL):
            log = ctypes.create_string_buffer(1 << 16)
            try:
                return load(log)
            except BpfError:
                pass
        if log is not None:
            lines = [l for l in log.value.decode(errors="replace").splitlines() if l.strip()]
            if lines:
                e.message += ": verifier: " + " | ".join(lines[-3:])[-400:]
        raise


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, *,
               name: str = "") -> int:
    """A new map; returns its fd."""
    return bpf(Cmd.MAP_CREATE, ATTR_MAP_CREATE.pack(
        map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
        map_name=name.encode()[:15]))


def map_update_elem(map_fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    """BPF_MAP_UPDATE_ELEM; `flags` BPF_ANY (0), BPF_NOEXIST or BPF_EXIST."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    bpf(Cmd.MAP_UPDATE_ELEM, ATTR_MAP_ELEM.pack(map_fd=map_fd, key=ctypes.addressof(k),
                                                value=ctypes.addressof(v), flags=flags))


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1) -> tuple[int, int]:
    """Run a program `repeat` times on `data` in the kernel (BPF_PROG_TEST_RUN): returns
    (its return value, mean ns per run).  Workloads use it to put a program on the CPU."""
    buf = ctypes.create_string_buffer(data, len(data))
    attr = bytearray(ATTR_TEST_RUN.pack(prog_fd=prog_fd, data_size_in=len(data),
                                        data_in=ctypes.addressof(buf), repeat=repeat))
    bpf(Cmd.PROG_TEST_RUN, attr)
    got = ATTR_TEST_RUN.unpack(attr)
    return got["retval"], got["duration"]

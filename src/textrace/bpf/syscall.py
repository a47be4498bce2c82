"""The bpf(2) syscall, through ctypes.  Commands and attr layouts follow
include/uapi/linux/bpf.h; each attr is packed from one declared struct."""

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
    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    PROG_LOAD = 5
    PROG_GET_NEXT_ID = 11
    MAP_GET_NEXT_ID = 12
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15
    BTF_GET_FD_BY_ID = 19
    BTF_GET_NEXT_ID = 23


ATTR_SIZE = 144  # a prefix of union bpf_attr large enough for every command used here


def bpf(cmd: int, attr: bytearray | bytes) -> int:
    """Issue one bpf command; the attr buffer is updated in place by the kernel."""
    buf = ctypes.create_string_buffer(bytes(attr).ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    ret = _libc.syscall(NR_BPF, int(cmd), buf, ATTR_SIZE)
    if ret < 0:
        raise _error(Cmd(cmd).name, ctypes.get_errno())
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


def _error(what: str, err: int) -> Exception:
    if err in (errno.EPERM, errno.EACCES):
        return PermissionProblem(f"bpf({what}): {os.strerror(err)}: needs CAP_BPF "
                                 f"(and CAP_PERFMON), or root", field=what)
    cls = NoSuchObject if err == errno.ENOENT else BpfError
    return cls(f"bpf({what}): {os.strerror(err)}", err, what)


def _by_id(cmd: Cmd, obj_id: int) -> int:
    return bpf(cmd, struct.pack("<III", obj_id, 0, 0))


def prog_fd_by_id(prog_id: int) -> int:
    return _by_id(Cmd.PROG_GET_FD_BY_ID, prog_id)


def btf_fd_by_id(btf_id: int) -> int:
    return _by_id(Cmd.BTF_GET_FD_BY_ID, btf_id)


def next_ids(cmd: Cmd = Cmd.PROG_GET_NEXT_ID):
    """Every id the kernel has now, ascending (programs by default)."""
    start = 0
    while True:
        attr = bytearray(struct.pack("<III", start, 0, 0))
        try:
            bpf(cmd, attr)
        except NoSuchObject:
            return
        start = struct.unpack_from("<I", attr, 4)[0]
        yield start


def obj_info(fd: int, info: ctypes.Array) -> int:
    """BPF_OBJ_GET_INFO_BY_FD into `info` (a ctypes buffer); returns the kernel's info_len."""
    attr = bytearray(struct.pack("<IIQ", fd, len(info), ctypes.addressof(info)))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr)
    return struct.unpack_from("<I", attr, 4)[0]


BPF_PROG_TYPE_SOCKET_FILTER = 1


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
        nxt = self._next_view
        nxt[0] = self.last
        if _libc.syscall(NR_BPF, Cmd.PROG_GET_NEXT_ID, self._next, ATTR_SIZE) < 0:
            return None
        prog_id = nxt[1]
        self._byid_view[0] = prog_id
        fd = _libc.syscall(NR_BPF, Cmd.PROG_GET_FD_BY_ID, self._byid, ATTR_SIZE)
        self.last = prog_id
        return prog_id, fd


def prog_load(insns: bytes, *, prog_type: int = BPF_PROG_TYPE_SOCKET_FILTER, name: str = "",
              license: str = "GPL", log_size: int = 0) -> int:
    """Load raw instructions (8 bytes each); returns the program fd.  For tests and storm
    workloads: real loaders use libbpf."""
    insn_buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode() + b"\0")
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = struct.pack("<IIQQIIQII16s", prog_type, len(insns) // 8,
                       ctypes.addressof(insn_buf), ctypes.addressof(lic),
                       1 if log_size else 0, log_size,
                       ctypes.addressof(log) if log else 0, 0, 0,
                       name.encode()[:15])
    try:
        return bpf(Cmd.PROG_LOAD, attr)
    except BpfError as e:
        if log is not None:
            e.message += ": " + log.value.decode(errors="replace")[-500:]
        raise

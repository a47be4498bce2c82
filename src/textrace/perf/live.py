"""Live perf events: perf_event_open(2), mmap'd ring buffers and their ioctls.

A ring is one control page (struct perf_event_mmap_page) and 2^n data pages.  The kernel
advances data_head; we copy records out, then store data_tail to give the space back.  On
x86-64 (TSO) a plain load of data_head followed by loads of the data is ordered as the
kernel's smp_store_release requires, and our store to data_tail cannot pass earlier loads.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct

from ..errors import KernelError, PermissionProblem
from .attr import ATTR_SIZE_VER0, EventAttr
from . import rawrecord
from .abi import RecordType
from .header import RECORD_HEADER

NR_PERF_EVENT_OPEN = 298  # x86-64
PERF_FLAG_FD_CLOEXEC = 1 << 3

IOC_ENABLE = 0x2400
IOC_DISABLE = 0x2401
IOC_SET_OUTPUT = 0x2405
IOC_ID = 0x80082407  # _IOR('$', 7, __u64 *)

PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
SW_CPU_CLOCK = 0
SW_TASK_CLOCK = 1
SW_DUMMY = 9

# perf_event_mmap_page offsets
_DATA_HEAD = 1024
_DATA_TAIL = 1032
_DATA_OFFSET = 1040
_DATA_SIZE = 1048

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def online_cpus() -> list[int]:
    """CPUs in /sys/devices/system/cpu/online ("0-3,6")."""
    with open("/sys/devices/system/cpu/online") as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def perf_event_open(attr: EventAttr, pid: int, cpu: int, group_fd: int = -1) -> int:
    """Open one event; returns its fd (close-on-exec).

    An attr larger than the kernel knows is refused with E2BIG and the kernel's own size
    written back into attr.size; the open is retried once at that size (fields past it
    must be zero, which the kernel checks too).  EPERM/EACCES become PermissionProblem."""
    raw = attr.pack()
    buf = ctypes.create_string_buffer(raw, len(raw))
    fd = _libc.syscall(NR_PERF_EVENT_OPEN, buf, ctypes.c_int(pid), ctypes.c_int(cpu),
                       ctypes.c_int(group_fd), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0 and ctypes.get_errno() == errno.E2BIG:
        kernel_size = struct.unpack_from("<I", buf.raw, 4)[0]
        if ATTR_SIZE_VER0 <= kernel_size < attr.size:
            return perf_event_open(attr.replace(size=kernel_size), pid, cpu, group_fd)
        ctypes.set_errno(errno.E2BIG)
    if fd < 0:
        err = ctypes.get_errno()
        if err in (errno.EACCES, errno.EPERM):
            raise PermissionProblem(_permission_message(err, pid, cpu),
                                    field="perf_event_open")
        raise KernelError(f"cpu {cpu}, pid {pid}: {os.strerror(err)}",
                          field="perf_event_open")
    return fd


def _permission_message(err: int, pid: int, cpu: int) -> str:
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            paranoid = f.read().strip()
    except OSError:
        paranoid = "unknown"
    scope = "per-CPU (system-wide) events" if pid == -1 else "kernel events"
    return (f"{os.strerror(err)}: {scope} need CAP_PERFMON (or CAP_SYS_ADMIN), or "
            f"kernel.perf_event_paranoid <= {0 if pid == -1 else 1} (it is {paranoid})")


def event_id(fd: int) -> int:
    """PERF_EVENT_IOC_ID: the id the kernel gave the event, as samples carry it."""
    buf = bytearray(8)
    fcntl.ioctl(fd, IOC_ID, buf)
    return struct.unpack("<Q", buf)[0]


def enable(fd: int) -> None:
    """PERF_EVENT_IOC_ENABLE: start counting and writing records."""
    fcntl.ioctl(fd, IOC_ENABLE, 0)


def disable(fd: int) -> None:
    """PERF_EVENT_IOC_DISABLE: stop; records already in the ring stay readable."""
    fcntl.ioctl(fd, IOC_DISABLE, 0)


def set_output(fd: int, target_fd: int) -> None:
    """Send `fd`'s records into `target_fd`'s ring (same CPU)."""
    fcntl.ioctl(fd, IOC_SET_OUTPUT, target_fd)


def _align8(n: int) -> int:
    return (n + 7) & ~7


def trim_inflated(raw: bytes, id_size: int) -> bytes:
    """A KSYMBOL, BPF_EVENT or TEXT_POKE record cut to the size it really has.

    perf_event_ksymbol_output, perf_event_bpf_output and perf_event_text_poke_output
    (kernel/events/core.c) add the receiving event's id_header_size to a header.size shared
    by every event they deliver the record to, and never restore it (perf_event_mmap_output
    and the comm/task ones do): when several events on a CPU listen (another perf session,
    say), each one after the first gets a record too long by the earlier ones'
    id_header_size, its tail stale ring bytes, so its sample_id trailer is no longer at the
    end where perf and every reader look.  Seen on 6.18 for KSYMBOL and BPF_EVENT, in perf's
    own files as in ours; TEXT_POKE's output has the same code.  The body's own lengths say
    where it ends; the trailer follows it (`id_size` bytes, the receiving event's)."""
    rtype, misc, size = RECORD_HEADER.unpack_from(raw, 0)
    # the body ends where its own lengths say, padded to 8 bytes from the record's start
    if rtype == RecordType.KSYMBOL:
        nul = raw.find(b"\0", rawrecord.KSYMBOL_NAME_AT, size)
        if nul < 0:
            return raw
        body = _align8(nul + 1)
    elif rtype == RecordType.BPF_EVENT:
        body = rawrecord.BPF_EVENT_END
    elif rtype == RecordType.TEXT_POKE:
        if size < rawrecord.TEXT_POKE_BYTES_AT:
            return raw
        old_len, new_len = rawrecord.text_poke_lengths(raw)
        body = _align8(rawrecord.TEXT_POKE_BYTES_AT + old_len + new_len)
    else:
        return raw
    true_size = body + id_size
    if true_size >= size:
        return raw
    return RECORD_HEADER.pack(rtype, misc, true_size) + raw[RECORD_HEADER.size:true_size]


class Ring:
    """The mmap'd ring of one event fd."""

    def __init__(self, fd: int, cpu: int, pages: int = 64):
        if pages & (pages - 1):
            raise ValueError("ring pages must be a power of two")
        self.fd = fd
        self.cpu = cpu
        self.page = mmap.PAGESIZE
        self.mm = mmap.mmap(fd, (pages + 1) * self.page, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        self.data_offset = struct.unpack_from("<Q", self.mm, _DATA_OFFSET)[0] or self.page
        self.size = struct.unpack_from("<Q", self.mm, _DATA_SIZE)[0] or pages * self.page
        self.bytes_read = 0

    def pending(self) -> bool:
        """Whether the kernel has written past what was read (data_head != data_tail)."""
        return struct.unpack_from("<Q", self.mm, _DATA_HEAD)[0] != \
            struct.unpack_from("<Q", self.mm, _DATA_TAIL)[0]

    def read(self) -> list[bytes]:
        """Every complete record now in the ring, in order, as bytes; frees their space."""
        mm = self.mm
        head = struct.unpack_from("<Q", mm, _DATA_HEAD)[0]
        tail = struct.unpack_from("<Q", mm, _DATA_TAIL)[0]
        if head == tail:
            return []
        size, base = self.size, self.data_offset
        start = tail % size
        end = start + (head - tail)
        if end <= size:
            chunk = mm[base + start:base + end]
        else:  # the records wrap around the end of the ring
            chunk = mm[base + start:base + size] + mm[base:base + end - size]
        out = []
        pos = 0
        n = len(chunk)
        while pos + 8 <= n:
            rsize = RECORD_HEADER.unpack_from(chunk, pos)[2]
            if rsize < 8 or pos + rsize > n:
                break
            out.append(chunk[pos:pos + rsize])
            pos += rsize
        struct.pack_into("<Q", mm, _DATA_TAIL, tail + pos)
        self.bytes_read += pos
        return out

    def discard(self) -> None:
        """Free everything in the ring unread (a ring kept only for its wakeups)."""
        head = struct.unpack_from("<Q", self.mm, _DATA_HEAD)[0]
        struct.pack_into("<Q", self.mm, _DATA_TAIL, head)

    def close(self) -> None:
        """Unmap the ring (the event's fd is the caller's to close)."""
        self.mm.close()

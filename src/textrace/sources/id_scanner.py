"""User-space capture's race against the loader: an fd on every new BPF program while it
still exists.

A feature-probe program lives ~17 µs between BPF_PROG_LOAD and the loader's close; perf's
side-band thread, woken by the BPF_EVENT, catches it only when it happens to run within
that window.  Here one scanner process per CPU is pinned to its CPU, runs SCHED_FIFO and
sleeps until a BPF_EVENT emitted *on that CPU* wakes it.  The kernel emits PROG_LOAD in the
loader's own bpf(2) call (kernel/bpf/syscall.c: bpf_prog_load -> perf_event_bpf_event,
after the id is allocated, before the fd is returned), and the wakeup of a real-time task
on the loader's CPU preempts the loader (a CFS task) by its return to user space at the
latest: the scanner takes its fd before the loader can close it.  Where SCHED_FIFO is
refused (no CAP_SYS_NICE, or no real-time budget in this cgroup) the scanner runs at
nice -10 and races as perf does.

A woken scanner walks BPF_PROG_GET_NEXT_ID from the newest id any scanner has seen (a
word they share) and takes BPF_PROG_GET_FD_BY_ID at once: two syscalls, no ring record
parsed first, and programs whose BPF_EVENT was lost are found too.  Fds go to the recorder
over a Unix stream socket per scanner (a datagram socket queues only
net.unix.max_dgram_qlen messages, 10 by default), where a thread collects them; two
scanners that took the same id at once hand over two fds, and the second is closed.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import signal
import socket
import struct
import threading
import time

from ..bpf.ids import IdSet
from ..bpf.syscall import IdPoller
from ..errors import TextraceError
from ..perf import live
from ..perf.attr import EventAttr, flag_mask

PR_SET_PDEATHSIG = 1
IDLE_POLL_SECONDS = 0.001  # how often a scanner walks where no BPF_EVENT can wake it
WAKE_TIMEOUT_SECONDS = 0.1  # a walk at least this often even when nothing woke it
_ID = struct.Struct("<I")


def bpf_event_waker(cpu: int) -> live.Ring | None:
    """A dummy event on `cpu` that wakes its reader at every BPF_EVENT there, as perf's
    side-band thread is woken; its records are discarded unread.  The wakeup is a 1-byte
    watermark: wakeup_events counts samples only (perf_output_sample), never side-band
    records.  None where the event cannot be opened: the scanner then polls."""
    attr = EventAttr(type=live.PERF_TYPE_SOFTWARE, size=128, config=live.SW_DUMMY,
                     sample_period=1, wakeup_events=1,  # wakeup_watermark, with the flag
                     flags=flag_mask("bpf_event", "watermark", "exclude_guest"))
    try:
        return live.Ring(live.perf_event_open(attr, -1, cpu), cpu, pages=1)
    except (OSError, TextraceError):
        return None


class IdScanner:
    """Scanners on every online CPU, started at once; `take()` returns the fds they
    handed over since the last call ({prog id: fd}), `stop()` the last of them."""

    def __init__(self, start_id: int):
        # the newest id any scanner has walked to: ids only grow (idr_alloc_cyclic)
        self.shared = mmap.mmap(-1, _ID.size)
        _ID.pack_into(self.shared, 0, start_id)
        recorder = os.getpid()
        self.pids: list[int] = []
        self.socks: list[socket.socket] = []
        for cpu in live.online_cpus():
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            for sock in (ours, theirs):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            pid = os.fork()
            if pid == 0:
                for sock in (ours, *self.socks):
                    sock.close()
                try:
                    _scan(theirs, cpu, self.shared, recorder)
                finally:
                    os._exit(0)
            theirs.close()
            self.pids.append(pid)
            self.socks.append(ours)
        self.fds: dict[int, int] = {}
        self.delivered = IdSet()  # ids handed over: a later fd for one is a duplicate
        self.lock = threading.Lock()
        self.receiver = threading.Thread(target=self._receive, name="textrace-fd-receiver",
                                         daemon=True)
        self.receiver.start()

    def _receive(self) -> None:
        wait = select.epoll()
        open_socks = {sock.fileno(): sock for sock in self.socks}
        for fileno in open_socks:
            wait.register(fileno, select.EPOLLIN)
        while open_socks:
            for fileno, _events in wait.poll():
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(open_socks[fileno], 4, 1)
                except OSError:
                    msg, fds = b"", []
                if len(msg) < 4:  # that scanner ended
                    for fd in fds:
                        os.close(fd)
                    wait.unregister(fileno)
                    del open_socks[fileno]
                    continue
                prog_id = _ID.unpack(msg)[0]
                with self.lock:
                    for fd in fds:
                        if prog_id in self.delivered:
                            os.close(fd)
                        else:
                            self.delivered.add(prog_id)
                            self.fds[prog_id] = fd
        wait.close()

    def take(self) -> dict[int, int]:
        """The fds handed over since the last call, by program id."""
        with self.lock:
            got, self.fds = self.fds, {}
        return got

    def stop(self) -> dict[int, int]:
        """Stop the scanners; the fds they sent before are still delivered."""
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            os.waitpid(pid, 0)
        self.receiver.join()  # every peer is closed: it reads what is left, then ends
        for sock in self.socks:
            sock.close()
        self.shared.close()
        return self.take()


def _scan(sock: socket.socket, cpu: int, shared: mmap.mmap, recorder: int) -> None:
    """One CPU's scanner (a forked process): walk, hand over, sleep until woken."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the recorder...
    if os.getppid() != recorder:  # ...even one that died before the prctl
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the recorder decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.sched_setaffinity(0, {cpu})
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        try:  # a larger CFS share when the loader competes for the same CPU
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass
    poller = IdPoller(_ID.unpack_from(shared, 0)[0])
    waker = bpf_event_waker(cpu)
    wait = select.epoll()
    if waker is not None:
        wait.register(waker.fd, select.EPOLLIN)
    taken: list[tuple[int, int]] = []
    while True:
        poller.last = max(poller.last, _ID.unpack_from(shared, 0)[0])
        try:
            got = poller.poll()
        except OSError:
            return  # the recorder is gone
        if got is not None:
            if got[1] >= 0:
                taken.append(got)  # its fd keeps it alive: handed over once caught up
            continue
        if _ID.unpack_from(shared, 0)[0] < poller.last:
            _ID.pack_into(shared, 0, poller.last)
        for prog_id, fd in taken:
            try:
                socket.send_fds(sock, [_ID.pack(prog_id)], [fd])
            except OSError:
                return
            finally:
                os.close(fd)
        taken.clear()
        if waker is None:
            time.sleep(IDLE_POLL_SECONDS)
            continue
        # caught up: free the ring unread and sleep until this CPU's next BPF_EVENT; a
        # wakeup that comes after the discard still ends the wait
        waker.discard()
        wait.poll(WAKE_TIMEOUT_SECONDS)

"""textrace daemon: the recorder run for days into a code store (textrace.store).

It watches what `textrace record` watches, system-wide, and keeps it in the store instead
of a perf.data file: every BPF program at load (copied by the in-kernel capture program,
or raced from user space where that cannot load, saying so), every out-of-line code region
a KSYMBOL announces (read at once: trampolines, dispatchers, ftrace and kprobe pages),
every TEXT_POKE, the changes to tail-calling programs' images no TEXT_POKE reports, the
kernel's symbol table (again whenever a module comes or goes) and the boot it belongs to.

Times are nanoseconds on perf's default clock (perf_clock(), what `perf record` stamps
records with unless given -k), so a perf.data made at the same time matches by time: the
sideband events are opened without use_clockid.  Captures stamped by the capture program
(CLOCK_MONOTONIC) are moved to that clock by an offset measured at start and every
SYNC_SECONDS (a COMM record of our own, stamped by perf, between two clock_gettime reads).

The loop wakes when a ring fills a quarter or every ROUND_SECONDS, and commits each round
that changed something, so a SIGKILL loses at most the round in progress.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import select
import signal
import sys
import time
from dataclasses import dataclass, field

from ..bpf.prog_info import ALL_ARRAYS, read_prog_info
from ..bpf.btf import read_btf
from ..bpf.syscall import NoSuchObject, next_ids, prog_fd_by_id
from ..errors import TextraceError
from ..sources.kernel_memory import open_kernel_memory
from ..perf import live, rawrecord
from ..perf.abi import (KSYMBOL_FLAG_UNREGISTER, BpfEventType, KsymbolType, RecordType,
                       SampleType as S)
from ..perf.rawrecord import record_type
from ..perf.attr import EventAttr, flag_mask
from ..store.db import StoreLock
from ..store.writer import StoreWriter
from .image_watch import ImageWatch

ROUND_SECONDS = 0.5     # longest wait between two reads of the rings (and commits)
BUSY_PAUSE = 0.05       # after a round with work: let the next batch gather
SYNC_SECONDS = 60.0     # re-measure perf_clock - CLOCK_MONOTONIC
MODULES_SECONDS = 10.0  # look at /proc/modules this often (kallsyms again if it changed)
RING_PAGES = 1024       # 4 MiB per CPU: a burst of thousands of loads fits between rounds
SIDEBAND_TYPE = S.TID | S.TIME | S.CPU | S.IDENTIFIER
PR_SET_NAME = 15
BOOT_ID = "/proc/sys/kernel/random/boot_id"
_TRIMMED = (RecordType.KSYMBOL, RecordType.BPF_EVENT, RecordType.TEXT_POKE)


@dataclass
class DaemonOptions:
    """What `textrace daemon` was asked: the store, its budget (MiB), the capture mode,
    ring pages."""

    store: str
    max_mb: float | None = None
    min_mb: float = 0.0
    capture: str = "auto"          # kernel, user, or auto (kernel when it loads)
    ring_pages: int = RING_PAGES
    nice: int = 10                 # yield the CPU to the loaders; the rings hold a burst


@dataclass
class DaemonStats:
    """What the daemon saw and did, for its last line and `textrace store`."""

    loads: int = 0
    unloads: int = 0
    captured: int = 0
    failed: int = 0
    ool: int = 0
    pokes: int = 0
    unreported: int = 0
    lost: int = 0
    rounds: int = 0
    notes: list[str] = field(default_factory=list)


class PerfClock:
    """perf_clock() - CLOCK_MONOTONIC, measured with a COMM record of this task: perf
    stamps it with perf_clock, and it is taken between two CLOCK_MONOTONIC reads."""

    def __init__(self):
        attr = EventAttr(type=live.PERF_TYPE_SOFTWARE, size=128, config=live.SW_DUMMY,
                         sample_period=1, sample_type=S.TIME,
                         flags=flag_mask("comm", "sample_id_all", "exclude_guest"))
        self.fd = live.perf_event_open(attr, 0, -1)
        self.ring = live.Ring(self.fd, -1, 1)
        self.time_of = rawrecord.trailer_time_reader(attr)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.offset = 0
        self.measure()

    def measure(self) -> int:
        """The offset, measured now: the tightest of three COMM records (its perf_clock time
        against the CLOCK_MONOTONIC reads around it)."""
        name = ctypes.create_string_buffer(16)
        self.libc.prctl(16, name)  # PR_GET_NAME
        best = None
        for _ in range(3):
            self.ring.read()
            m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            self.libc.prctl(PR_SET_NAME, name)
            m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            for raw in self.ring.read():
                if record_type(raw) == RecordType.COMM:
                    t = self.time_of(raw)
                    if best is None or m1 - m0 < best[0]:
                        best = (m1 - m0, t - (m0 + m1) // 2)
        if best is not None:
            self.offset = best[1]
        return self.offset

    def from_monotonic(self, t: int) -> int:
        """A CLOCK_MONOTONIC time (the capture program's) on perf's clock."""
        return t + self.offset

    def now(self) -> int:
        """Now, on perf's clock."""
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC) + self.offset

    def close(self) -> None:
        """Close the COMM event."""
        self.ring.close()
        os.close(self.fd)


def sd_notify(message: bytes) -> None:
    """Tell systemd (Type=notify, textrace.service) where it started us: a datagram to
    $NOTIFY_SOCKET (sd_notify(3); "@" names an abstract socket)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    import socket
    addr = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(message, addr)
        except OSError:
            pass


def boot_id() -> str:
    """This boot's id (/proc/sys/kernel/random/boot_id): a store's times and addresses hold within
    one boot."""
    with open(BOOT_ID) as f:
        return f.read().strip()


def kallsyms_without_programs() -> bytes:
    """/proc/kallsyms without the [bpf] lines: programs and trampolines come and go by
    thousands and are kept as loads and out-of-line code instead."""
    with open("/proc/kallsyms", "rb") as f:
        text = f.read()
    return b"".join(line for line in text.splitlines(keepends=True)
                    if not line.endswith(b"[bpf]\n"))


class Daemon:
    """The capture service: every BPF program at load, out-of-line code, text pokes and unreported
    changes into a store, until SIGTERM or SIGINT."""

    def __init__(self, opts: DaemonOptions, say=None):
        self.opts = opts
        self.say = say or (lambda msg: print(f"textrace daemon: {msg}", file=sys.stderr,
                                             flush=True))
        self.stats = DaemonStats()
        self.stop = False
        self.kernel = None
        self.scanner = None
        self.rings: list[live.Ring] = []
        self.fds: list[int] = []
        self.watch = ImageWatch()
        self.captured: set[int] = set()   # live programs already captured (user mode)
        # programs taken from user space as the daemon started: one loaded just after the
        # capture program attached is in its ring too, maybe read after its unload
        self.synthesized: set[int] = set()
        self.watch_quick: dict[tuple, bool] = {}  # fast-path key -> makes tail calls

    # --- setup --------------------------------------------------------------------------
    def _start_capture(self) -> str:
        if self.opts.capture == "user":
            return "user space (--capture user)"
        from ..bpf.capture.loader import CaptureProgram
        try:
            self.kernel = CaptureProgram()
            return "the kernel (capture program at each BPF_PROG_LOAD)"
        except (TextraceError, OSError) as e:
            if self.opts.capture == "kernel":
                raise
            note = f"kernel capture unavailable ({e}); capturing from user space"
            self.stats.notes.append(note)
            self.say(note)
            return "user space (fallback)"

    def _open_events(self) -> None:
        attr = EventAttr(
            type=live.PERF_TYPE_SOFTWARE, size=128, config=live.SW_DUMMY, sample_period=1,
            sample_type=SIDEBAND_TYPE, wakeup_events=self.opts.ring_pages * 1024,
            flags=flag_mask("disabled", "ksymbol", "bpf_event", "text_poke",
                            "sample_id_all", "watermark", "exclude_guest"))
        from ..perf.sampleid import id_trailer_size
        self.id_size = id_trailer_size(attr)
        self.time_of = rawrecord.trailer_time_reader(attr)
        for cpu in live.online_cpus():
            fd = live.perf_event_open(attr, -1, cpu)
            self.fds.append(fd)
            self.rings.append(live.Ring(fd, cpu, self.opts.ring_pages))

    def _ksyms(self, info, btf) -> list[str]:
        from .synthesis import kernel_ksym_names
        return kernel_ksym_names(info, btf)

    def _synthesize(self, restarted: bool) -> None:
        """Programs alive now: loads the store has open (a restart) carry on; the others
        were loaded before the daemon looked.  Open loads no longer alive ended while no
        daemon ran: they are closed now."""
        open_loads = self.store.open_loads() if restarted else {}
        own = self.kernel.own_prog_ids if self.kernel is not None else set()
        now = self.clock.now()
        alive = set()
        for prog_id in next_ids():
            if prog_id in own:
                continue
            alive.add(prog_id)
            if prog_id in open_loads:
                self.store.adopt(prog_id, open_loads[prog_id])
                continue
            try:
                fd = prog_fd_by_id(prog_id)
            except TextraceError:
                continue
            self._user_capture(prog_id, fd, load_ns=None)
            self.synthesized.add(prog_id)
        for prog_id, load_id in open_loads.items():
            if prog_id not in alive:
                self.store.adopt(prog_id, load_id)
                self.store.program_unloaded(prog_id, now)

    def _user_capture(self, prog_id: int, fd: int, load_ns: int | None = -1) -> None:
        try:
            info = read_prog_info(fd, ALL_ARRAYS)
            btf = None
            if info.info["btf_id"]:
                try:
                    btf = read_btf(info.info["btf_id"])
                except TextraceError:
                    pass
            if load_ns != -1:
                self.store.program_loaded(prog_id, info.tag, load_ns)
            self.store.program_captured(info, btf, "user", self.clock.now(),
                                        self._ksyms(info, btf))
            self.captured.add(prog_id)
            self.stats.captured += 1
            self.watch.watch(info, self.clock.now())
        except TextraceError as e:
            self.store.program_failed(prog_id, b"", str(e))
            self.stats.failed += 1
        finally:
            os.close(fd)

    def _kernel_capture(self, kc) -> None:
        """A program the capture program copied.  One like an earlier one (same blobs but
        for its JIT bytes and addresses, and no line info, whose addresses would differ)
        takes the store's fast path without being decoded."""
        from ..bpf.capture.loader import BTF, JIT, XLATED
        t = self.clock.from_monotonic(kc.time)
        tag, ptype, func_cnt, jited_len, insn_cnt, nr_linfo, btf_id, name, _f = kc.meta
        jits = [kc.blobs.get((JIT, i)) for i in range(max(func_cnt, 1))]
        key = None
        if not nr_linfo and all(jits):
            btf = kc.blobs.get((BTF, 0))
            key = (tag, ptype, func_cnt, jited_len, insn_cnt, name,
                   tuple((b.total, b.tag) for b in jits),
                   kc.blobs[(XLATED, 0)].data() if (XLATED, 0) in kc.blobs else b"",
                   hashlib.sha256(btf.data()).digest() if btf else None)
            funcs = [(b.addr, b.data()) for b in jits]
            if self.store.program_captured_again(key, kc.prog_id, tag, funcs, btf_id, t,
                                                 "kernel"):
                if self.watch_quick.get(key):  # it makes tail calls: watched
                    self.watch.watch(kc.prog_info(), t)
                return
        info = kc.prog_info()
        self.store.program_captured(info, kc.btf, "kernel", t, self._ksyms(info, kc.btf),
                                    quick_key=key)
        self.watch.watch(info, t)
        if key is not None:
            if len(self.watch_quick) > 4096:
                self.watch_quick.clear()
            self.watch_quick[key] = info.id in self.watch.known

    # --- one round ----------------------------------------------------------------------
    def round(self) -> int:
        """Read the rings and the capture program; store what they hold.  Returns how
        many things happened."""
        work = 0
        # the capture ring before the perf rings: every program captured here whose unload
        # has happened is unloaded in the records read next, before its capture is stored,
        # so a commit on the way (the budget) can already evict it
        captures = self.kernel.poll() if self.kernel is not None else []
        batch = []
        for ring in self.rings:
            for raw in ring.read():
                if record_type(raw) in _TRIMMED:
                    raw = live.trim_inflated(raw, self.id_size)
                batch.append(raw)
        batch.sort(key=self.time_of)
        for raw in batch:
            work += 1
            self._record(raw)
        if self.kernel is not None:
            for kc in captures:
                if kc.prog_id in self.synthesized:   # stored once already, as it started
                    self.synthesized.discard(kc.prog_id)
                    continue
                self._kernel_capture(kc)
                self.stats.captured += 1
                work += 1
        elif self.scanner is not None:
            for prog_id, fd in self.scanner.take().items():
                if prog_id in self.captured:
                    os.close(fd)
                else:
                    self._user_capture(prog_id, fd)
                    work += 1
        updates = self.kernel.take_prog_array_updates() if self.kernel is not None else []
        if updates or (self.kernel is None and self.watch.known and batch):
            for c in self.watch.recheck(self.clock.now):
                self.store.poke(c.seen, c.addr, c.old, c.new, reported=False,
                                after_ns=c.after, prog_id=c.prog_id)
                self.stats.unreported += 1
        if work:
            self.store.seen_until(self.clock.now())
            self.store.commit()
        self.stats.rounds += 1
        return work

    def _record(self, raw: bytes) -> None:
        rtype = record_type(raw)
        t = self.time_of(raw)
        if rtype == RecordType.BPF_EVENT:
            event_type, _flags, prog_id, tag = rawrecord.bpf_event(raw)
            if event_type == BpfEventType.PROG_LOAD:
                self.stats.loads += 1
                self.store.program_loaded(prog_id, tag, t)
                if self.kernel is None and prog_id not in self.captured:
                    try:
                        self._user_capture(prog_id, prog_fd_by_id(prog_id))
                    except NoSuchObject:
                        self.store.program_failed(
                            prog_id, tag, "unloaded before user space could take it "
                            "(BPF_PROG_GET_FD_BY_ID: ENOENT)")
                        self.stats.failed += 1
                    except TextraceError as e:
                        self.store.program_failed(prog_id, tag, str(e))
                        self.stats.failed += 1
            elif event_type == BpfEventType.PROG_UNLOAD:
                self.stats.unloads += 1
                self.store.program_unloaded(prog_id, t)
                self.watch.forget(prog_id)
                self.captured.discard(prog_id)
        elif rtype == RecordType.KSYMBOL:
            addr, n, ktype, flags, name = rawrecord.ksymbol(raw)
            if ktype == KsymbolType.BPF and name.startswith("bpf_prog_"):
                return  # a program's function: the load carries it
            if flags & KSYMBOL_FLAG_UNREGISTER:
                self.store.ool_unregistered(addr, name, t)
                return
            code = None
            code_ns = None
            if self.memory is not None:
                try:
                    code = self.memory.read(addr, n)
                    code_ns = self.clock.now()
                except (OSError, TextraceError):
                    code = None
            self.store.ool_registered(addr, n, name, ktype, t, code, code_ns)
            self.stats.ool += 1
        elif rtype == RecordType.TEXT_POKE:
            addr, old, new = rawrecord.text_poke(raw)
            self.store.poke(t, addr, old, new)
            self.watch.apply(t, addr, new)
            self.stats.pokes += 1
        elif rtype == RecordType.LOST:
            self.stats.lost += rawrecord.lost_count(raw)

    # --- the loop -----------------------------------------------------------------------
    def run(self) -> DaemonStats:
        """Run until asked to stop; exits having committed every round."""
        lock = StoreLock(self.opts.store)  # first: a second daemon stops here
        try:
            return self._run(lock)
        finally:
            lock.release()

    def _run(self, lock) -> DaemonStats:
        opts = self.opts
        max_bytes = int(opts.max_mb * 1e6) if opts.max_mb else None
        min_bytes = int(opts.min_mb * 1e6)
        if max_bytes is not None and min_bytes > max_bytes:
            raise TextraceError(f"--min-mb {opts.min_mb} is above --max-mb {opts.max_mb}",
                                field="--min-mb")
        self.store = StoreWriter(opts.store, max_bytes=max_bytes, min_bytes=min_bytes)
        # A storm of loads would otherwise find the daemon competing for its CPU (a 5000-load
        # storm took 1.7x its time with the daemon at nice 0 here, 1.08x at nice 10, and
        # 1.09x with the daemon stopped: the capture program's own cost); what the daemon
        # has not read waits in the rings (4 MiB per CPU, the capture ring's 16 MiB).
        if opts.nice:
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + opts.nice)
        how = self._start_capture()
        memory, why = open_kernel_memory(self.kernel)
        self.memory = memory
        if memory is None:
            self.stats.notes.append(f"out-of-line code is not read: {why}")
        self.clock = PerfClock()
        restarted = self.store.begin_boot(boot_id(), platform.release(), self.clock.now(),
                                          "perf_clock")
        self.store.close_other_boots()
        self._open_events()
        for fd in self.fds:
            live.enable(fd)
        self._synthesize(restarted)
        modules = self._modules()
        self.store.kallsyms(kallsyms_without_programs(), self.clock.now())
        self.store.commit()
        if self.kernel is None:
            from ..sources.id_scanner import IdScanner
            self.scanner = IdScanner(max(next_ids(), default=0))
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        poller = select.epoll()
        for ring in self.rings:
            poller.register(ring.fd, select.EPOLLIN)
        if self.kernel is not None:
            poller.register(self.kernel.epoll_fd, select.EPOLLIN)
        self.say(f"ready: capturing BPF programs in {how} into {opts.store}"
                 + (" (restarted: carrying on)" if restarted else ""))
        sd_notify(b"READY=1")
        next_sync = next_modules = time.monotonic()
        try:
            while not self.stop:
                poller.poll(ROUND_SECONDS)
                if self.stop:
                    break
                if self.round():
                    time.sleep(BUSY_PAUSE)
                now = time.monotonic()
                if now >= next_sync:
                    self.clock.measure()
                    next_sync = now + SYNC_SECONDS
                if now >= next_modules:
                    next_modules = now + MODULES_SECONDS
                    current = self._modules()
                    if current != modules:
                        modules = current
                        self.store.kallsyms(kallsyms_without_programs(), self.clock.now())
                        self.store.commit()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if self.scanner is not None:
                for fd in self.scanner.stop().values():
                    os.close(fd)
            self.round()
            for fd in self.fds:
                live.disable(fd)
            poller.close()
            if self.kernel is not None:
                self.stats.lost += self.kernel.lost
                self.kernel.close()
            self.store.seen_until(self.clock.now())
            self.store.close()
            self.clock.close()
            for ring in self.rings:
                ring.close()
            for fd in self.fds:
                os.close(fd)
        return self.stats

    @staticmethod
    def _modules() -> bytes:
        try:  # a kernel without modules has no /proc/modules: its kallsyms never change
            with open("/proc/modules", "rb") as f:
                return b"".join(line.split(b" ", 1)[0] + b"\n" for line in f)
        except FileNotFoundError:
            return b""

    def _on_signal(self, signum, frame) -> None:
        self.stop = True

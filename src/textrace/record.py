"""textrace record: the kernel's code sideband (and optionally samples) into perf.data,
with every BPF program captured while it lives.

Per CPU, one dummy software event carries the sideband — KSYMBOL, BPF_EVENT, TEXT_POKE,
MMAP2, COMM, FORK/EXIT — waking the reader when a quarter of its ring is used (and the
reader polls every round_ms anyway), and an optional sampling event shares its ring.  The
events are enabled before anything is synthesized, so no program falls between the two.
Records are drained in rounds, sorted by time within the round, written with a
FINISHED_ROUND after each (perf's ordering contract), and the header is patched after every
round so a killed recorder leaves a readable file.

Programs are captured in the kernel when the capture program loads (bpf/capture: a copy of
each program taken synchronously at BPF_PROG_LOAD), else in user space: the id scanner
takes an fd on each new program id at once, and each BPF_EVENT(PROG_LOAD) is acted on as
soon as it is read (BPF_PROG_GET_FD_BY_ID first: an fd keeps the program alive; the info
after).  Programs that were gone before that are listed with the reason.

Kernel code that no record carries is read while recording (kernel_code.py): the image of
every out-of-line code symbol (BPF trampolines and dispatchers, ftrace and kprobe code) when
its KSYMBOL arrives, and at the end the functions that were poked or sampled.  JIT images
patched without a TEXT_POKE (tail-call sites) are re-read and the changes recorded
(unreported.py).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import platform
import select
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

from . import __version__
from .bpf.prog_info import ALL_ARRAYS, ProgInfo, read_prog_info
from .bpf.btf import Btf, read_btf
from .bpf.syscall import IdPoller, NoSuchObject, next_ids, prog_fd_by_id
from .capture import ProgCapture
from .errors import TextraceError
from .freed import PackWatch
from .kernel_code import MAX_READ, CodeReads, function_extent, open_kernel_memory
from .perf import live
from .perf.abi import (BpfEventType, KsymbolType, MISC_KERNEL, RecordType,
                       SampleType as S)
from .perf.attr import EventAttr, flag_mask
from .perf.features import (Arch, BpfBtf, BpfProgInfo, BpfProgInfoEntry, BtfEntry,
                            ClockData, Clockid, Cmdline, EventDesc, EventDescEntry, Hostname,
                            NrCpus, OsRelease, TotalMem, Version)
from .perf.private import FEATURE_BIT, Kind, PrivateSection
from .perf.reader import Attr
from .perf.records import (BpfEventRecord, FinishedInitRecord, FinishedRoundRecord,
                           KsymbolRecord, MmapRecord, TextPokeRecord)
from .perf.sampleid import SampleId, id_trailer_size
from .perf.writer import PerfDataWriter, pack_record
from .unreported import ImageWatch, UnreportedChange

PR_SET_PDEATHSIG = 1
HOT_SECONDS = 0.25         # the id scanner spins this long after the last new program
IDLE_POLL_SECONDS = 0.001  # and polls this often otherwise
CLOCKS = {"realtime": 0, "monotonic": 1, "monotonic_raw": 4, "boottime": 7, "tai": 11}
SIDEBAND_TYPE = S.TID | S.TIME | S.CPU | S.IDENTIFIER
_TRIMMED = (RecordType.KSYMBOL, RecordType.BPF_EVENT, RecordType.TEXT_POKE)
SAMPLE_TYPE = S.IDENTIFIER | S.IP | S.TID | S.TIME | S.CPU | S.PERIOD
KERNEL_SPACE = 0xffff800000000000
EVENTS = {"cpu-clock": (live.PERF_TYPE_SOFTWARE, live.SW_CPU_CLOCK),
          "task-clock": (live.PERF_TYPE_SOFTWARE, live.SW_TASK_CLOCK),
          "cycles": (live.PERF_TYPE_HARDWARE, 0), "instructions": (live.PERF_TYPE_HARDWARE, 1)}


@dataclass
class RecordOptions:
    output: str = "perf.data"
    system_wide: bool = False
    duration: float | None = None
    event: str | None = None
    freq: int = 999
    callgraph: bool = False
    clockid: int = CLOCKS["monotonic"]
    command: list[str] = field(default_factory=list)
    ring_pages: int = 1024   # 4 MiB per CPU: a storm of thousands of loads in 0.1 s fits
    round_ms: float = 100.0
    capture: str = "auto"   # "kernel", "user", or "auto": kernel when it loads, else user
    kernel_text: bool = False  # snapshot _text.._etext at the start


@dataclass
class RecordSummary:
    output: str
    records: int = 0
    lost: int = 0
    programs_seen: int = 0
    programs_captured: int = 0
    failures: list[ProgCapture] = field(default_factory=list)
    exit_code: int | None = None
    capture: str = "user"            # how programs were captured in this recording
    capture_note: str | None = None  # why auto fell back to user space
    code: dict = field(default_factory=dict)  # CodeReads.summary()
    unreported: int = 0              # code changes no TEXT_POKE reported
    kernel_lost: int = 0             # capture chunks the kernel's ring could not take
    packs: dict = field(default_factory=dict)  # PackWatch.summary()


def clock_ns(clockid: int) -> int:
    return time.clock_gettime_ns(clockid)


def kernel_ksym_names(info: ProgInfo, btf: bytes | None) -> list[str]:
    """The names the kernel gives a program's JIT'd functions in kallsyms and KSYMBOL records
    (bpf_get_prog_name, kernel/bpf/core.c): bpf_prog_<tag>_<name>.  The main function has the
    program's tag, each subprogram its own (prog_tags); the name is the BTF FUNC named by
    func_info when there is one, else the program's name for the main function and "F" for
    subprograms (checked against /proc/kallsyms on 6.18)."""
    funcs = info.funcs()
    tags = [info.tag] + [t for t in info.prog_tags[1:len(funcs)]]
    tags += [info.tag] * (len(funcs) - len(tags))
    btf_names: list[str] = []
    if btf and len(info.func_info) >= len(funcs):
        try:
            parsed = Btf.parse(btf)
            btf_names = [parsed.type_name(type_id) for _off, type_id in info.func_info]
        except TextraceError:
            btf_names = []
    out = []
    for i, tag in enumerate(tags):
        short = btf_names[i] if btf_names else (info.name if i == 0 else "F")
        out.append(f"bpf_prog_{tag.hex()}" + (f"_{short}" if short else ""))
    return out


class IdScanner:
    """Takes an fd on every new BPF program id the moment it exists.

    A feature-probe program lives for microseconds: by the time its BPF_EVENT has woken a
    reader it is usually gone.  Walking BPF_PROG_GET_NEXT_ID from the newest id seen and
    calling BPF_PROG_GET_FD_BY_ID at once narrows the race to a few microseconds.  The walk
    runs in a forked process of its own (a thread would wait for the GIL whenever the
    recorder works) and hands each fd over a Unix stream socket (a datagram socket queues
    only net.unix.max_dgram_qlen messages, 10 by default, and would stall the walk); a
    thread here collects them.  An fd keeps its program alive until the recorder has read
    it.  The walk spins while programs keep coming and polls about every millisecond
    otherwise, so a recording of a busy workload does not cost it a CPU.
    """

    def __init__(self, start_id: int):
        self.parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for sock in (self.parent, child):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        recorder = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            self.parent.close()
            self._scan(child, start_id, recorder)
            os._exit(0)
        child.close()
        self.fds: dict[int, int] = {}
        self.lock = threading.Lock()
        self.receiver = threading.Thread(target=self._receive, name="textrace-fd-receiver",
                                         daemon=True)
        self.receiver.start()

    @staticmethod
    def _scan(sock: socket.socket, last: int, recorder: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # never outlive the recorder...
        if os.getppid() != recorder:  # ...even one that died before the prctl
            return
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the recorder decides when to stop
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:  # a larger CFS share when the loader competes for the same CPU
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except OSError:
            pass
        poll = IdPoller(last).poll
        send_fds = socket.send_fds
        clock, pause = time.monotonic, time.sleep
        hot_until = clock() + HOT_SECONDS
        while True:
            got = poll()
            if got is None:
                # spin while programs are coming (loaders load in bursts: probes, storms);
                # otherwise look ~1000 times a second and leave the CPU to the workload
                if clock() > hot_until:
                    pause(IDLE_POLL_SECONDS)
                continue
            hot_until = clock() + HOT_SECONDS
            prog_id, fd = got
            if fd >= 0:
                try:
                    send_fds(sock, [struct.pack("<I", prog_id)], [fd])
                except OSError:
                    return  # the recorder is gone
                os.close(fd)

    def _receive(self) -> None:
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.parent, 4, 1)
            except OSError:
                return
            if len(msg) < 4:
                for fd in fds:
                    os.close(fd)
                return  # the walk ended
            with self.lock:
                for fd in fds:
                    self.fds[struct.unpack("<I", msg)[0]] = fd

    def take(self) -> dict[int, int]:
        with self.lock:
            got, self.fds = self.fds, {}
        return got

    def stop(self) -> dict[int, int]:
        """Stop the walk; the fds it sent before are still delivered."""
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.receiver.join()  # the socket's peer is closed: it reads what is left, then ends
        self.parent.close()
        return self.take()


class Recorder:
    def __init__(self, opts: RecordOptions, progress=None):
        self.opts = opts
        self.progress = progress
        self.captures: dict[int, ProgCapture] = {}
        self.held_fds: dict[int, int] = {}
        self.summary = RecordSummary(opts.output)
        self.rings: list[live.Ring] = []
        self.fds: list[int] = []
        self.attrs: list[Attr] = []
        self.time_pos: dict[int, tuple[bool, int]] = {}  # id -> (is sample attr, offset)
        self.stop = False
        self.child: int | None = None
        self.scanner: IdScanner | None = None
        self.kernel = None  # the capture program, when it captures
        self.code: CodeReads | None = None   # kernel code read while recording
        self.poked: set[int] = set()          # addresses TEXT_POKE records named
        self.sampled: set[int] = set()        # kernel ips of samples
        self.watch = ImageWatch()             # tail-calling programs' images
        self.unreported: list[UnreportedChange] = []
        self.recheck_due: int | None = None   # a prog-array update's time, not yet checked
        self.text_bounds: tuple[int, int] | None = None  # _text, _etext (from kallsyms)
        self.packs: PackWatch | None = None   # bpf_prog_pack extents, freed code (freed.py)

    def now(self) -> int:
        return clock_ns(self.opts.clockid)

    # --- events -------------------------------------------------------------------------
    def _sideband_attr(self) -> EventAttr:
        return EventAttr(
            type=live.PERF_TYPE_SOFTWARE, size=128, config=live.SW_DUMMY, sample_period=1,
            # wake the reader when a quarter of the ring is used; captures do not wait on
            # it (the id scanner races the loader), and a wakeup per record costs a CPU
            sample_type=SIDEBAND_TYPE, wakeup_events=self.opts.ring_pages * 1024,
            clockid=self.opts.clockid,
            flags=flag_mask("disabled", "mmap", "comm", "task", "mmap2", "comm_exec",
                            "ksymbol", "bpf_event", "text_poke", "sample_id_all",
                            "use_clockid", "watermark", "exclude_guest"))

    def _sample_attr(self) -> EventAttr | None:
        if not self.opts.event:
            return None
        if self.opts.event not in EVENTS:
            raise TextraceError(f"unknown event {self.opts.event!r}; known: "
                                f"{', '.join(EVENTS)}", field="-e")
        etype, config = EVENTS[self.opts.event]
        st = SAMPLE_TYPE | (S.CALLCHAIN if self.opts.callgraph else 0)
        return EventAttr(type=etype, size=128, config=config, sample_period=self.opts.freq,
                         sample_type=st, clockid=self.opts.clockid, sample_max_stack=127,
                         flags=flag_mask("disabled", "freq", "sample_id_all", "use_clockid",
                                         "exclude_guest"))

    def open_events(self) -> None:
        sb = self._sideband_attr()
        sa = self._sample_attr()
        sb_ids, sa_ids = [], []
        for cpu in live.online_cpus():
            fd = live.perf_event_open(sb, -1, cpu)
            self.fds.append(fd)
            ring = live.Ring(fd, cpu, self.opts.ring_pages)
            self.rings.append(ring)
            sb_ids.append(live.event_id(fd))
            if sa is not None:
                sfd = live.perf_event_open(sa, -1, cpu)
                self.fds.append(sfd)
                live.set_output(sfd, fd)
                sa_ids.append(live.event_id(sfd))
        self.attrs = [Attr(sb, tuple(sb_ids), "dummy")]
        self.sideband_id_size = id_trailer_size(sb)
        # TIME sits after IDENTIFIER and TID in the trailer and after IDENTIFIER, IP, TID
        # in a sample (include/uapi/linux/perf_event.h order)
        for i in sb_ids:
            self.time_pos[i] = (False, 8 * 3)  # counted back from the end: time, cpu, id
        if sa is not None:
            self.attrs.append(Attr(sa, tuple(sa_ids), self.opts.event))
            for i in sa_ids:
                self.time_pos[i] = (True, 8 + 8 * 3)

    def _time_of(self, raw: bytes) -> int:
        rtype = struct.unpack_from("<I", raw, 0)[0]
        if rtype == RecordType.SAMPLE:
            rid = struct.unpack_from("<Q", raw, 8)[0]
            is_sample, pos = self.time_pos.get(rid, (True, 32))
            return struct.unpack_from("<Q", raw, pos)[0]
        return struct.unpack_from("<Q", raw, len(raw) - 24)[0]

    # --- capture ------------------------------------------------------------------------
    def on_bpf_event(self, raw: bytes) -> None:
        """A program was loaded or unloaded: grab it now, before its loader lets go."""
        event_type, _flags, prog_id, tag = struct.unpack_from("<HHI8s", raw, 8)
        if event_type == BpfEventType.PROG_UNLOAD:
            self.watch.forget(prog_id)
        if event_type != BpfEventType.PROG_LOAD or prog_id in self.captures:
            if prog_id in self.captures and not self.captures[prog_id].tag:
                self.captures[prog_id].tag = tag
            return
        cap = self.captures[prog_id] = ProgCapture(prog_id, tag)
        if self.kernel is not None:  # taken at load by the capture program: arriving
            cap.reason = "the capture program's chunks for it did not all arrive"
            return
        try:
            self.held_fds[prog_id] = prog_fd_by_id(prog_id)
        except NoSuchObject:
            cap.reason = "unloaded before user space could take it (BPF_PROG_GET_FD_BY_ID: ENOENT)"
        except TextraceError as e:
            cap.reason = str(e)

    def _read_held(self) -> None:
        """Read the programs whose fds we hold, then let them go."""
        for prog_id, fd in list(self.held_fds.items()):
            cap = self.captures[prog_id]
            try:
                cap.info = read_prog_info(fd, ALL_ARRAYS)
                cap.tag = cap.info.tag
                cap.method = "user"
                cap.time = clock_ns(self.opts.clockid)
                self.watch.watch(cap.info, cap.time)
                if cap.info.info["btf_id"]:
                    try:
                        cap.btf = read_btf(cap.info.info["btf_id"])
                    except TextraceError:
                        pass
            except TextraceError as e:
                cap.reason = str(e)
            finally:
                os.close(fd)
                del self.held_fds[prog_id]

    # --- synthesis ----------------------------------------------------------------------
    def synthesize(self, writer: PerfDataWriter, kallsyms: str) -> None:
        """What was there before we started: the kernel map and every loaded program.

        Runs after the events are enabled (perf synthesizes first and enables after, and
        misses a program loaded in between).  A program loaded during the enumeration is
        both enumerated and announced in the rings; the rings are read before anything is
        written, and such a program keeps its live records only.  The records read are the
        first round after FINISHED_INIT."""
        syms = {}
        text = etext = None
        for line in kallsyms.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                if parts[2] == "_text":
                    text = int(parts[0], 16)
                elif parts[2] == "_etext":
                    etext = int(parts[0], 16)
                elif parts[2].startswith("bpf_prog_"):
                    syms[int(parts[0], 16)] = parts[2]
        sid = SampleId(pid=0, tid=0, time=0, cpu=0, id=self.attrs[0].ids[0])
        synthesized: list[tuple[int, list]] = []  # (prog id, its KSYMBOLs and BPF_EVENT)
        if text and etext:
            self.text_bounds = self.watch.kernel_text = (text, etext)
            writer.write(MmapRecord(misc=MISC_KERNEL, pid=-1, tid=0, addr=text,
                                    len=etext - text, pgoff=text,
                                    filename="[kernel.kallsyms]_text", sample_id=sid))
        own = self.kernel.own_prog_ids if self.kernel is not None else set()
        for prog_id in next_ids():
            if prog_id in own:
                continue  # textrace's capture program is not part of what is recorded
            cap = self.captures[prog_id] = ProgCapture(prog_id, b"")
            try:
                fd = prog_fd_by_id(prog_id)
            except TextraceError as e:
                cap.reason = str(e)
                continue
            self.held_fds[prog_id] = fd
            self._read_held()
            if cap.info is None:
                continue
            cap.tag = cap.info.tag
            names = kernel_ksym_names(cap.info, cap.btf)
            recs: list = [KsymbolRecord(addr=addr, len=n, ksym_type=KsymbolType.BPF, flags=0,
                                        name=syms.get(addr, name), sample_id=sid)
                          for (addr, n, _code), name in zip(cap.info.funcs(), names)]
            recs.append(BpfEventRecord(event_type=BpfEventType.PROG_LOAD, flags=0,
                                       prog_id=prog_id, tag=cap.info.tag, sample_id=sid))
            synthesized.append((prog_id, recs))
            for r in recs[:-1]:
                self.packs.on_ksymbol(0, r.addr, r.len, r.name, False)
        first_round = self._read_rings()
        announced = {struct.unpack_from("<I", raw, 12)[0] for raw in first_round
                     if struct.unpack_from("<IxxxxH", raw, 0) == (RecordType.BPF_EVENT,
                                                                 BpfEventType.PROG_LOAD)}
        for prog_id, recs in synthesized:
            if prog_id not in announced:
                writer.write_all(recs)
        writer.write(FinishedInitRecord())
        self._write_round(writer, first_round)

    # --- the loop -----------------------------------------------------------------------
    def _start_command(self) -> tuple[int, int] | None:
        if not self.opts.command:
            return None
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: wait until the events are enabled, then exec
            os.close(w)
            os.read(r, 1)
            try:
                os.execvp(self.opts.command[0], self.opts.command)
            except OSError as e:
                print(f"textrace: cannot run {self.opts.command[0]}: {e.strerror}",
                      file=sys.stderr)
                os._exit(127)
        os.close(r)
        self.child = pid
        return pid, w

    def _hold(self, fds: dict[int, int]) -> None:
        for prog_id, fd in fds.items():
            if prog_id in self.held_fds or (prog_id in self.captures and
                                            self.captures[prog_id].captured):
                os.close(fd)
                continue
            self.captures.setdefault(prog_id, ProgCapture(prog_id, b"")).reason = None
            self.held_fds[prog_id] = fd

    def drain(self, writer: PerfDataWriter) -> int:
        return self._write_round(writer, self._read_rings())

    def _read_rings(self) -> list[bytes]:
        """Every record now in the rings; BPF programs they announce are taken at once."""
        if self.scanner is not None:
            self._hold(self.scanner.take())
        batch = []
        registered: dict[int, int] = {}  # out-of-line code registered in this batch
        for ring in self.rings:
            for raw in ring.read():
                rtype = struct.unpack_from("<I", raw, 0)[0]
                if rtype in _TRIMMED:  # the kernel may have made them too long
                    raw = live.trim_inflated(raw, self.sideband_id_size)
                if rtype == RecordType.BPF_EVENT:
                    self.on_bpf_event(raw)
                elif rtype == RecordType.KSYMBOL:
                    self.on_ksymbol(raw, registered)
                elif rtype == RecordType.TEXT_POKE:
                    self.on_text_poke(raw)
                elif rtype == RecordType.SAMPLE:
                    ip = struct.unpack_from("<Q", raw, 16)[0]
                    if ip >= KERNEL_SPACE:
                        self.sampled.add(ip)
                elif rtype == RecordType.LOST:
                    self.summary.lost += struct.unpack_from("<Q", raw, 16)[0]
                batch.append(raw)
        for addr, n in registered.items():  # no record carries their bytes
            self.code.read(addr, n)
        self.packs.poll()
        self._read_held()
        if self.kernel is not None:
            for kc in self.kernel.poll():
                self._take_kernel_capture(kc)
            # a prog-array update: the JIT patched its callers inside the update syscall,
            # whose exit time (CLOCK_MONOTONIC, the capture program's clock) bounds the
            # change.  They are re-read in the first round without a newer update: any
            # TEXT_POKE the kernel did make for it is in the rings read by then, and is
            # applied to the watched images instead of being reported again.
            updates = self.kernel.take_prog_array_updates()
            if updates:
                last = (max(t for t, _map in updates)
                        if self.opts.clockid == CLOCKS["monotonic"] else self.now())
                self.recheck_due = max(self.recheck_due or 0, last)
            elif self.recheck_due is not None:
                batch += self.recheck_images(self.recheck_due)
                self.recheck_due = None
        elif self.watch.known:  # no word from the kernel: look every round
            batch += self.recheck_images()
        return batch

    def on_ksymbol(self, raw: bytes, registered: dict[int, int]) -> None:
        """Out-of-line code registered (BPF trampolines and dispatchers, ftrace and kprobe
        trampolines) goes in `registered`, to be read after the batch; code unregistered
        in the same batch is gone.  Programs are captured on their own."""
        addr, n, _ktype, flags = struct.unpack_from("<QIHH", raw, 8)
        self.packs.on_ksymbol(self._time_of(raw), addr, n,
                              raw[24:raw.index(b"\0", 24)].decode(errors="replace"),
                              bool(flags & 1))
        if flags & 1:  # PERF_RECORD_KSYMBOL_FLAGS_UNREGISTER
            registered.pop(addr, None)
        elif raw[24:33] != b"bpf_prog_":
            registered[addr] = n

    def on_text_poke(self, raw: bytes) -> None:
        """A change the kernel reported: its function is read at the end, and the watched
        images take it (it is not an unreported one)."""
        addr, old_len, new_len = struct.unpack_from("<QHH", raw, 8)
        self.poked.add(addr)
        self.watch.apply(self._time_of(raw), addr, raw[20 + old_len:20 + old_len + new_len])

    def recheck_images(self, by: int | None = None) -> list[bytes]:
        """Re-read the images of tail-calling programs: each change no TEXT_POKE reported
        becomes one, for the round being written, stamped `by` (when the change is known
        to have happened by) or else when it was seen."""
        changes = self.watch.recheck(self.now)
        if by is not None:
            changes = [dataclasses.replace(c, seen=min(c.seen, by)) for c in changes]
        self.unreported += changes
        sid = SampleId(pid=0, tid=0, time=0, cpu=0, id=self.attrs[0].ids[0])
        return [pack_record(TextPokeRecord(addr=c.addr, old_bytes=c.old, new_bytes=c.new,
                                           sample_id=sid._replace(time=c.seen)), self.attrs)
                for c in changes]

    def _take_kernel_capture(self, kc) -> None:
        info = kc.prog_info()
        cap = self.captures.setdefault(kc.prog_id, ProgCapture(kc.prog_id, info.tag))
        cap.info, cap.tag, cap.method, cap.reason = info, info.tag, "kernel", None
        cap.time, cap.btf = kc.time, kc.btf
        self.watch.watch(info, kc.time)

    def _start_kernel_capture(self) -> None:
        """Load the capture program (kernel or auto mode); auto falls back to user space
        and says why."""
        self.kernel = None
        if self.opts.capture == "user":
            return
        from .bpf.capture.loader import CaptureProgram
        try:
            self.kernel = CaptureProgram()
            self.summary.capture = "kernel"
        except (TextraceError, OSError) as e:
            if self.opts.capture == "kernel":
                raise
            self.summary.capture_note = f"kernel capture unavailable ({e}); using user space"

    def _write_round(self, writer: PerfDataWriter, batch: list[bytes]) -> int:
        """One round: the records sorted by time, FINISHED_ROUND, the header patched."""
        if batch:
            batch.sort(key=self._time_of)
            for raw in batch:
                writer.write_bytes(raw)
            writer.write(FinishedRoundRecord())
            writer.flush()
            self.summary.records += len(batch)
        return len(batch)

    def run(self) -> RecordSummary:
        opts = self.opts
        with open("/proc/kallsyms") as f:
            kallsyms = f.read()
        self._start_kernel_capture()  # before the events: its calibration load is not ours
        self.code = CodeReads(*open_kernel_memory(self.kernel), clock=self.now)
        self.packs = PackWatch(self.code.memory, self.now, self.code.unavailable)
        self.packs.start()
        self.open_events()
        writer = PerfDataWriter(opts.output, self.attrs)
        t_start_wall = time.time_ns()
        t_start = clock_ns(opts.clockid)
        for fd in self.fds:
            live.enable(fd)
        self.synthesize(writer, kallsyms)
        writer.flush()
        if opts.kernel_text:
            self._read_kernel_text()
        if self.kernel is None:  # user space races the loaders; the kernel needs no race
            self.scanner = IdScanner(max(self.captures, default=0))
        started = self._start_command()  # after enabling: the command is recorded whole
        if started:
            os.write(started[1], b"x")
            os.close(started[1])
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        deadline = None if opts.duration is None else time.monotonic() + opts.duration
        poller = select.epoll()
        for ring in self.rings:
            poller.register(ring.fd, select.EPOLLIN)
        if self.kernel is not None:
            poller.register(self.kernel.epoll_fd, select.EPOLLIN)
        try:
            while not self.stop:
                poller.poll(opts.round_ms / 1000)
                self.drain(writer)
                if self.progress:
                    self.progress(self)
                if self.child is not None:
                    pid, status = os.waitpid(self.child, os.WNOHANG)
                    if pid:
                        self.summary.exit_code = os.waitstatus_to_exitcode(status)
                        self.child = None
                        break
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            # stop taking programs and let go of those held while the events are still on:
            # where our fd was a program's last reference, its unload happens in this task
            # now (KSYMBOL unregister + PROG_UNLOAD), and is recorded
            if self.scanner is not None:
                self._hold(self.scanner.stop())
                self.scanner = None
            self.drain(writer)
            self._write_round(writer, self.recheck_images(self.recheck_due))
            for fd in self.fds:
                live.disable(fd)
            self.drain(writer)
            poller.close()
            self.packs.finish()
            self._read_kernel_functions(kallsyms)
            if self.kernel is not None:
                self.summary.kernel_lost = self.kernel.lost
                self.kernel.close()
            self._finish(writer, kallsyms, t_start_wall, t_start)
            for ring in self.rings:
                ring.close()
            for fd in self.fds:
                os.close(fd)
        return self.summary

    def _read_kernel_text(self) -> None:
        """All of _text.._etext now, in MAX_READ pieces: the base for every address."""
        if self.text_bounds is None:
            self.code.fail("kallsyms has no _text/_etext")
            return
        text, etext = self.text_bounds
        for addr in range(text, etext, MAX_READ):
            self.code.read(addr, min(MAX_READ, etext - addr))

    def _read_kernel_functions(self, kallsyms: str) -> None:
        """The kernel functions that were poked or sampled, as they are now: the base the
        code history replays TEXT_POKE records back from."""
        if not (self.poked or self.sampled) or self.code.memory is None:
            return
        from .history.kallsyms import KernelSymbols
        kernel = KernelSymbols.parse(kallsyms)
        extents = {function_extent(kernel, a) for a in sorted(self.poked | self.sampled)}
        for start, end in sorted(e for e in extents if e):
            self.code.read(start, end - start)

    def _on_signal(self, signum, frame) -> None:
        self.stop = True

    def _finish(self, writer: PerfDataWriter, kallsyms: str, wall: int, t0: int) -> None:
        caps = self.captures.values()
        self.summary.programs_seen = len(self.captures)
        self.summary.programs_captured = sum(c.captured for c in caps)
        self.summary.failures = [c for c in caps if not c.captured]
        progs = [c.info.to_bpil() for c in caps if c.captured]
        btfs = {c.info.info["btf_id"]: c.btf for c in caps if c.captured and c.btf}
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        attr_size = self.attrs[0].attr.size
        features = [
            BpfProgInfo(programs=tuple(BpfProgInfoEntry(arrays=arrays, info=info, data=data)
                                       for _il, _dl, arrays, info, data in progs)),
            BpfBtf(btfs=tuple(BtfEntry(id=i, data=b) for i, b in sorted(btfs.items()))),
            Hostname(value=socket.gethostname()),
            OsRelease(value=platform.release()),
            Version(value=f"textrace {__version__}"),
            Arch(value=platform.machine()),
            # perf's "avail" is the highest present cpu + 1
            NrCpus(nr_cpus_available=os.cpu_count() or 1,
                   nr_cpus_online=len(live.online_cpus())),
            TotalMem(total_mem_kb=kib),
            Cmdline(argv=tuple(sys.argv)),
            EventDesc(attr_size=attr_size, events=tuple(
                EventDescEntry(attr=a.attr, name=a.name or "", ids=tuple(a.ids))
                for a in self.attrs)),
            Clockid(clockid_res_ns=max(1, round(time.clock_getres(self.opts.clockid) * 1e9))),
            ClockData(clockid=self.opts.clockid, tod_ns=wall, clockid_ns=t0),
        ]
        for feat in features:
            writer.add_feature(feat.feature_id, feat.pack())
        private = PrivateSection()
        private.add(Kind.CAPTURES, b"\n".join(c.outcome_json() for c in caps))
        import zstandard
        private.add(Kind.KALLSYMS, zstandard.ZstdCompressor(level=3).compress(
            kallsyms.encode()))
        self.code.add_to(private)
        if self.unreported:
            private.add(Kind.UNREPORTED, b"\n".join(c.to_json() for c in self.unreported))
        self.summary.code = self.code.summary()
        self.packs.add_to(private)
        self.summary.packs = self.packs.summary()
        self.summary.unreported = len(self.unreported)
        private.add(Kind.RECORD_INFO, json.dumps({
            "capture": self.summary.capture, "clockid": self.opts.clockid,
            "lost_records": self.summary.lost, "capture_lost_chunks": self.summary.kernel_lost,
            "kernel_code": self.summary.code, "unreported_changes": len(self.unreported),
            "packs": self.summary.packs,
        }).encode())
        writer.add_feature(FEATURE_BIT, private.pack())
        writer.close()

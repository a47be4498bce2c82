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

import dataclasses
import json
import os
import platform
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from .version import __version__
from .bpf.prog_info import ALL_ARRAYS, ProgInfo, read_prog_info
from .bpf.btf import Btf, read_btf
from .bpf.syscall import NoSuchObject, next_ids, prog_fd_by_id
from .capture import ProgCapture
from .errors import TextraceError
from .freed import PackWatch
from .kernel_code import CodeReads, function_extent
from .perf import live
from .perf.abi import (KSYMBOL_FLAG_UNREGISTER, BpfEventType, KsymbolType, MISC_KERNEL,
                       RecordType, SampleType as S)
from .perf.attr import EventAttr, flag_mask
from .perf import features  # noqa: F401  the first capture is encoded with it: imported
#                              now, not in the round after a load (0.6 s under qemu TCG)
from .perf.private import Kind
from .perf.reader import Attr
from .perf import rawrecord
from .perf.rawrecord import record_type
from .perf.records import (BpfEventRecord, FinishedInitRecord, FinishedRoundRecord,
                           KsymbolRecord, MmapRecord, TextPokeRecord)
from .perf.sampleid import SampleId, id_trailer_size
from .perf.writer import PerfDataWriter, pack_record
from .entries import encode_kallsyms, encode_record_info
from .perf.private import pack_kernel_code
from .record_stream import CaptureLedger, EntryQueue
from .sources.id_scanner import IdScanner
from .sources.kernel_memory import MAX_READ, open_kernel_memory
from .unreported import ImageWatch

CLOCKS = {"realtime": 0, "monotonic": 1, "monotonic_raw": 4, "boottime": 7, "tai": 11}
SIDEBAND_TYPE = S.TID | S.TIME | S.CPU | S.IDENTIFIER
_TRIMMED = (RecordType.KSYMBOL, RecordType.BPF_EVENT, RecordType.TEXT_POKE)
SAMPLE_TYPE = S.IDENTIFIER | S.IP | S.TID | S.TIME | S.CPU | S.PERIOD
# a sample's ip and time at their fixed places in SAMPLE_TYPE's layout (a callchain, when
# asked for, comes after them)
_sample_ip = rawrecord.sample_u64_reader(SAMPLE_TYPE, S.IP)
_sample_time = rawrecord.sample_u64_reader(SAMPLE_TYPE, S.TIME)
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
    programs_failed: int = 0
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


def _loaded_prog_id(raw: bytes) -> int:
    """The program id of a BPF_EVENT(PROG_LOAD) record as the ring holds it, else 0."""
    if record_type(raw) != RecordType.BPF_EVENT or len(raw) < rawrecord.BPF_EVENT_END:
        return 0
    event_type, _flags, prog_id, _tag = rawrecord.bpf_event(raw)
    return prog_id if event_type == BpfEventType.PROG_LOAD else 0


class Recorder:
    notice = None  # called at the start with why kernel capture fell back (the CLI prints it)

    def __init__(self, opts: RecordOptions, progress=None):
        self.opts = opts
        self.progress = progress
        self.entries = EntryQueue()           # stream entries for the round being written
        self.ledger = CaptureLedger(self.entries)  # programs: seen, captured, in flight
        self.held_fds: dict[int, int] = {}
        self.summary = RecordSummary(opts.output)
        self.rings: list[live.Ring] = []
        self.fds: list[int] = []
        self.attrs: list[Attr] = []
        # a side-band record's time, from its sample_id trailer
        self._sideband_time = rawrecord.trailer_time_reader(self._sideband_attr())
        self.stop = False
        self.child: int | None = None
        self.scanner: IdScanner | None = None
        self.kernel = None  # the capture program, when it captures
        self.code: CodeReads | None = None   # kernel code read while recording
        self.poked: set[int] = set()          # addresses TEXT_POKE records named
        self.sampled: set[int] = set()        # kernel ips of samples
        self.watch = ImageWatch()             # tail-calling programs' images
        self.lost_written = (0, 0)            # (lost records, refused chunks) streamed
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
        if sa is not None:
            self.attrs.append(Attr(sa, tuple(sa_ids), self.opts.event))

    def _time_of(self, raw: bytes) -> int:
        """A record's time: a sample's own (only the sample attr samples), else its
        sample_id trailer's (the side-band attr's)."""
        if record_type(raw) == RecordType.SAMPLE:
            return _sample_time(raw)
        return self._sideband_time(raw)

    # --- capture ------------------------------------------------------------------------
    def on_bpf_event(self, raw: bytes) -> None:
        """A program was loaded or unloaded: grab it now, before its loader lets go."""
        event_type, _flags, prog_id, tag = rawrecord.bpf_event(raw)
        if event_type == BpfEventType.PROG_UNLOAD:
            self.watch.forget(prog_id)
        ledger = self.ledger
        if event_type != BpfEventType.PROG_LOAD or prog_id in ledger:
            if prog_id in ledger.pending and not ledger.pending[prog_id].tag:
                ledger.pending[prog_id].tag = tag
            return
        cap = ledger.open(prog_id, tag, time.monotonic())
        if self.kernel is not None:  # taken at load by the capture program: arriving
            cap.reason = "the capture program's chunks for it did not all arrive"
            return
        try:
            self.held_fds[prog_id] = prog_fd_by_id(prog_id)
        except NoSuchObject:
            ledger.failed(cap, "unloaded before user space could take it "
                               "(BPF_PROG_GET_FD_BY_ID: ENOENT)")
        except TextraceError as e:
            ledger.failed(cap, str(e))

    def _read_held(self) -> None:
        """Read the programs whose fds we hold, then let them go."""
        for prog_id, fd in list(self.held_fds.items()):
            cap = self.ledger.open(prog_id, b"", time.monotonic())
            try:
                cap.info = read_prog_info(fd, ALL_ARRAYS)
                cap.tag = cap.info.tag
                cap.method, cap.reason = "user", None
                cap.time = clock_ns(self.opts.clockid)
                self.watch.watch(cap.info, cap.time)
                if cap.info.info["btf_id"]:
                    try:
                        cap.btf = read_btf(cap.info.info["btf_id"])
                    except TextraceError:
                        pass
                self.ledger.captured(cap)
            except TextraceError as e:
                self.ledger.failed(cap, str(e))
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
            cap = self.ledger.open(prog_id, b"", time.monotonic())
            try:
                fd = prog_fd_by_id(prog_id)
            except TextraceError as e:
                self.ledger.failed(cap, str(e))
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
        announced = {_loaded_prog_id(raw) for raw in first_round} - {0}
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
            if prog_id in self.held_fds or self.ledger.is_captured(prog_id):
                os.close(fd)
                continue
            self.ledger.open(prog_id, b"", time.monotonic()).reason = None
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
                rtype = record_type(raw)
                if rtype in _TRIMMED:  # the kernel may have made them too long
                    raw = live.trim_inflated(raw, self.sideband_id_size)
                if rtype == RecordType.BPF_EVENT:
                    self.on_bpf_event(raw)
                elif rtype == RecordType.KSYMBOL:
                    self.on_ksymbol(raw, registered)
                elif rtype == RecordType.TEXT_POKE:
                    self.on_text_poke(raw)
                elif rtype == RecordType.SAMPLE:
                    ip = _sample_ip(raw)
                    if ip >= KERNEL_SPACE:
                        self.sampled.add(ip)
                elif rtype == RecordType.LOST:
                    self.summary.lost += rawrecord.lost_count(raw)
                batch.append(raw)
        for addr, n in registered.items():  # no record carries their bytes
            self.code.read(addr, n)
        self.packs.poll()
        self.packs.add_to(self.entries)   # its verdicts go with this round, then are dropped
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
        addr, n, _ktype, flags, name = rawrecord.ksymbol(raw)
        self.packs.on_ksymbol(self._time_of(raw), addr, n, name,
                              bool(flags & KSYMBOL_FLAG_UNREGISTER))
        if flags & KSYMBOL_FLAG_UNREGISTER:
            registered.pop(addr, None)
        elif not name.startswith("bpf_prog_"):
            registered[addr] = n

    def on_text_poke(self, raw: bytes) -> None:
        """A change the kernel reported: its function is read at the end, and the watched
        images take it (it is not an unreported one)."""
        addr, _old, new = rawrecord.text_poke(raw)
        self.poked.add(addr)
        self.watch.apply(self._time_of(raw), addr, new)

    def recheck_images(self, by: int | None = None) -> list[bytes]:
        """Re-read the images of tail-calling programs: each change no TEXT_POKE reported
        becomes one, for the round being written, stamped `by` (when the change is known
        to have happened by) or else when it was seen."""
        changes = self.watch.recheck(self.now)
        if by is not None:
            changes = [dataclasses.replace(c, seen=min(c.seen, by)) for c in changes]
        for c in changes:
            self.entries.add(Kind.UNREPORTED, c.to_json())
        self.summary.unreported += len(changes)
        sid = SampleId(pid=0, tid=0, time=0, cpu=0, id=self.attrs[0].ids[0])
        return [pack_record(TextPokeRecord(addr=c.addr, old_bytes=c.old, new_bytes=c.new,
                                           sample_id=sid._replace(time=c.seen)), self.attrs)
                for c in changes]

    def _take_kernel_capture(self, kc) -> None:
        info = kc.prog_info()
        cap = ProgCapture(kc.prog_id, info.tag, info, "kernel", None, kc.time, kc.btf)
        self.watch.watch(info, kc.time)
        self.ledger.captured(cap)

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
            self.summary.capture_note = f"kernel capture: {self.kernel.variant_note}"
        except (TextraceError, OSError) as e:
            why = e.message + (f" ({e.file})" if e.file else "") \
                if isinstance(e, TextraceError) else str(e)
            if self.opts.capture == "kernel":
                raise TextraceError(f"kernel capture unavailable: {why}",
                                    field="--capture kernel") from None
            self.summary.capture_note = (
                f"kernel capture unavailable: {why}; capturing from user space instead, "
                f"which misses programs that live microseconds (--capture user: no warning)")

    def _write_round(self, writer: PerfDataWriter, batch: list[bytes]) -> int:
        """One round: the records sorted by time, FINISHED_ROUND, the stream entries that
        arrived with them (captures, kernel code, changes, losses), the header patched."""
        if batch:
            batch.sort(key=self._time_of)
            for raw in batch:
                writer.write_bytes(raw)
            writer.write(FinishedRoundRecord())
            self.summary.records += len(batch)
        self._note_losses()
        if batch or self.entries:
            self.entries.write(writer)
            writer.flush()
        return len(batch)

    def _note_losses(self) -> None:
        """Losses go into the stream when they change: a killed file still counts them."""
        refused = self.kernel.lost if self.kernel is not None else self.summary.kernel_lost
        now = (self.summary.lost, refused)
        if now != self.lost_written:
            self.lost_written = now
            self.summary.kernel_lost = refused
            self.entries.add(Kind.RECORD_INFO, json.dumps(
                {"lost_records": now[0], "capture_lost_chunks": now[1]}).encode())

    def run(self) -> RecordSummary:
        opts = self.opts
        with open("/proc/kallsyms") as f:
            kallsyms = f.read()
        self._start_kernel_capture()  # before the events: its calibration load is not ours
        self.code = CodeReads(*open_kernel_memory(self.kernel), clock=self.now,
                              sink=self._code_read)
        self.packs = PackWatch(self.code.memory, self.now, self.code.unavailable)
        self.packs.start()
        self.open_events()
        if self.summary.capture_note and self.notice:  # once the events opened: a refusal
            self.notice(self.summary.capture_note)     # there is the one line to print
        writer = PerfDataWriter(opts.output, self.attrs)
        t_start_wall = time.time_ns()
        t_start = clock_ns(opts.clockid)
        for fd in self.fds:
            live.enable(fd)
        # how the recording is made, and kallsyms: streamed first, so a file whose end is
        # never written can still be finished (finish.py)
        self.entries.add(Kind.RECORD_INFO, encode_record_info(
            self._start_info(t_start_wall, t_start)))
        self.entries.add(Kind.KALLSYMS, encode_kallsyms(kallsyms))
        self.synthesize(writer, kallsyms)
        writer.flush()
        if opts.kernel_text:
            self._read_kernel_text()
        if self.kernel is None:  # user space races the loaders; the kernel needs no race
            self.scanner = IdScanner(self.ledger.max_id)
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
                if self.kernel is not None:  # chunks lost in the capture ring: given up
                    self.ledger.expire(time.monotonic())
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

    def _code_read(self, addr: int, t: int, data: bytes) -> None:
        self.entries.add(Kind.KERNEL_CODE, pack_kernel_code(addr, t, data))

    def _start_info(self, wall: int, t0: int) -> dict:
        """RECORD_INFO at the start: what the file's header features are made from."""
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return {
            "capture": self.summary.capture, "clockid": self.opts.clockid,
            "hostname": socket.gethostname(), "os_release": platform.release(),
            "version": f"textrace {__version__}", "arch": platform.machine(),
            # perf's "avail" is the highest present cpu + 1
            "nr_cpus_available": os.cpu_count() or 1,
            "nr_cpus_online": len(live.online_cpus()), "total_mem_kb": kib,
            "cmdline": list(sys.argv), "event_names": [a.name or "" for a in self.attrs],
            "clockid_res_ns": max(1, round(time.clock_getres(self.opts.clockid) * 1e9)),
            "tod_ns": wall, "clockid_ns": t0}

    def _finish(self, writer: PerfDataWriter, kallsyms: str, wall: int, t0: int) -> None:
        """The last entries into the stream, then the end of the file made from the stream
        alone (finish.py, as `textrace recover` does): a kill at any point of it leaves a
        file recover finishes."""
        ledger, s = self.ledger, self.summary
        ledger.fail_all()
        s.programs_seen, s.programs_captured = ledger.n_seen, ledger.n_captured
        s.programs_failed = ledger.n_failed
        s.code = self.code.summary()
        self.packs.add_to(self.entries)
        s.packs = self.packs.summary()
        self.entries.add(Kind.RECORD_INFO, encode_record_info({
            "packs": s.packs,
            "capture_note": s.capture_note,
            "lost_records": s.lost, "capture_lost_chunks": s.kernel_lost,
            "kernel_code": s.code, "unreported_changes": s.unreported,
            "programs_seen": s.programs_seen, "programs_captured": s.programs_captured,
            "programs_failed": s.programs_failed}))
        self.entries.write(writer)
        writer.close()  # the data and a header for it; no features yet
        from .finish import finish_file
        finish_file(self.opts.output)

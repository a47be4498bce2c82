"""textrace record: the kernel's code sideband (and optionally samples) into perf.data,
with every BPF program captured while it lives.

Per CPU, one dummy software event carries the sideband — KSYMBOL, BPF_EVENT, TEXT_POKE,
MMAP2, COMM, FORK/EXIT — waking the reader when a quarter of its ring is used (and the
reader polls every round_ms anyway), and an optional sampling event shares its ring.  The
events are enabled before anything is synthesized, so no program falls between the two.
Records are drained in rounds, sorted by time within the round, written with a
FINISHED_ROUND after each (perf's ordering contract), and the header is patched after every
round so a killed recorder leaves a readable file.

Orchestration only: each job is a module of this package (events.py, synthesis.py,
captures.py, code_reads.py, image_watch.py, pack_watch.py, stream.py, record_info.py,
finish.py); the Recorder wires the live sources to the writer, round by round.

Programs are captured in the kernel when the capture program loads (bpf/capture: a copy of
each program taken synchronously at BPF_PROG_LOAD), else in user space: the id scanner
takes an fd on each new program id at once, and each BPF_EVENT(PROG_LOAD) is acted on as
soon as it is read (BPF_PROG_GET_FD_BY_ID first: an fd keeps the program alive; the info
after).  Programs that were gone before that are listed with the reason.

Kernel code that no record carries is read while recording (code_reads.py): the image of
every out-of-line code symbol (BPF trampolines and dispatchers, ftrace and kprobe code) when
its KSYMBOL arrives, and at the end the functions that were poked or sampled.  JIT images
patched without a TEXT_POKE (tail-call sites) are re-read and the changes recorded
(image_watch.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import time

from ..bpf.syscall import NoSuchObject, next_ids, prog_fd_by_id
from ..entries import encode_kallsyms, encode_record_info
from ..errors import TextraceError
from ..perf import features  # noqa: F401  the first capture is encoded with it: imported
#                              now, not in the round after a load (0.6 s under qemu TCG)
from ..perf import live, rawrecord
from ..perf.abi import KSYMBOL_FLAG_UNREGISTER, BpfEventType, RecordType
from ..perf.private import Kind, pack_kernel_code
from ..perf.rawrecord import record_type
from ..perf.reader import Attr
from ..perf.records import FinishedInitRecord, FinishedRoundRecord, TextPokeRecord
from ..perf.sampleid import SampleId
from ..perf.writer import PerfDataWriter, pack_record
from ..sources.id_scanner import IdScanner
from ..sources.kernel_memory import open_kernel_memory
from .captures import read_held, start_kernel_capture, take_kernel_capture
from .code_reads import CodeReads, read_kernel_functions, read_kernel_text
from .command import start_command
from .events import KERNEL_SPACE, TRIMMED, open_events, sample_ip, time_reader
from .image_watch import ImageWatch
from .options import CLOCKS, RecordOptions, RecordSummary, clock_ns
from .pack_watch import PackWatch
from .record_info import end_info, start_info
from .stream import CaptureLedger, EntryQueue
from .synthesis import kernel_map, kernel_mmap, loaded_prog_id, program_records


class Recorder:
    """`textrace record`: wires the live sources (perf rings, the capture program or the id
    scanner, kernel memory) to a perf.data writer, a round at a time."""

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
        # a record's time: a sample's own, else its sample_id trailer's
        self._time_of = time_reader(opts)
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
        self.packs: PackWatch | None = None   # bpf_prog_pack extents, freed code (pack_watch.py)

    def now(self) -> int:
        """Now on the recording's clock (ns)."""
        return clock_ns(self.opts.clockid)

    # --- events -------------------------------------------------------------------------
    def open_events(self) -> None:
        """The per-CPU sideband events (and sampling ones, if asked), their rings mapped."""
        self.attrs, self.sideband_id_size = open_events(self.opts, self.fds, self.rings)

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
        read_held(self.held_fds, self.ledger, self.watch, self.opts.clockid)

    # --- synthesis ----------------------------------------------------------------------
    def synthesize(self, writer: PerfDataWriter, kallsyms: str) -> None:
        """What was there before we started: the kernel map and every loaded program.

        Runs after the events are enabled (perf synthesizes first and enables after, and
        misses a program loaded in between).  A program loaded during the enumeration is
        both enumerated and announced in the rings; the rings are read before anything is
        written, and such a program keeps its live records only.  The records read are the
        first round after FINISHED_INIT."""
        text, etext, syms = kernel_map(kallsyms)
        sid = SampleId(pid=0, tid=0, time=0, cpu=0, id=self.attrs[0].ids[0])
        synthesized: list[tuple[int, list]] = []  # (prog id, its KSYMBOLs and BPF_EVENT)
        if text and etext:
            self.text_bounds = self.watch.kernel_text = (text, etext)
            writer.write(kernel_mmap(text, etext, sid))
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
            recs = program_records(prog_id, cap.info, cap.btf, syms, sid)
            synthesized.append((prog_id, recs))
            for r in recs[:-1]:
                self.packs.on_ksymbol(0, r.addr, r.len, r.name, False)
        first_round = self._read_rings()
        announced = {loaded_prog_id(raw) for raw in first_round} - {0}
        for prog_id, recs in synthesized:
            if prog_id not in announced:
                writer.write_all(recs)
        writer.write(FinishedInitRecord())
        self._write_round(writer, first_round)

    # --- the loop -----------------------------------------------------------------------
    def _start_command(self) -> tuple[int, int] | None:
        started = start_command(self.opts.command)
        if started:
            self.child = started[0]
        return started

    def _hold(self, fds: dict[int, int]) -> None:
        for prog_id, fd in fds.items():
            if prog_id in self.held_fds or self.ledger.is_captured(prog_id):
                os.close(fd)
                continue
            self.ledger.open(prog_id, b"", time.monotonic()).reason = None
            self.held_fds[prog_id] = fd

    def drain(self, writer: PerfDataWriter) -> int:
        """One round: what the rings hold, written; the number of records."""
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
                if rtype in TRIMMED:  # the kernel may have made them too long
                    raw = live.trim_inflated(raw, self.sideband_id_size)
                if rtype == RecordType.BPF_EVENT:
                    self.on_bpf_event(raw)
                elif rtype == RecordType.KSYMBOL:
                    self.on_ksymbol(raw, registered)
                elif rtype == RecordType.TEXT_POKE:
                    self.on_text_poke(raw)
                elif rtype == RecordType.SAMPLE:
                    ip = sample_ip(raw)
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
                take_kernel_capture(kc, self.ledger, self.watch)
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
        """Record until the command exits, the duration ends or a signal; then finish the file."""
        opts = self.opts
        with open("/proc/kallsyms") as f:
            kallsyms = f.read()
        # the capture program, in kernel or auto mode (auto falls back to user space and
        # says why): before the events, its calibration load is not ours
        self.kernel = start_kernel_capture(opts.capture, self.summary)
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
            start_info(opts, self.summary, self.attrs, t_start_wall, t_start)))
        self.entries.add(Kind.KALLSYMS, encode_kallsyms(kallsyms))
        self.synthesize(writer, kallsyms)
        writer.flush()
        if opts.kernel_text:
            read_kernel_text(self.code, self.text_bounds)
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
            read_kernel_functions(self.code, kallsyms, self.poked | self.sampled)
            if self.kernel is not None:
                self.summary.kernel_lost = self.kernel.lost
                self.kernel.close()
            self._finish(writer, kallsyms, t_start_wall, t_start)
            for ring in self.rings:
                ring.close()
            for fd in self.fds:
                os.close(fd)
        return self.summary

    def _on_signal(self, signum, frame) -> None:
        self.stop = True

    def _code_read(self, addr: int, t: int, data: bytes) -> None:
        self.entries.add(Kind.KERNEL_CODE, pack_kernel_code(addr, t, data))

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
        self.entries.add(Kind.RECORD_INFO, encode_record_info(end_info(s)))
        self.entries.write(writer)
        writer.close()  # the data and a header for it; no features yet
        from .finish import finish_file
        finish_file(self.opts.output)

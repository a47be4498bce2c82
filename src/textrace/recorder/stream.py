"""The recorder's side of the stream: entries queued as they arrive and written with each
round (perf/stream.py), and a ledger of programs whose memory does not grow with them.

A recorder that runs for hours under a storm of loads must not keep what it captured: each
capture is encoded and queued the moment it is taken, written after the round's records and
flushed with them, then dropped.  What stays is a bit per program id (ids only grow,
kernel/bpf/syscall.c idr_alloc_cyclic), the programs still in flight, and counts.
"""

from __future__ import annotations

from ..bpf.ids import IdSet
from ..capture import ProgCapture
from ..perf.private import COMPRESSED, ZSTD, Kind
from ..perf.stream import pack_entry

PENDING_SECONDS = 5.0   # a kernel capture not complete by then is written as failed


class EntryQueue:
    """Entries waiting for the end of the round; `write(writer)` appends them as stream
    records (the caller flushes)."""

    def __init__(self):
        self.queue: list[bytes] = []
        self.seq = 0
        self.written = 0

    def add(self, kind: int, data: bytes) -> None:
        """Queue an entry as its stream chunks, zstd first for the COMPRESSED kinds."""
        flags = 0
        if kind in COMPRESSED:  # kernel code: ~3:1
            import zstandard
            data, flags = zstandard.ZstdCompressor(level=3).compress(data), ZSTD
        self.queue.append(pack_entry(kind, self.seq, data, flags))
        self.seq += 1

    def __bool__(self) -> bool:
        return bool(self.queue)

    def write(self, writer) -> int:
        """Append the queued records to `writer` (a PerfDataWriter); returns how many."""
        n = len(self.queue)
        for raw in self.queue:
            writer.write_bytes(raw)
        self.queue = []
        self.written += n
        return n


class CaptureLedger:
    """Every program seen, which were captured, and the ones still in flight (`pending`:
    an fd held, or the capture program's chunks on their way)."""

    def __init__(self, entries: EntryQueue):
        self.entries = entries
        self.seen = IdSet()
        self.done = IdSet()         # outcome written
        self.captured_ids = IdSet()
        self.pending: dict[int, ProgCapture] = {}
        self.since: dict[int, float] = {}   # pending -> monotonic seconds when first seen
        self.n_seen = self.n_captured = self.n_failed = 0
        self.max_id = 0

    def __contains__(self, prog_id: int) -> bool:
        return prog_id in self.seen

    def is_captured(self, prog_id: int) -> bool:
        """Whether the program's capture (not a failure) was written."""
        return prog_id in self.captured_ids

    def _see(self, prog_id: int) -> None:
        if prog_id not in self.seen:
            self.seen.add(prog_id)
            self.n_seen += 1
            self.max_id = max(self.max_id, prog_id)

    def open(self, prog_id: int, tag: bytes, now: float) -> ProgCapture:
        """The pending capture of prog_id, begun now if there is none."""
        cap = self.pending.get(prog_id)
        if cap is None:
            self._see(prog_id)
            cap = self.pending[prog_id] = ProgCapture(prog_id, tag)
            self.since[prog_id] = now
        elif tag and not cap.tag:
            cap.tag = tag
        return cap

    def captured(self, cap: ProgCapture) -> None:
        """Written into the stream now; only its id is kept."""
        pid = cap.prog_id
        self._see(pid)
        if pid in self.captured_ids:
            return
        if pid in self.done:           # written as failed before: it came after all
            self.n_failed -= 1
        self.entries.add(Kind.CAPTURE, cap.encode())
        self.captured_ids.add(pid)
        self.done.add(pid)
        self.n_captured += 1
        self.pending.pop(pid, None)
        self.since.pop(pid, None)

    def failed(self, cap: ProgCapture, reason: str | None = None) -> None:
        """Write the program as not captured, for `reason` (or the one it carries); a
        program already written is left as it was."""
        pid = cap.prog_id
        self._see(pid)
        if reason is not None:
            cap.reason = reason
        self.pending.pop(pid, None)
        self.since.pop(pid, None)
        if pid in self.done:
            return
        cap.info = cap.btf = None
        self.entries.add(Kind.CAPTURE, cap.encode())
        self.done.add(pid)
        self.n_failed += 1

    def expire(self, now: float, older_than: float = PENDING_SECONDS,
               keep: set[int] | frozenset = frozenset()) -> None:
        """Pending captures older than that (and not in `keep`) are written as failed with
        the reason they carry."""
        for pid, t in list(self.since.items()):
            if now - t > older_than and pid not in keep:
                self.failed(self.pending[pid])

    def fail_all(self) -> None:
        """At the end of the recording: every pending capture is written as failed."""
        for cap in list(self.pending.values()):
            self.failed(cap)

"""The recorder's bpf_prog_pack watch: where the packs are, and whether freed code is gone.

bpf_prog_pack (kernel/bpf/core.c, 5.18+) puts the JIT images of many programs into one
executable allocation, 64-byte chunks taken first-fit from a bitmap.  A program is freed an
RCU grace period and a workqueue pass after its unload is announced (__bpf_prog_put_noref:
KSYMBOL unregister and BPF_EVENT(PROG_UNLOAD) first, then call_rcu, then
bpf_prog_free_deferred -> bpf_jit_free -> bpf_prog_pack_free), which overwrites its chunks
with INT3 (x86 bpf_arch_text_invalidate, text_poke_set(0xcc)) before clearing them in the
bitmap, and no TEXT_POKE reports that.  So the recorder, through its kernel code reader
(kcore, or the capture program where there is none):

- finds each pack's extent when a JIT image lands outside the packs it knows: vmalloc
  leaves an unmapped guard page after every area, so the mapped pages around the image are
  exactly its allocation (the capture program cannot read an unmapped page; kcore reads
  one as zeros, and a mapped pack page is never all zeros: packs are filled with INT3);
- reads each pack whole when it is found and at the end (chunks holding anything but
  INT3, and the headers it finds), and /proc/vmallocinfo's bpf_prog_pack_alloc areas;
- reads the bpf_binary_header (u32 size) of every image still alive after its batch;
- re-reads every freed image's allocation each round until every byte is INT3 or belongs
  to code a KSYMBOL announced since (first-fit hands the chunks straight to the next
  program), or the pack is gone, giving up GIVE_UP_NS after the unload: that range is
  stale.

Everything read goes into the recording's stream as it is decided (Kind.PACKS entries,
a round's worth each: a killed recorder keeps them) for `textrace packs` and the code
history, where the verdicts are made again with the whole recording known.  The watch keeps
only what live images and pending frees still need, so its memory does not grow with the
programs a long recording sees.
"""

from __future__ import annotations

import bisect
import time as _time
from dataclasses import dataclass, field
from typing import Callable

from ..bpf.pack import CHUNK, HEADER, INT3, PAGE, allocation_of
from ..errors import TextraceError
from ..entries import encode_packs
from ..perf.private import Kind

MAX_PROBE_PAGES = 2048     # an allocation is looked for this far (8 MiB) on either side
GIVE_UP_NS = 5 * 10**9     # a freed range still holding old code this long after: stale
FINISH_WAIT_S = 3.0        # at the end, how long pending ranges are waited for
MAX_READ = 1 << 20         # the capture program's bound per read
SNAPSHOT_BUDGET = 64 << 20  # bytes of pack snapshots one recording reads at most
VMALLOCINFO = "/proc/vmallocinfo"
PROBE_BYTES = 64           # read of a page to tell whether it is mapped
READ_TRIES = 4
HEADER_TRIES = 5           # rounds a live image's header read is tried again
UNMAPPED = object()


def vmalloc_areas(path: str = VMALLOCINFO) -> list[dict]:
    """The bpf_prog_pack_alloc (and bpf_jit_alloc_exec) areas /proc/vmallocinfo lists:
    size in bytes (with the guard page), and the address when the kernel shows it (with
    kptr_restrict 0 it prints hashed pointers, which are no use: addr is None then)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                if "bpf_prog_pack_alloc" not in line:
                    continue
                parts = line.split()
                lo = int(parts[0].split("-")[0], 16)
                out.append({"addr": lo if lo >= 0xffff800000000000 else None,
                            "size": int(parts[1]), "caller": parts[2]})
    except (OSError, ValueError, IndexError):
        pass
    return out


@dataclass
class Freed:
    """A freed JIT image's allocation, waiting to be seen invalidated."""

    addr: int                   # the image (KSYMBOL address) and its length
    len: int
    name: str
    hdr: int
    size: int
    size_source: str            # "header" (read while alive) or "estimate"
    unloaded: int               # the KSYMBOL unregister's time (ns, the recording's clock)
    attempts: int = 0
    first_read: int | None = None
    last_read: int | None = None
    data: bytes | None = None   # the last read's bytes
    state: str = "pending"      # pending, invalidated, reused, unmapped, stale, unreadable


@dataclass
class PackWatch:
    """The recorder's watch over bpf_prog_pack (the module docstring says what it reads
    and why); times from `clock`, ns on the recording's clock."""

    memory: object | None                   # kernel_code.KernelMemory, or None
    clock: Callable[[], int]
    unavailable: str | None = None
    packs: list[tuple[int, int, int]] = field(default_factory=list)  # start, size, time
    # image addr -> its registration [time, hdr, end, the header read's time or None]
    live: dict[int, list] = field(default_factory=dict)
    names: dict[int, tuple[int, str]] = field(default_factory=dict)  # addr -> (len, name)
    # registrations in time order, for telling reused chunks from stale ones: only those
    # later than a pending free's unload (or the newest event) can explain its bytes
    recent: list[list] = field(default_factory=list)
    pending: list[Freed] = field(default_factory=list)
    events: list[tuple[int, int, int, str, bool]] = field(default_factory=list)
    out: list[dict] = field(default_factory=list)   # decided, not yet in the stream
    states: dict[str, int] = field(default_factory=dict)   # final states of freed ranges
    snapshot_bytes: int = 0
    pack_size: int | None = None
    areas: list[int] = field(default_factory=list)  # vmallocinfo's pack area sizes
    header_retry: dict[int, int] = field(default_factory=dict)  # image addr -> tries
    failures: dict[str, int] = field(default_factory=dict)
    newest: int = 0                         # the newest KSYMBOL time acted on

    def start(self) -> None:
        """Note /proc/vmallocinfo's pack areas as the recording starts."""
        self._vmalloc("start")

    def _vmalloc(self, when: str) -> None:
        areas = vmalloc_areas()
        self.areas += [a["size"] for a in areas]
        self.out.append({"t": "vmalloc", "time": self.clock(), "when": when, "areas": areas})

    # --- records ------------------------------------------------------------------------
    def on_ksymbol(self, t: int, addr: int, n: int, name: str, unregister: bool) -> None:
        """A BPF program's function, trampoline or dispatcher came or went (the batch is
        sorted by time before it is acted on: rings are per CPU)."""
        if name.startswith("bpf_"):
            self.events.append((t, addr, n, name, unregister))

    def poll(self) -> None:
        """After each batch: act on its KSYMBOLs in time order, then re-read the freed."""
        events, self.events = sorted(self.events), []
        fresh = []
        for t, addr, n, name, unregister in events:
            self.newest = max(self.newest, t)
            if unregister:
                reg = self.live.pop(addr, None)
                if reg is not None:
                    self._freed(addr, *self.names.pop(addr), reg, t)
            else:
                hdr, size = self._extent(addr, n, name)
                reg = [t, hdr, hdr + size, None]
                self.live[addr] = reg
                self.names[addr] = (n, name)
                self.recent.append(reg)
                fresh.append(addr)
        retry, self.header_retry = self.header_retry, {}
        for addr, tries in retry.items():  # header reads that did not arrive last time
            if addr in self.live and addr not in fresh:
                self._read_header(addr, tries)
        for addr in fresh:
            if addr in self.live:
                self._learn(addr)
        self._recheck()
        self._prune()

    def _prune(self) -> None:
        """Forget registrations no pending or future free can be explained by: those
        before the oldest pending unload and before the newest event (less a second for
        the rings' skew: each CPU's batch is sorted, not the rounds)."""
        horizon = min([f.unloaded for f in self.pending] + [self.newest - 10**9])
        k = bisect.bisect_left(self.recent, horizon, key=lambda reg: reg[0])
        if k > len(self.recent) // 2:
            del self.recent[:k]

    def _extent(self, addr: int, n: int, name: str) -> tuple[int, int]:
        if name.startswith("bpf_prog_"):
            return allocation_of(addr, n)
        return addr, -(-n // CHUNK) * CHUNK   # trampolines, dispatchers: no header

    def _learn(self, addr: int) -> None:
        """A new image still alive after its batch: its pack, and its header's size."""
        n, name = self.names[addr]
        if self.memory is None:
            return
        if not any(s <= addr < s + size for s, size, _ in self.packs):
            self._probe(addr)
        if name.startswith("bpf_prog_"):
            self._read_header(addr, 0)

    def _read_header(self, addr: int, tries: int) -> None:
        n, _name = self.names[addr]
        hdr, est = allocation_of(addr, n)
        got = self._try_read(hdr, HEADER)
        if got is None:
            if tries < HEADER_TRIES:
                self.header_retry[addr] = tries + 1   # the ring was full: next round
            return
        if got is UNMAPPED:
            return
        size = int.from_bytes(got[:4], "little")
        # a header, not fill or another program's code: chunks, and the image fits
        if size % CHUNK == 0 and size >= est - CHUNK and hdr + size >= addr + n \
                and size <= 1 << 30:
            now = self.clock()
            reg = self.live[addr]
            reg[1:] = [hdr, hdr + size, now]
            self.out.append({"t": "header", "addr": addr, "hdr": hdr, "size": size,
                             "time": now})

    def _probe(self, addr: int) -> None:
        """The mapped extent around addr, page by page: one vmalloc area (see above)."""
        page = addr & ~(PAGE - 1)
        if not self._mapped(page):
            return
        lo = page
        for _ in range(MAX_PROBE_PAGES):
            got = self._mapped(lo - PAGE)
            if got is None:
                return     # not known; the next image in it tries again
            if not got:
                break
            lo -= PAGE
        hi = page + PAGE
        for _ in range(MAX_PROBE_PAGES):
            got = self._mapped(hi)
            if got is None:
                return
            if not got:
                break
            hi += PAGE
        n, name = self.names[addr]
        size = self._pack_size()
        if size and hi - lo > size and allocation_of(addr, n)[1] <= size:
            # kcore (6.1) read a page before this pack as mapped; the page after it is its
            # own guard page, never mapped: the pack ends there
            lo = hi - size
        now = self.clock()
        self.packs.append((lo, hi - lo, now))
        self.out.append({"t": "pack", "start": lo, "size": hi - lo, "time": now,
                         "how": "probe"})
        self._snapshot(lo, hi - lo, "found")

    def _pack_size(self) -> int | None:
        """BPF_PROG_PACK_SIZE, from /proc/vmallocinfo: its smallest bpf_prog_pack_alloc
        area less the guard page (sizes are shown even where addresses are hashed)."""
        if self.pack_size is None:
            areas = self.areas or [a["size"] for a in vmalloc_areas()]
            areas = [a for a in areas if a > PAGE]
            if areas:
                self.pack_size = min(areas) - PAGE
        return self.pack_size

    def _mapped(self, page: int) -> bool | None:
        """Whether the page is mapped; None when the reader could not tell (the capture
        program's ring was full)."""
        got = self._try_read(page, PROBE_BYTES)
        return None if got is None else got is not UNMAPPED

    def _try_read(self, addr: int, n: int):
        """The bytes, UNMAPPED (the capture program could not read them, or kcore gave
        zeros: a mapped pack is never all zeros, it is filled with INT3), or None when the
        read did not arrive (tried again a few times first)."""
        for _ in range(READ_TRIES):
            try:
                data = self.memory.read(addr, n)
            except (OSError, TextraceError) as e:
                if isinstance(e, OSError) or "unreadable" in str(e) or \
                        "not in any kcore segment" in str(e):
                    return UNMAPPED
                continue   # the ring was full: the bytes did not arrive
            return data if any(data) else UNMAPPED
        self._fail("reads that did not arrive")
        return None

    def _snapshot(self, start: int, size: int, when: str) -> None:
        """The pack's chunks now: which hold anything but INT3, and its headers."""
        if self.snapshot_bytes + size > SNAPSHOT_BUDGET:
            self._fail("pack snapshot over its budget")
            return
        t = self.clock()
        parts = []
        for off in range(0, size, MAX_READ):
            got = self._read(start + off, min(MAX_READ, size - off))
            if got is None:
                return
            parts.append(got)
        data = b"".join(parts)
        self.snapshot_bytes += size
        used = bytearray((size // CHUNK + 7) // 8)
        cc = bytes([INT3]) * CHUNK
        for k in range(size // CHUNK):
            if data[k * CHUNK:(k + 1) * CHUNK] != cc:
                used[k >> 3] |= 1 << (k & 7)
        self.out.append({"t": "snapshot", "start": start, "size": size, "time": t,
                         "when": when, "used": used.hex()})

    def _read(self, addr: int, n: int) -> bytes | None:
        got = self._try_read(addr, n)
        if got is UNMAPPED:
            self._fail("unmapped")
            return None
        return got

    def _fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1

    # --- freed ranges -------------------------------------------------------------------
    def _freed(self, addr: int, n: int, name: str, reg: list, t: int) -> None:
        _born, hdr, end, header_read = reg
        source = "ksymbol"
        if name.startswith("bpf_prog_"):
            source = "estimate"
            if header_read is not None and header_read < t:
                source = "header"
            else:  # read after the free (another program's header?): not this one's
                hdr, size = allocation_of(addr, n)
                end = hdr + size
        if not name.startswith("bpf_prog_") and not any(
                s <= addr < s + size for s, size, _ in self.packs):
            return  # out-of-line code outside every pack (a trampoline on 6.1): its own
        f = Freed(addr, n, name, hdr, end - hdr, source, t)
        if self.memory is None:
            f.state = "unreadable"
            self._done(f)
        else:
            self.pending.append(f)

    def _done(self, f: Freed) -> None:
        """A freed range's verdict: into the stream, counted, forgotten."""
        self.states[f.state] = self.states.get(f.state, 0) + 1
        self.out.append({"t": "freed", "addr": f.addr, "len": f.len, "name": f.name,
                         "hdr": f.hdr, "size": f.size, "size_source": f.size_source,
                         "unloaded": f.unloaded, "attempts": f.attempts,
                         "first_read": f.first_read, "last_read": f.last_read,
                         "state": f.state, "data": f.data.hex() if f.data else None})

    def _recheck(self) -> None:
        still = []
        for f in self.pending:
            self._check(f)
            if f.state == "pending":
                still.append(f)
            else:
                self._done(f)
        self.pending = still

    def _check(self, f: Freed) -> None:
        data = self._try_read(f.hdr, min(f.size, MAX_READ))
        if data is None:
            return   # not read this time
        now = self.clock()
        f.attempts += 1
        f.first_read = f.first_read if f.first_read is not None else now
        f.last_read = now
        if data is UNMAPPED:
            f.state, f.data = "unmapped", None   # the pack (or the allocation) is gone
            return
        f.data = data
        explained = bytearray(b == INT3 for b in data)
        if all(explained):
            f.state = "invalidated"
            return
        # code announced since: the chunks were reused (registered is in time order)
        first = bisect.bisect_right(self.recent, f.unloaded, key=lambda reg: reg[0])
        for _t, lo, hi, _read in self.recent[first:]:
            if hi <= f.hdr or lo >= f.hdr + f.size:
                continue
            for i in range(max(lo, f.hdr) - f.hdr, min(hi, f.hdr + f.size) - f.hdr):
                explained[i] = 1
        if all(explained):
            f.state = "reused"
        elif now - f.unloaded > GIVE_UP_NS:
            f.state = "stale"

    def finish(self) -> None:
        """At the end: wait (boundedly) for the pending frees, read /proc/vmallocinfo and
        every pack again."""
        self.poll()
        deadline = _time.monotonic() + FINISH_WAIT_S
        while self.pending and _time.monotonic() < deadline:
            _time.sleep(0.02)
            self._recheck()
        for f in self.pending:
            f.state = "stale" if self.clock() - f.unloaded > GIVE_UP_NS else "pending"
            self._done(f)
        self.pending = []
        self._vmalloc("end")
        if self.memory is not None:
            for start, size, _t in self.packs:
                self._snapshot(start, size, "end")
        self.out.append({"t": "info", "reader": getattr(self.memory, "name", None),
                         "unavailable": self.unavailable, "failures": self.failures,
                         "snapshot_bytes": self.snapshot_bytes})

    # --- the file -----------------------------------------------------------------------
    def add_to(self, entries) -> None:
        """What was decided since the last call, as one Kind.PACKS entry (JSON objects
        whose "t" says which kind each is), into the recording's stream (stream.py)
        or a PrivateSection."""
        if self.out:
            entries.add(Kind.PACKS, encode_packs(self.out))
            self.out = []

    def summary(self) -> dict:
        """For the record summary: packs found, freed ranges watched, their final states."""
        return {"packs": len(self.packs), "freed": sum(self.states.values()),
                "states": dict(self.states)}

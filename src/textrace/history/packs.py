"""bpf_prog_pack over time: which packs a recording's JIT images were placed in, how full
each was when, how fragmented, and whether freed code was really gone.

The kernel's rules (kernel/bpf/core.c, checked on 6.1 and 6.18):
- a pack is one executable vmalloc area of BPF_PROG_PACK_SIZE, handed out in 64-byte chunks
  first-fit from a bitmap (bpf_prog_pack_alloc); 6.18: SZ_2M * num_possible_nodes(); 6.1
  as Debian ships it: 2 MiB too (/proc/vmallocinfo's bpf_prog_pack_alloc area; kernels
  that chose the size at boot used one page where huge vmalloc was missing).  It is filled
  with INT3 when allocated and freed when its last chunk is (bpf_prog_pack_free).  An
  allocation bigger than a pack gets its own area.
- a JIT'd function's allocation starts with struct bpf_binary_header {u32 size; image[]
  aligned 8}, chunk-aligned, and the image the KSYMBOL names starts 8 + 0..55 random bytes
  in (bpf_jit_binary_pack_alloc), so the header is the image's address rounded down to 64;
  BPF trampolines (6.7+) and dispatchers take chunks without a header.
- a freed allocation is overwritten with INT3 before its chunks are cleared, an RCU grace
  period after the unload record.

The packs' extents come from the recorder's probes (recorder/pack_watch.py); without them a pack is
taken to be aligned to its size.  Chunks held at both of the recorder's reads of a pack by
code no KSYMBOL names are counted as foreign (loaded before the recording and never
announced, or the kernel's own).  Times are ns on the recording's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..bpf.pack import CHUNK, INT3, PAGE, allocation_of
from .regions import Region

DEFAULT_PACK_SIZE = 2 << 20
Images = dict[int, list[tuple[int, bytes]]]   # prog id -> its functions' (addr, code)
HEADER_SLACK_NS = 10_000_000
_NEVER = -(1 << 62)
_FOREVER = 1 << 62


@dataclass(frozen=True)
class Allocation:
    """Chunks [start, start + size) taken by one JIT image (or trampoline/dispatcher)."""

    start: int
    size: int
    addr: int            # the image the KSYMBOL names
    len: int
    name: str
    kind: str            # "bpf" or "ool"
    prog_id: int | None
    born: int | None     # None: before the recording
    died: int | None     # None: still there at its end
    size_source: str     # "header" (read from the kernel), "estimate", "ksymbol"

    @property
    def end(self) -> int:
        """First address past the allocation's chunks."""
        return self.start + self.size

    def alive_at(self, t: int) -> bool:
        """Whether the chunks were held at t (ns): from the load up to the unload."""
        return (self.born is None or self.born <= t) and (self.died is None or t < self.died)


@dataclass
class FreedCheck:
    """The recorder's reads of one freed allocation, and the verdict on them."""

    addr: int
    len: int
    name: str
    start: int
    size: int
    unloaded: int
    attempts: int
    first_read: int | None
    last_read: int | None
    state: str           # as recorded: invalidated, reused, unmapped, stale, pending, ...
    data: bytes | None
    verdict: str = ""    # invalidated, reused, unmapped, old code, unaccounted code, unchecked

    @property
    def checked(self) -> bool:
        """Whether the recorder read the freed range and reached a state (invalidated,
        reused, unmapped, stale), rather than never reading it or still waiting."""
        return self.attempts > 0 and self.state in ("invalidated", "reused", "unmapped",
                                                    "stale")

    @property
    def stale(self) -> bool:
        """Whether code outlived the free: the old program's bytes, or code no KSYMBOL
        accounts for, where the kernel should have written INT3."""
        return self.verdict in ("old code", "unaccounted code")


@dataclass
class Pack:
    """One bpf_prog_pack area [start, start + size), found by the recorder's probes
    ("probe") or assumed aligned to its size ("aligned"), and what was placed in it."""

    start: int
    size: int
    source: str                                   # "probe" or "aligned"
    allocations: list[Allocation] = field(default_factory=list)
    foreign: np.ndarray | None = None             # bool per chunk
    unaccounted: list[tuple[int, int]] = field(default_factory=list)  # chunk runs at end
    checks: list[FreedCheck] = field(default_factory=list)

    @property
    def end(self) -> int:
        """First address past the pack."""
        return self.start + self.size

    @property
    def chunks(self) -> int:
        """How many 64-byte chunks the pack hands out (its bitmap's length)."""
        return self.size // CHUNK

    def timeline(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, chunks in use, code bytes in use) after each placement or free, the
        first entry being the state before the first recorded change."""
        base = int(self.foreign.sum()) if self.foreign is not None else 0
        ev = []
        for a in self.allocations:
            ev.append((_NEVER if a.born is None else a.born, a.size // CHUNK, a.len))
            if a.died is not None:
                ev.append((a.died, -(a.size // CHUNK), -a.len))
        ev.sort(key=lambda e: (e[0], e[1] < 0))
        times = np.array([_NEVER] + [e[0] for e in ev], dtype=np.int64)
        chunks = base + np.concatenate([[0], np.cumsum([e[1] for e in ev])]).astype(np.int64)
        code = np.concatenate([[0], np.cumsum([e[2] for e in ev])]).astype(np.int64)
        # changes at one instant collapse to the state after them
        keep = np.concatenate([times[1:] != times[:-1], [True]])
        return times[keep], chunks[keep], code[keep]

    def peak(self) -> tuple[int, int | None]:
        """(chunks in use at the peak, when it was first reached; None = at the start)."""
        times, chunks, _code = self.timeline()
        i = int(np.argmax(chunks))
        return int(chunks[i]), None if times[i] == _NEVER else int(times[i])

    def used_map(self, t: int | None) -> np.ndarray:
        """Chunk in use at time t (None: at the recording's end), as int8: 0 free,
        1 a program's, 2 out-of-line code, 3 foreign."""
        m = np.zeros(self.chunks, dtype=np.int8)
        if self.foreign is not None:
            m[self.foreign] = 3
        for a in self.allocations:
            if (a.died is None) if t is None else a.alive_at(t):
                lo = (a.start - self.start) // CHUNK
                m[lo:lo + a.size // CHUNK] = 1 if a.kind == "bpf" else 2
        return m

    def largest_free_run(self, t: int | None) -> int:
        """The longest run of free chunks at time t, in chunks: the biggest allocation
        first-fit could still place in this pack."""
        free = self.used_map(t) == 0
        if not free.any():
            return 0
        edges = np.diff(np.concatenate([[0], free.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        return int((ends - starts).max())


@dataclass
class Fill:
    """A pack's free chunks at some time: INT3 (the fill at allocation, or the
    invalidation of a freed program).  `since`/`until`: the free interval at the address
    (None: unbounded in the recording); `freed`: the program freed there, and `interval`
    the time in which its INT3 was written (after its unload, by the first read seeing it)."""

    pack: Pack
    start: int
    end: int
    since: int | None
    until: int | None
    freed: Allocation | None = None
    interval: tuple[int, int | None] | None = None


@dataclass
class PackLayout:
    """Every pack of a recording, the images that fit in none, and the recorder's checks of
    freed code: what lets a read of a free chunk return the INT3 the kernel put there."""

    pack_size: int
    pack_size_source: str
    packs: list[Pack]
    too_big: list[Allocation]        # own allocations: bigger than a pack
    outside: list[Allocation]        # images in no known pack (no probe; not aligned)
    checks: list[FreedCheck]
    reader: str | None = None
    vmalloc: list[dict] = field(default_factory=list)

    def pack_of(self, addr: int) -> Pack | None:
        """The pack whose area holds kernel virtual address `addr`, or None."""
        for p in self.packs:
            if p.start <= addr < p.end:
                return p
        return None

    def fill_at(self, addr: int, t: int) -> Fill | None:
        """The INT3 fill at addr at time t, if addr was a free chunk of a pack then."""
        pack = self.pack_of(addr)
        if pack is None:
            return None
        here = [a for a in pack.allocations if a.start <= addr < a.end]
        if any(a.alive_at(t) for a in here):
            return None
        if pack.foreign is not None and pack.foreign[(addr - pack.start) // CHUNK]:
            return None
        before = [a for a in here if a.died is not None and a.died <= t]
        after = [a for a in here if a.born is not None and a.born > t]
        prev = max(before, key=lambda a: a.died, default=None)
        nxt = min(after, key=lambda a: a.born, default=None)
        m = pack.used_map(t)
        k = (addr - pack.start) // CHUNK
        lo = k
        while lo > 0 and m[lo - 1] == 0:
            lo -= 1
        hi = k + 1
        while hi < len(m) and m[hi] == 0:
            hi += 1
        interval = None
        if prev is not None:
            # the recorder's check of it: same image, unregistered (KSYMBOL) within a
            # millisecond of the program's unload (BPF_EVENT) -- the same kernel call
            near = [c for c in self.checks if c.addr == prev.addr
                    and abs(c.unloaded - prev.died) < 1_000_000]
            check = min(near, key=lambda c: abs(c.unloaded - prev.died), default=None)
            # the read that saw it gone is the last one: reads stop there
            by = check.last_read if check is not None and check.verdict in (
                "invalidated", "reused") else None
            interval = (prev.died, by)
        return Fill(pack, pack.start + lo * CHUNK, pack.start + hi * CHUNK,
                    prev.died if prev else None, nxt.born if nxt else None, prev, interval)

    def read_fill(self, addr: int, n: int, t: int) -> bytes | None:
        """INT3 for [addr, addr+n) if every byte was a free pack chunk at t."""
        f = self.fill_at(addr, t)
        if f is None or addr + n > f.end:
            return None
        return bytes([INT3]) * n


def _bits(hexmap: str, n: int) -> np.ndarray:
    raw = np.frombuffer(bytes.fromhex(hexmap), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


def build_layout(regions: list[Region], entries: list[dict],
                 images: Images | Callable[[], Images] | None = None) -> PackLayout:
    """The packs of a recording: `regions` its code regions (history.table.regions),
    `entries` the recorder's Kind.PACKS entries, `images` each captured program's
    functions (prog id -> [(addr, code)]) to tell old code in a freed range, or a function
    giving them, called only when some freed range held neither INT3 nor code placed
    after the free (a loader need not decode thousands of programs for a recording whose
    freed ranges were all invalidated or reused)."""
    probes = [e for e in entries if e["t"] == "pack"]
    headers: dict[int, list[tuple[int, int]]] = {}   # image addr -> [(read time, size)]
    for e in entries:
        if e["t"] == "header":
            headers.setdefault(e["addr"], []).append((e["time"], e["size"]))
    vmalloc = [e for e in entries if e["t"] == "vmalloc"]
    info = next((e for e in entries if e["t"] == "info"), {})
    allocs = []
    for r in regions:
        if r.kind == "bpf":
            hdr, size = allocation_of(r.start, r.end - r.start)
            source = "estimate"
            # the header read while this program lived (a read after its free may be of
            # the next program's); the recorder reads it after the batch with the KSYMBOL,
            # which may end before the BPF_EVENT that dates the load
            got = [n for t, n in sorted(headers.get(r.start, ()), reverse=True)
                   if (r.born is None or t >= r.born - HEADER_SLACK_NS)
                   and (r.died is None or t < r.died) and n >= size - CHUNK]
            if got:
                size, source = got[0], "header"
            allocs.append(Allocation(hdr, size, r.start, r.end - r.start, r.name, "bpf",
                                     r.prog_id, r.born, r.died, source))
        elif r.kind == "ool" and r.name.startswith("bpf_"):
            size = -(-(r.end - r.start) // CHUNK) * CHUNK
            allocs.append(Allocation(r.start, size, r.start, r.end - r.start, r.name, "ool",
                                     None, r.born, r.died, "ksymbol"))
    # the pack size: the smallest area probed holding a small image; else vmallocinfo's
    # smallest bpf_prog_pack_alloc area less its guard page; else 2 MiB
    small = [p["size"] for p in probes
             if any(p["start"] <= a.start < p["start"] + p["size"] and a.size <= PAGE
                    for a in allocs)]
    areas = [a["size"] for v in vmalloc for a in v["areas"]
             if a["caller"].startswith("bpf_prog_pack_alloc")]
    if small:
        pack_size, source = min(small), "probe"
    elif areas:
        pack_size, source = min(areas) - PAGE, "vmallocinfo"
    else:
        pack_size, source = DEFAULT_PACK_SIZE, "default"
    packs: dict[int, Pack] = {}
    for p in probes:
        if p["size"] == pack_size and p["start"] not in packs:
            packs[p["start"]] = Pack(p["start"], p["size"], "probe")
    ordered = sorted(packs.values(), key=lambda p: p.start)
    starts = [p.start for p in ordered]
    too_big, outside = [], []
    import bisect
    for a in allocs:
        if a.size > pack_size:
            too_big.append(a)
            continue
        i = bisect.bisect_right(starts, a.start) - 1
        if i >= 0 and a.start < ordered[i].end:
            ordered[i].allocations.append(a)
        elif a.kind == "bpf" and source != "default":
            # no probe found its pack: packs are aligned to their size where huge pages
            # back them (and one-page packs always are)
            start = a.start & ~(pack_size - 1)
            pack = packs.get(start)
            if pack is None:
                pack = packs[start] = Pack(start, pack_size, "aligned")
                ordered = sorted(packs.values(), key=lambda p: p.start)
                starts = [p.start for p in ordered]
            pack.allocations.append(a)
        else:
            outside.append(a)
    ordered = sorted(packs.values(), key=lambda p: p.start)
    snaps = [e for e in entries if e["t"] == "snapshot"]
    for pack in ordered:
        mine = sorted((s for s in snaps if s["start"] == pack.start and s["size"] == pack.size),
                      key=lambda s: s["time"])
        if len(mine) >= 2:
            covered = np.zeros(pack.chunks, dtype=bool)
            alive_end = np.zeros(pack.chunks, dtype=bool)
            for a in pack.allocations:
                lo = (a.start - pack.start) // CHUNK
                covered[lo:lo + a.size // CHUNK] = True
                if a.died is None:
                    alive_end[lo:lo + a.size // CHUNK] = True
            first, last = _bits(mine[0]["used"], pack.chunks), _bits(mine[-1]["used"],
                                                                      pack.chunks)
            pack.foreign = first & last & ~covered
            extra = last & ~alive_end & ~pack.foreign
            pack.unaccounted = _runs(extra, pack.start)
    by_start = sorted(allocs, key=lambda a: a.start)
    index = ([a.start for a in by_start], by_start,
             max((a.size for a in allocs if a.size <= pack_size), default=0))
    old = _OldCode(images)
    checks = [_check(e, index, old) for e in entries if e["t"] == "freed"]
    for c in checks:
        pack = next((p for p in ordered if p.start <= c.start < p.end), None)
        if pack is not None:
            pack.checks.append(c)
    return PackLayout(pack_size, source, ordered, too_big, outside, checks,
                      info.get("reader"), vmalloc)


class _OldCode:
    """(addr, len) -> the code a captured program had there (the last program's, of those
    that had some), the images read when first asked for."""

    def __init__(self, images: Images | Callable[[], Images] | None):
        self.images = images
        self.table: dict[tuple[int, int], bytes] | None = None

    def get(self, key: tuple[int, int]) -> bytes | None:
        """The code at (addr, len), or None."""
        if self.table is None:
            images = self.images() if callable(self.images) else self.images
            self.table = {}
            for prog_funcs in (images or {}).values():
                for addr, code in prog_funcs:
                    self.table[(addr, len(code))] = code
        return self.table.get(key)


def _runs(mask: np.ndarray, base: int) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return [(base + int(s) * CHUNK, base + int(e) * CHUNK)
            for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


def _check(e: dict, index, images: _OldCode) -> FreedCheck:
    """The verdict on one freed range, with the whole recording known: every byte of the
    last read INT3, or inside an allocation announced after the unload (its chunks were
    handed on), or else stale: the freed program's own bytes (old code) or code no
    KSYMBOL accounts for."""
    data = bytes.fromhex(e["data"]) if e.get("data") else None
    c = FreedCheck(e["addr"], e["len"], e["name"], e["hdr"], e["size"], e["unloaded"],
                   e["attempts"], e.get("first_read"), e.get("last_read"), e["state"], data)
    if not c.attempts:
        c.verdict = "unchecked"
        return c
    if c.state == "unmapped":
        c.verdict = "unmapped"
        return c
    if data is None:
        c.verdict = "unchecked"
        return c
    if data.count(INT3) == len(data):  # the common verdict, without an array per check
        c.verdict = "invalidated"
        return c
    ok = np.frombuffer(data, dtype=np.uint8) == INT3
    import bisect
    starts, by_start, longest = index
    hi = bisect.bisect_left(starts, c.start + len(data))
    lo = bisect.bisect_left(starts, c.start - longest)
    for a in by_start[lo:hi]:
        if a.born is not None and a.born > c.unloaded and c.start < a.end:
            ok[max(a.start, c.start) - c.start:min(a.end, c.start + len(data)) - c.start] = True
    if ok.all():
        c.verdict = "reused"
        return c
    if c.state == "pending":
        c.verdict = "unchecked"   # the recording ended inside the kernel's grace period
        return c
    old = images.get((c.addr, c.len))
    off = c.addr - c.start
    if old is not None and data[off:off + len(old)] == old:
        c.verdict = "old code"
    else:
        c.verdict = "unaccounted code"
    return c

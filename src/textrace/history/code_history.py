"""CodeHistory: the kernel's code as a versioned address space.

Symbols come from two layers: dynamic regions with lifetimes (BPF programs and out-of-line
code announced by KSYMBOL) over the static kernel symbols (kallsyms).  Bytes come from
images, each read at a known time (a captured JIT image, a kernel code snapshot), and are
moved to any other time by replaying the TEXT_POKE records in between: forwards with their
new bytes, backwards with their old bytes.  A TEXT_POKE is itself an image of the bytes it
covers (old just before its time, new from it), so poked kernel text reads without a vmlinux.

A TEXT_POKE's time is not the instant the bytes changed.  x86's INT3 protocol
(arch/x86/kernel/alternative.c, text_poke_bp_batch, since 5.9) writes INT3 over the first
byte, syncs every CPU, writes the tail, emits the record, syncs, writes the first byte and
syncs again; kprobes emit theirs just after (arm) or just before (disarm) their write.  So
near a poke's time the address held the old bytes, INT3 plus a tail, or the new bytes, and
no record says which: `ambiguity()` and `read_exact()` say when a read falls in that window.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..errors import TextraceError
from .kallsyms import KernelSymbols
from .regions import Region, RegionTable

if TYPE_CHECKING:
    from capstone import CsInsn

    from .packs import PackLayout


class UnknownCode(TextraceError):
    """No image covers the bytes asked for at that time."""


# How long before and after its record's time a poke's bytes may be mid-change (ns).  One
# side of the INT3 protocol is two text_poke() calls (each maps the page in the poking mm,
# copies and flushes the local TLB: about 1 us) and one or two text_poke_sync() calls (a
# synchronous IPI to every online CPU, on_each_cpu(do_sync_core): 1-3 us on bare metal with
# tens of CPUs).  That makes ~5 us; doubled for larger machines and virtualized IPIs.  A
# qemu guest without KVM is far slower: pass a larger window there.
INT3_WINDOW_NS = 10_000


@dataclass(frozen=True)
class Poke:
    """Kernel text at `addr` changed from `old` to `new` at `time` (ns; for the INT3
    protocol the kernel stamps the switch to the new bytes)."""

    time: int
    addr: int
    old: bytes
    new: bytes
    # for a change textrace inferred rather than the kernel reported: the interval (ns) it
    # is known to have happened in, which replaces the INT3 window
    window: tuple[int, int] | None = None

    @property
    def end(self) -> int:
        """First kernel virtual address past the bytes, old or new, whichever is longer."""
        return self.addr + max(len(self.old), len(self.new))


@dataclass(frozen=True)
class PokeWindow:
    """When the bytes of `pokes` (one text_poke_bp batch, or one poke) could not be told
    apart: [start, end] in ns.  A batch writes every INT3 before its first record and every
    first byte after its last, so its pokes share one window."""

    start: int
    end: int
    pokes: tuple[Poke, ...]

    def __contains__(self, t: int) -> bool:
        return self.start <= t <= self.end


@dataclass(frozen=True)
class Read:
    """Bytes at [addr, addr + len(data)) at `time` (ns), and the pokes whose INT3 window
    holds that time: when there are any, the address may have held their old bytes, an
    INT3 (0xcc) with either tail, or their new bytes, and `data` is only the best guess
    (the state the records' order gives)."""

    addr: int
    time: int
    data: bytes
    windows: tuple[PokeWindow, ...] = ()

    @property
    def ambiguous(self) -> bool:
        """True when the time falls in some poke's INT3 window: `data` is then a guess."""
        return bool(self.windows)

    @property
    def pokes(self) -> list[Poke]:
        """The pokes of these bytes making the read ambiguous (a batch's others left out)."""
        end = self.addr + len(self.data)
        return [p for w in self.windows for p in w.pokes if p.addr < end and self.addr < p.end]


@dataclass(frozen=True)
class Image:
    """Bytes at [addr, addr + len) as they were at `time` (ns).  None only for static
    kernel text known from before the recording (a vmlinux)."""

    addr: int
    data: bytes
    time: int | None = None
    source: str = ""

    @property
    def end(self) -> int:
        """First kernel virtual address past the image."""
        return self.addr + len(self.data)


@dataclass(frozen=True)
class Symbol:
    """`name`+`offset` for an address at one time; `region` is set for dynamic code (bpf,
    ool), `module` for a module's kallsyms symbol."""

    name: str
    offset: int
    kind: str                 # "bpf", "ool", "kernel", "module"
    region: Region | None = None
    module: str | None = None

    def __str__(self) -> str:
        return f"{self.name}+{self.offset:#x}" if self.offset else self.name


@dataclass
class CodeHistory:
    """Symbols and bytes of kernel code at any time of a recording (ns, the recording's
    clock), so a sample resolves against the code that ran, not the code there now."""

    table: RegionTable
    kernel: KernelSymbols | None = None
    images: list[Image] = field(default_factory=list)
    pokes: list[Poke] = field(default_factory=list)
    # the bpf_prog_pack layout (history/packs.py), when the recording has one: free pack
    # chunks read as the INT3 the kernel filled or invalidated them with
    packs: PackLayout | None = None
    # or a function that builds it, called when pack_layout() is first asked: a loader
    # may leave it unbuilt for views whose reads never fall on a free pack chunk
    packs_later: Callable[[], PackLayout | None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.pokes.sort(key=lambda p: p.time)
        self._poke_times = [p.time for p in self.pokes]
        self._windows: dict[int, tuple[list[PokeWindow], list[int], int, int]] = {}
        self.add_images([])

    def add_images(self, images: list[Image]) -> None:
        """More code images (e.g. captured programs, known once the regions are built)."""
        self.images.extend(images)
        self.images.sort(key=lambda im: im.addr)
        self._image_starts = [im.addr for im in self.images]

    def pack_layout(self) -> PackLayout | None:
        """The pack layout (`packs`), built by `packs_later` the first time it is needed."""
        if self.packs is None and self.packs_later is not None:
            build, self.packs_later = self.packs_later, None
            self.packs = build()
        return self.packs

    # --- symbols ------------------------------------------------------------------------
    def symbol(self, addr: int, t: int) -> Symbol | None:
        """The symbol holding kernel virtual address `addr` at time t (ns): a dynamic
        region alive then, else kallsyms; None when neither knows it."""
        region = self.table.at(addr, t)
        if region is not None:
            return Symbol(region.name, addr - region.start, region.kind, region)
        if self.kernel is not None:
            i = int(self.kernel.lookup(np.array([addr]))[0])
            if i >= 0:
                module = self.kernel.module(i)   # one name decoded, not 200k
                return Symbol(self.kernel.name(i), addr - int(self.kernel.addrs[i]),
                              "module" if module else "kernel", None, module)
        return None

    def symbol_ids(self, addrs: np.ndarray, times: np.ndarray | None) -> np.ndarray:
        """Bulk, the one symbolizer of kernel addresses: per address (at its time, ns) the
        dynamic region alive there, as its index in `table.regions`, else the kallsyms
        symbol, as len(table.regions) + its index in `kernel`; -1 where nothing is known.
        Dynamic regions take precedence over kallsyms.  times None: kallsyms alone (for
        addresses no region ever held)."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        n_regions = len(self.table.regions)
        miss = None
        if times is None or not n_regions:
            ids = np.full(len(addrs), -1, dtype=np.int64)
        else:
            ids = self.table.lookup(addrs, times).astype(np.int64, copy=True)
            miss = np.flatnonzero(ids < 0)
        if self.kernel is not None and len(self.kernel):
            k = self.kernel.lookup(addrs if miss is None else addrs[miss])
            k = np.where(k >= 0, k + n_regions, -1)
            if miss is None:
                ids = k
            else:
                ids[miss] = k
        return ids

    def symbolize(self, addrs: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Bulk: a symbol id per (addr, time) (`symbol_ids`) and the list of names the ids
        index."""
        names = [r.name for r in self.table.regions]
        if self.kernel is not None:
            names = names + self.kernel.names
        return self.symbol_ids(addrs, times), names

    def programs_alive(self, t: int) -> list[Region]:
        """The BPF programs loaded at time t (ns)."""
        return [r for r in self.table.regions if r.kind == "bpf" and r.alive_at(t)]

    def versions(self, addr: int) -> list[Region]:
        """Every region that ever held `addr`, oldest first: an address bpf_prog_pack
        reuses holds several programs over a recording."""
        return self.table.versions(addr)

    # --- bytes --------------------------------------------------------------------------
    def _image_for(self, addr: int, n: int, t: int) -> Image | None:
        """The image covering [addr, addr+n) that describes time t: for dynamic code, one
        read while the region alive at t was alive (an earlier program at the same address
        is other code); for static text, an image not read from a dynamic region."""
        region = self.table.at(addr, t)
        i = bisect.bisect_right(self._image_starts, addr)
        for im in reversed(self.images[:i]):
            if im.end < addr + n:
                continue
            if region is not None:
                if im.time is None or not region.alive_at(im.time):
                    continue
            elif im.time is not None and self.table.at(addr, im.time) is not None:
                continue
            return im
        return None

    def _poke_image(self, addr: int, n: int, t: int) -> Image | None:
        """The bytes a TEXT_POKE carries, as an image of [addr, addr+n): its new bytes from
        its time on (its old bytes just before it, when it removed code), taken from the
        poke nearest to t while the same code (region, or static text) held the address."""
        region = self.table.at(addr, t)
        best: Image | None = None
        best_dt = 0
        for p in self.pokes_at(addr, n):
            if self.table.at(addr, p.time) is not region:
                continue
            if p.addr <= addr and addr + n <= p.addr + len(p.new):
                when, data = p.time, p.new
            elif p.addr <= addr and addr + n <= p.addr + len(p.old):
                when, data = p.time - 1, p.old
            else:
                continue
            if best is None or abs(when - t) < best_dt:
                best, best_dt = Image(p.addr, data, when, "text_poke"), abs(when - t)
        return best

    def read(self, addr: int, n: int, t: int) -> bytes:
        """The n bytes at `addr` as they were at time t (ns): from a captured image, or from
        the TEXT_POKE records themselves, moved to t through the pokes in between.  Near a
        poke the result is the records' order, not necessarily the truth: see read_exact."""
        im = self._image_for(addr, n, t) or self._poke_image(addr, n, t)
        if im is None and self.table.at(addr, t) is None:
            layout = self.pack_layout()
            fill = layout.read_fill(addr, n, t) if layout is not None else None
            if fill is not None:
                return fill
        if im is None:
            raise UnknownCode(f"no code image covers {addr:#x}+{n} at {t}")
        buf = bytearray(im.data[addr - im.addr:addr - im.addr + n])
        if im.time is not None:
            self._replay(buf, addr, im.time, t)
        return bytes(buf)

    def read_exact(self, addr: int, n: int, t: int,
                   window_ns: int = INT3_WINDOW_NS) -> Read:
        """read(), and whether t falls in the INT3 window of a poke touching the bytes."""
        return Read(addr, t, self.read(addr, n, t),
                    tuple(self.ambiguity_windows(addr, n, t, window_ns)))

    # --- the INT3 window ----------------------------------------------------------------
    def poke_windows(self, window_ns: int = INT3_WINDOW_NS) -> list[PokeWindow]:
        """Every poke's window, in the order of the pokes' times.  Pokes emitted back to
        back (each within window_ns of the previous) are taken as one text_poke_bp batch:
        text_mutex serializes all text poking, so no other poke falls between a batch's
        records.  A batch's records are one text_poke() apart (the tail writes), and the
        batch wrote as many INT3s before its first record and as many first bytes after its
        last, so its window is widened by its span on each side."""
        return self._window_table(window_ns)[0]

    def _window_table(self, window_ns: int) -> tuple[list[PokeWindow], list[int], int, int]:
        """(windows, their first records' times, how far any window reaches before and
        after its first record) for one window size."""
        got = self._windows.get(window_ns)
        if got is None:
            windows: list[PokeWindow] = []
            group: list[Poke] = []

            def close() -> None:
                span = group[-1].time - group[0].time
                windows.append(PokeWindow(group[0].time - window_ns - span,
                                          group[-1].time + window_ns + span, tuple(group)))
                group.clear()

            for p in self.pokes:
                if group and p.time - group[-1].time > window_ns:
                    close()
                if p.window is not None:  # inferred: its own interval, no batch
                    if group:
                        close()
                    windows.append(PokeWindow(min(p.window[0], p.time),
                                              max(p.window[1], p.time), (p,)))
                    continue
                group.append(p)
            if group:
                close()
            firsts = [w.pokes[0].time for w in windows]
            before = max((f - w.start for f, w in zip(firsts, windows)), default=0)
            after = max((w.end - f for f, w in zip(firsts, windows)), default=0)
            got = self._windows[window_ns] = (windows, firsts, before, after)
        return got

    def window_of(self, poke: Poke, window_ns: int = INT3_WINDOW_NS) -> PokeWindow:
        """The window of one of this history's pokes."""
        windows, firsts, _, _ = self._window_table(window_ns)
        i = bisect.bisect_right(firsts, poke.time) - 1
        while i >= 0 and poke not in windows[i].pokes and firsts[i] == poke.time:
            i -= 1  # an inferred poke's own window and a batch may start at one time
        if i < 0 or poke not in windows[i].pokes:
            raise ValueError(f"not a poke of this history: {poke}")
        return windows[i]

    def ambiguity_windows(self, addr: int, n: int, t: int,
                          window_ns: int = INT3_WINDOW_NS) -> list[PokeWindow]:
        """The windows holding t (ns) whose pokes touch [addr, addr+n)."""
        windows, firsts, before, after = self._window_table(window_ns)
        lo = bisect.bisect_left(firsts, t - after)
        hi = bisect.bisect_right(firsts, t + before)
        return [w for w in windows[lo:hi]
                if t in w and any(p.addr < addr + n and addr < p.end for p in w.pokes)]

    def ambiguity(self, addr: int, n: int, t: int,
                  window_ns: int = INT3_WINDOW_NS) -> list[Poke]:
        """The pokes touching [addr, addr+n) whose INT3 window holds t (ns): when any are
        returned, a read there at t cannot say whether the old bytes, an INT3 or the new
        bytes were in place.  `window_ns` is how long before and after a record's time the
        protocol may still be under way (INT3_WINDOW_NS); an inferred poke's own `window`
        replaces it."""
        return [p for w in self.ambiguity_windows(addr, n, t, window_ns) for p in w.pokes
                if p.addr < addr + n and addr < p.end]

    def _replay(self, buf: bytearray, addr: int, t_from: int, t_to: int) -> None:
        """Move `buf` (bytes at addr) from time t_from to t_to through the pokes between."""
        end = addr + len(buf)
        if t_to >= t_from:
            lo = bisect.bisect_right(self._poke_times, t_from)
            hi = bisect.bisect_right(self._poke_times, t_to)
            steps = [(p, p.new) for p in self.pokes[lo:hi]]
        else:
            lo = bisect.bisect_right(self._poke_times, t_to)
            hi = bisect.bisect_right(self._poke_times, t_from)
            steps = [(p, p.old) for p in reversed(self.pokes[lo:hi])]
        for p, data in steps:
            if p.addr >= end or p.addr + len(data) <= addr:
                continue
            for k, b in enumerate(data):
                j = p.addr + k - addr
                if 0 <= j < len(buf):
                    buf[j] = b

    def pokes_at(self, addr: int, n: int = 1) -> list[Poke]:
        """Every poke touching [addr, addr+n), at any time, in time order."""
        return [p for p in self.pokes if p.addr < addr + n and addr < p.end]

    def at(self, t: int, window_ns: int = INT3_WINDOW_NS) -> CodeView:
        """The address space at time t (ns); `window_ns` is the INT3 window its reads use."""
        return CodeView(self, t, window_ns)


@dataclass(frozen=True)
class CodeView:
    """The address space frozen at one time: what a decoder needs for one sample."""

    history: CodeHistory
    time: int
    window_ns: int = INT3_WINDOW_NS

    def symbol(self, addr: int) -> Symbol | None:
        """CodeHistory.symbol at this time."""
        return self.history.symbol(addr, self.time)

    def read(self, addr: int, n: int) -> bytes:
        """CodeHistory.read at this time; raises UnknownCode when no image covers it."""
        return self.history.read(addr, n, self.time)

    def read_exact(self, addr: int, n: int) -> Read:
        """read(), flagged when this time falls in a poke's INT3 window."""
        return self.history.read_exact(addr, n, self.time, self.window_ns)

    def ambiguity(self, addr: int, n: int) -> list[Poke]:
        """CodeHistory.ambiguity at this time, with this view's INT3 window."""
        return self.history.ambiguity(addr, n, self.time, self.window_ns)

    def disassemble(self, addr: int, n: int) -> list[CsInsn]:
        """x86-64 instructions in [addr, addr+n) at this time, as capstone decodes them."""
        from .x86 import x86_64
        return list(x86_64().disasm(self.read(addr, n), addr))

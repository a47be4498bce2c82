"""CodeHistory: the kernel's code as a versioned address space.

Symbols come from two layers: dynamic regions with lifetimes (BPF programs and out-of-line
code announced by KSYMBOL) over the static kernel symbols (kallsyms).  Bytes come from
images, each read at a known time (a captured JIT image, a kernel code snapshot), and are
moved to any other time by replaying the TEXT_POKE records in between: forwards with their
new bytes, backwards with their old bytes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from ..errors import TextraceError
from .kallsyms import KernelSymbols
from .regions import Region, RegionTable


class UnknownCode(TextraceError):
    """No image covers the bytes asked for at that time."""


@dataclass(frozen=True)
class Poke:
    """Kernel text at `addr` changed from `old` to `new` at `time` (ns; for the INT3
    protocol the kernel stamps the switch to the new bytes)."""

    time: int
    addr: int
    old: bytes
    new: bytes

    @property
    def end(self) -> int:
        return self.addr + max(len(self.old), len(self.new))


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
        return self.addr + len(self.data)


@dataclass(frozen=True)
class Symbol:
    name: str
    offset: int
    kind: str                 # "bpf", "ool", "kernel", "module"
    region: Region | None = None
    module: str | None = None

    def __str__(self) -> str:
        return f"{self.name}+{self.offset:#x}" if self.offset else self.name


@dataclass
class CodeHistory:
    table: RegionTable
    kernel: KernelSymbols | None = None
    images: list[Image] = field(default_factory=list)
    pokes: list[Poke] = field(default_factory=list)

    def __post_init__(self):
        self.pokes.sort(key=lambda p: p.time)
        self._poke_times = [p.time for p in self.pokes]
        self.add_images([])

    def add_images(self, images: list[Image]) -> None:
        """More code images (e.g. captured programs, known once the regions are built)."""
        self.images.extend(images)
        self.images.sort(key=lambda im: im.addr)
        self._image_starts = [im.addr for im in self.images]

    # --- symbols ------------------------------------------------------------------------
    def symbol(self, addr: int, t: int) -> Symbol | None:
        region = self.table.at(addr, t)
        if region is not None:
            return Symbol(region.name, addr - region.start, region.kind, region)
        if self.kernel is not None:
            i = int(self.kernel.lookup(np.array([addr]))[0])
            if i >= 0:
                module = self.kernel.modules[i]
                return Symbol(self.kernel.names[i], addr - int(self.kernel.addrs[i]),
                              "module" if module else "kernel", None, module)
        return None

    def symbolize(self, addrs: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Bulk: a symbol id per (addr, time) and the list of names the ids index; -1 where
        nothing is known.  Dynamic regions take precedence over kallsyms."""
        dyn = self.table.lookup(addrs, times)
        names = [r.name for r in self.table.regions]
        ids = dyn.copy()
        if self.kernel is not None:
            miss = dyn < 0
            k = self.kernel.lookup(np.asarray(addrs, dtype=np.uint64)[miss])
            ids[miss] = np.where(k >= 0, k + len(names), -1)
            names = names + self.kernel.names
        return ids, names

    def programs_alive(self, t: int) -> list[Region]:
        return [r for r in self.table.regions if r.kind == "bpf" and r.alive_at(t)]

    def versions(self, addr: int) -> list[Region]:
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

    def read(self, addr: int, n: int, t: int) -> bytes:
        """The n bytes at `addr` as they were at time t (ns)."""
        im = self._image_for(addr, n, t)
        if im is None:
            raise UnknownCode(f"no code image covers {addr:#x}+{n} at {t}")
        buf = bytearray(im.data[addr - im.addr:addr - im.addr + n])
        if im.time is not None:
            self._replay(buf, addr, im.time, t)
        return bytes(buf)

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
        return [p for p in self.pokes if p.addr < addr + n and addr < p.end]

    def at(self, t: int) -> "CodeView":
        return CodeView(self, t)


@dataclass(frozen=True)
class CodeView:
    """The address space frozen at one time: what a decoder needs for one sample."""

    history: CodeHistory
    time: int

    def symbol(self, addr: int) -> Symbol | None:
        return self.history.symbol(addr, self.time)

    def read(self, addr: int, n: int) -> bytes:
        return self.history.read(addr, n, self.time)

    def disassemble(self, addr: int, n: int):
        """x86-64 instructions in [addr, addr+n) at this time, as capstone decodes them."""
        import capstone
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        md.detail = True  # instruction groups (call, jump) for the views
        return list(md.disasm(self.read(addr, n), addr))

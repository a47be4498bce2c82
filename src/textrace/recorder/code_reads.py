"""Kernel code read while recording: what no record carries.

Each read of kernel memory (sources/kernel_memory.py) is an image {addr, time, bytes} kept
in textrace's section (KERNEL_CODE).  Reads are bounded in total (`budget`); refused and
failed reads are counted with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import TextraceError
from ..perf.private import Kind, PrivateSection, pack_kernel_code
from ..sources.kernel_memory import MAX_READ, KernelMemory

MAX_FUNCTION = 64 << 10       # a kernel function longer than this is read in part
DEFAULT_BUDGET = 64 << 20     # bytes of kernel code one recording keeps at most


@dataclass
class CodeReads:
    """The kernel code one recording read: images in read order, bounded by `budget`
    bytes, each read failure counted by its reason."""

    memory: KernelMemory | None
    unavailable: str | None          # why there is no memory to read, when there is none
    clock: Callable[[], int]
    budget: int = DEFAULT_BUDGET
    images: list[tuple[int, int, bytes]] = field(default_factory=list)  # addr, time, data
    sink: Callable[[int, int, bytes], None] | None = None  # takes each image instead
    n_images: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    done: set[tuple[int, int]] = field(default_factory=set)
    used: int = 0

    def read(self, addr: int, n: int) -> bytes | None:
        """Read [addr, addr+n) now; None (and counted) if it could not be read."""
        if (addr, n) in self.done:
            return None
        self.done.add((addr, n))
        if self.memory is None:
            return self.fail(self.unavailable or "no way to read kernel memory")
        if self.used + n > self.budget:
            return self.fail(f"over the budget of {self.budget} bytes")
        try:
            data = self.memory.read(addr, n)
        except (OSError, TextraceError) as e:
            return self.fail(f"unreadable ({e.strerror if isinstance(e, OSError) else e})")
        if self.sink is not None:  # the recorder streams it and keeps nothing
            self.sink(addr, self.clock(), data)
        else:
            self.images.append((addr, self.clock(), data))
        self.n_images += 1
        self.used += n
        return data

    def fail(self, reason: str) -> None:
        """Count one failed read under `reason`; returns None for read() to pass on."""
        self.failures[reason] = self.failures.get(reason, 0) + 1
        return None

    def add_to(self, private: PrivateSection) -> None:
        """The images kept (not those given to `sink`) as KERNEL_CODE entries."""
        for addr, time, data in self.images:
            private.add(Kind.KERNEL_CODE, pack_kernel_code(addr, time, data))

    def summary(self) -> dict:
        """For the record summary: the memory read, images and bytes kept, failures by reason."""
        return {"source": self.memory.name if self.memory else None,
                "images": self.n_images, "bytes": self.used,
                "failures": dict(self.failures)}


def function_extent(kernel, addr: int) -> tuple[int, int] | None:
    """[start, end) of the kernel function holding addr, per kallsyms (its extent runs to
    the next symbol, at most MAX_FUNCTION bytes); None outside every symbol."""
    i = int(kernel.lookup([addr])[0])
    if i < 0:
        return None
    start = int(kernel.addrs[i])
    end = int(kernel.addrs[i + 1]) if i + 1 < len(kernel.addrs) else start + MAX_FUNCTION
    end = min(end, start + MAX_FUNCTION)
    if addr >= end:
        return None
    return start, end


def read_kernel_text(code: CodeReads, text_bounds: tuple[int, int] | None) -> None:
    """All of _text.._etext now, in MAX_READ pieces: the base for every address."""
    if text_bounds is None:
        code.fail("kallsyms has no _text/_etext")
        return
    text, etext = text_bounds
    for addr in range(text, etext, MAX_READ):
        code.read(addr, min(MAX_READ, etext - addr))


def read_kernel_functions(code: CodeReads, kallsyms: str, addrs: set[int]) -> None:
    """The kernel functions holding `addrs` (poked or sampled), as they are now: the base
    the code history replays TEXT_POKE records back from."""
    if not addrs or code.memory is None:
        return
    from ..history.kallsyms import KernelSymbols
    kernel = KernelSymbols.parse(kallsyms)
    extents = {function_extent(kernel, a) for a in sorted(addrs)}
    for start, end in sorted(e for e in extents if e):
        code.read(start, end - start)

"""Kernel code read while recording: what no record carries.

perf.data gets the bytes of BPF programs (HEADER_BPF_PROG_INFO) but not the bytes of kernel
text, nor of out-of-line code the kernel generates (BPF trampolines and dispatchers, ftrace
and kprobe trampolines).  A decoder needs them, and the code history needs a base to replay
TEXT_POKE records from.  The recorder reads them through a KernelMemory:

- `Kcore`: /proc/kcore, an ELF core file of kernel memory, where the kernel has it;
- the capture program's on-demand reads (bpf/capture), where it does not (this host).

Each read is an image {addr, time, bytes} kept in textrace's section (KERNEL_CODE).  Reads
are bounded in total (`budget`); refused and failed reads are counted with their reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .errors import KernelError, TextraceError
from .perf.private import Kind, PrivateSection, pack_kernel_code

KCORE = "/proc/kcore"
MAX_FUNCTION = 64 << 10       # a kernel function longer than this is read in part
MAX_READ = 1 << 20            # bytes per read (the capture program's bound)
DEFAULT_BUDGET = 64 << 20     # bytes of kernel code one recording keeps at most


class KernelMemory(Protocol):
    """A way to read kernel memory; `name` says which in the recording's summary."""

    name: str

    def read(self, addr: int, n: int) -> bytes:
        """The n bytes at kernel virtual address `addr` now; raises on failure."""
        ...


class Kcore:
    """Kernel memory through /proc/kcore: its PT_LOAD segments (read with pyelftools) map
    virtual addresses to file offsets."""

    name = "kcore"

    def __init__(self, path: str = KCORE):
        self.path = path
        self.file = open(path, "rb")  # first: where it fails, nothing else is needed
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        try:
            elf = ELFFile(self.file)
            self.segments = [(seg["p_vaddr"], seg["p_vaddr"] + seg["p_filesz"],
                              seg["p_offset"]) for seg in elf.iter_segments()
                             if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]]
        except ELFError as e:
            self.file.close()
            raise KernelError(f"not an ELF core file: {e}", file=path, offset=0,
                              field="e_ident") from None
        except BaseException:
            self.file.close()
            raise
        self.fd = self.file.fileno()

    def read(self, addr: int, n: int) -> bytes:
        """Bytes at a kernel virtual address; KernelError unless one PT_LOAD segment holds
        them all (kcore leaves holes where nothing is mapped)."""
        for start, end, off in self.segments:
            if start <= addr and addr + n <= end:
                data = os.pread(self.fd, n, off + addr - start)
                if len(data) == n:
                    return data
                break
        raise KernelError(f"kernel code at {addr:#x}+{n} is not in any kcore segment",
                          file=self.path, field="kcore")

    def close(self) -> None:
        """Close /proc/kcore."""
        self.file.close()


class CaptureMemory:
    """Kernel memory read by the capture program (bpf/capture) at the recorder's request."""

    name = "capture program"

    def __init__(self, capture):
        self.capture = capture

    def read(self, addr: int, n: int) -> bytes:
        """Bytes at a kernel virtual address, read in the kernel by the capture program
        into its ring; KernelError if it could not."""
        return self.capture.read_code(addr, n)[1]


def open_kernel_memory(capture=None) -> tuple[KernelMemory | None, str | None]:
    """The best way to read kernel code here, or None and why there is none."""
    try:
        return Kcore(), None
    except (OSError, TextraceError) as e:
        why = e.strerror if isinstance(e, OSError) else str(e)
    if capture is not None:
        return CaptureMemory(capture), None
    return None, f"no way to read kernel memory (/proc/kcore: {why}; no capture program)"


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

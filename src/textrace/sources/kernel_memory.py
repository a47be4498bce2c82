"""Kernel memory as a source: the bytes at a kernel virtual address, now.

perf.data gets the bytes of BPF programs (HEADER_BPF_PROG_INFO) but not the bytes of kernel
text, nor of out-of-line code the kernel generates (BPF trampolines and dispatchers, ftrace
and kprobe trampolines).  A decoder needs them, and the code history needs a base to replay
TEXT_POKE records from.  The recorder reads them (recorder/code_reads.py, within a budget)
through a KernelMemory:

- `Kcore`: /proc/kcore, an ELF core file of kernel memory, where the kernel has it;
- the capture program's on-demand reads (bpf/capture), where it does not (this host).
"""

from __future__ import annotations

import os
from typing import Protocol

from ..errors import KernelError, TextraceError

KCORE = "/proc/kcore"
MAX_READ = 1 << 20            # bytes per read (the capture program's bound)


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

"""bpf_prog_pack's geometry (kernel/bpf/core.c, x86 JIT; the same on 6.1 and 6.18), declared
once for the recorder (recorder/pack_watch.py) and the history (history/packs.py)."""

from __future__ import annotations

CHUNK = 64      # BPF_PROG_CHUNK_SIZE: the unit bpf_prog_pack_alloc hands out, first-fit
HEADER = 8      # struct bpf_binary_header { u32 size; u8 image[] __aligned(8); }
INT3 = 0xCC     # what packs are filled with and freed chunks overwritten with (x86)
PAGE = 4096


def allocation_of(addr: int, length: int) -> tuple[int, int]:
    """(header address, estimated allocation size) of a JIT image at addr of length bytes:
    bpf_jit_binary_pack_alloc puts the image 8 + a random 0..55 bytes into a chunk-aligned
    allocation of round_up(proglen + 8 + 16, 64) bytes (proglen: the image rounded to 4 for
    the x86 exception table, plus the table, which the KSYMBOL does not count: the header's
    size, read while the program lives, is exact)."""
    hdr = addr & ~(CHUNK - 1)
    size = -(-(((length + 3) & ~3) + HEADER + 16) // CHUNK) * CHUNK
    end = -(-(addr + length - hdr) // CHUNK) * CHUNK
    return hdr, max(size, end)

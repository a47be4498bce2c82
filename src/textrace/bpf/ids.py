"""A set of BPF object ids as the kernel hands them out: ascending (kernel/bpf/syscall.c,
idr_alloc_cyclic), so a bitmap from the first id seen holds them in a bit each."""

from __future__ import annotations


class IdSet:
    """A set of u32 ids as bits from the first id added (new ids are larger); ids below it
    go in a plain set."""

    def __init__(self):
        self.base: int | None = None
        self.bits = bytearray()
        self.low: set[int] = set()

    def __contains__(self, i: int) -> bool:
        if self.base is None:
            return False
        if i < self.base:
            return i in self.low
        k = i - self.base
        return k >> 3 < len(self.bits) and bool(self.bits[k >> 3] >> (k & 7) & 1)

    def add(self, i: int) -> None:
        """Set id i; the bitmap grows by half its size at least (ids come in ascending)."""
        if self.base is None:
            self.base = i
        if i < self.base:
            self.low.add(i)
            return
        k = i - self.base
        if k >> 3 >= len(self.bits):
            self.bits.extend(bytes(max((k >> 3) + 1 - len(self.bits), len(self.bits) // 2)))
        self.bits[k >> 3] |= 1 << (k & 7)

    def discard(self, i: int) -> None:
        """Clear id i if it is set."""
        if i in self:
            if i < self.base:
                self.low.discard(i)
            else:
                k = i - self.base
                self.bits[k >> 3] &= ~(1 << (k & 7)) & 0xFF

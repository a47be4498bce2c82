"""JIT images up to placement: a position-independent form, and each load's exact bytes.

The x86-64 JIT (arch/x86/net/bpf_jit_comp.c) reaches kernel text and its own subprograms
with rel32 calls and jumps (helpers, the return thunk, bpf-to-bpf calls, direct tail
calls), so the same program loaded twice differs in exactly those four-byte fields: each
load sits somewhere else in bpf_prog_pack.  Those fields are zeroed in the stored form and
listed as relocations whose target is either an absolute kernel address or (function,
offset) inside the program itself; `rebuild` re-encodes them for a load's addresses.  A
relocation is only taken where the rebuilt bytes give the capture back exactly
(`normalize` checks it), so anything else the JIT placed in an image (a movabs of a map
address) stays literal and makes a different image.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..history.x86 import x86_64

_REL32 = struct.Struct("<i")
RELOC = struct.Struct("<HIbq")   # function, offset of the rel32 field, kind, value
KIND_KERNEL = 0                  # value: absolute target address
KIND_FUNC = 1                    # value: function index << 32 | offset in that function


@dataclass(frozen=True)
class Normalized:
    """One program's JIT functions up to placement: `code` per function with every
    relocated rel32 zeroed, and `relocs` (function, field offset, kind, value)."""

    code: tuple[bytes, ...]
    relocs: tuple[tuple[int, int, int, int], ...]

    def pack_relocs(self) -> bytes:
        """`relocs` as RELOC records, the form the store keeps."""
        return b"".join(RELOC.pack(*r) for r in self.relocs)

    @staticmethod
    def unpack_relocs(blob: bytes) -> tuple[tuple[int, int, int, int], ...]:
        """pack_relocs' RELOC records back to tuples."""
        return tuple(RELOC.iter_unpack(blob))

    def digest(self) -> bytes:
        """SHA-256 of the code (length-prefixed per function) and the relocations: equal
        for two loads of a program wherever the kernel placed them."""
        h = hashlib.sha256()
        for c in self.code:
            h.update(struct.pack("<I", len(c)) + c)
        h.update(self.pack_relocs())
        return h.digest()




def _rel32_fields(code: bytes):
    """(field offset, instruction end) of every call/jmp/jcc rel32 in a JIT image."""
    for off, size, _mnem, _ops in x86_64().disasm_lite(code, 0):
        op = code[off]
        if op in (0xE8, 0xE9) and size == 5:
            yield off + 1, off + 5
        elif op == 0x0F and size == 6 and 0x80 <= code[off + 1] <= 0x8F:
            yield off + 2, off + 6


def normalize(funcs: list[tuple[int, bytes]]) -> Normalized:
    """funcs: (JIT address, bytes) of each function, main program first."""
    spans = [(addr, addr + len(code)) for addr, code in funcs]
    out_code, relocs = [], []
    for k, (addr, code) in enumerate(funcs):
        buf = bytearray(code)
        for field, end in _rel32_fields(code):
            target = addr + end + _REL32.unpack_from(code, field)[0]
            if addr <= target < addr + len(code):
                continue  # inside the function: position-independent already
            for j, (lo, hi) in enumerate(spans):
                if j != k and lo <= target < hi:
                    relocs.append((k, field, KIND_FUNC, j << 32 | (target - lo)))
                    break
            else:
                relocs.append((k, field, KIND_KERNEL, target - (1 << 64)
                               if target >= 1 << 63 else target))
            buf[field:field + 4] = b"\0\0\0\0"
        out_code.append(bytes(buf))
    return Normalized(tuple(out_code), tuple(relocs))


def rebuild(norm: Normalized, addrs: list[int]) -> list[bytes]:
    """Each function's exact bytes with the functions placed at `addrs`."""
    bufs = [bytearray(c) for c in norm.code]
    for k, field, kind, value in norm.relocs:
        if kind == KIND_KERNEL:
            target = value & ((1 << 64) - 1)
        else:
            target = addrs[value >> 32] + (value & 0xFFFFFFFF)
        rel = target - (addrs[k] + field + 4)
        _REL32.pack_into(bufs[k], field, rel)
    return [bytes(b) for b in bufs]


def normalize_checked(funcs: list[tuple[int, bytes]]) -> Normalized:
    """normalize(), falling back to the literal bytes (no relocations) if the rebuilt
    image is not the capture: stored content must give back what the kernel had."""
    norm = normalize(funcs)
    if rebuild(norm, [a for a, _ in funcs]) != [c for _, c in funcs]:
        return Normalized(tuple(c for _, c in funcs), ())
    return norm

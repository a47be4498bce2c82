"""BPF instructions: struct bpf_insn decoded, and rendered through capstone's BPF mode.

An instruction is 8 bytes: u8 code, u8 dst_reg:4 (low nibble) src_reg:4, s16 off,
s32 imm.  BPF_LD|BPF_IMM|BPF_DW (ld_imm64) takes two slots, the second carrying the upper
32 bits of the constant; instruction indexes (line_info's insn_off, func_info's insn_off,
jump offsets) count slots, so the second slot has an index but no Insn of its own.

Capstone 5 (CS_MODE_BPF_EXTENDED) predates several instruction forms the kernel accepts
since 6.6 (JMP32 class, sign-extending loads and moves, sdiv/smod, bswap) and prints
every atomic as xadd; those instructions, and jumps with negative offsets, which
capstone prints as unsigned, are rendered here in the same style instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from ..errors import FormatError

INSN = struct.Struct("<BBhi")  # code, dst_reg:4 | src_reg:4 << 4, off, imm
INSN_SIZE = INSN.size

# instruction classes (code & 0x07)
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = range(8)
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MEMSX, BPF_ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
BPF_DW = 0x18
LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW  # 0x18
BPF_CALL, BPF_EXIT, BPF_JA = 0x80, 0x90, 0x00
BPF_X = 0x08
# src_reg of BPF_CALL: 0 helper (imm = helper id), 1 bpf-to-bpf call, 2 kfunc (imm = BTF id)
BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL = 1, 2
# src_reg of ld_imm64 (include/uapi/linux/bpf.h)
PSEUDO_LD = {1: "map_fd", 2: "map_value", 3: "btf_id", 4: "func", 5: "map_idx",
             6: "map_idx_value"}

_SIZE_SUFFIX = {0x00: "w", 0x08: "h", 0x10: "b", 0x18: "dw"}
_JMP_OPS = {0x00: "jmp", 0x10: "jeq", 0x20: "jgt", 0x30: "jge", 0x40: "jset", 0x50: "jne",
            0x60: "jsgt", 0x70: "jsge", 0xA0: "jlt", 0xB0: "jle", 0xC0: "jslt", 0xD0: "jsle"}
_ATOMIC_OPS = {0x00: "add", 0x40: "or", 0x50: "and", 0xA0: "xor"}
BPF_FETCH, BPF_XCHG, BPF_CMPXCHG = 0x01, 0xE1, 0xF1
BPF_TAIL_CALL = 0xF0      # the verifier rewrites bpf_tail_call into BPF_JMP | BPF_TAIL_CALL
BPF_FUNC_TAIL_CALL = 12


@dataclass(frozen=True)
class Insn:
    """One instruction.  `index` is its slot in the program; `imm64` is the 64-bit
    constant of an ld_imm64 (unsigned, both halves), else None."""

    index: int
    code: int
    dst: int
    src: int
    off: int
    imm: int
    imm64: int | None = None

    @property
    def cls(self) -> int:
        """The instruction class, the opcode's low 3 bits (BPF_LD .. BPF_ALU64)."""
        return self.code & 0x07

    @property
    def size(self) -> int:
        """Bytes taken: 16 for ld_imm64, else 8."""
        return 16 if self.imm64 is not None else INSN_SIZE

    @property
    def slots(self) -> int:
        """8-byte instruction slots taken: 2 for ld_imm64, which xlated indices count."""
        return self.size // INSN_SIZE

    def pack(self) -> bytes:
        """struct bpf_insn bytes (both halves for ld_imm64)."""
        first = INSN.pack(self.code, self.src << 4 | self.dst, self.off, self.imm)
        if self.imm64 is None:
            return first
        return first + INSN.pack(0, 0, 0, _s32(self.imm64 >> 32))

    @property
    def is_call(self) -> bool:
        """BPF_JMP|BPF_CALL: a helper, kfunc or bpf-to-bpf call (`src` says which)."""
        return self.cls == BPF_JMP and self.code & 0xF0 == BPF_CALL

    @property
    def is_exit(self) -> bool:
        """BPF_JMP|BPF_EXIT."""
        return self.cls == BPF_JMP and self.code & 0xF0 == BPF_EXIT

    @property
    def is_tail_call(self) -> bool:
        """The kernel holds a tail call as BPF_JMP|BPF_TAIL_CALL (what the capture program
        copies); its xlated dump to user space shows it back as a call to helper 12."""
        return self.code == (BPF_JMP | BPF_TAIL_CALL) or (
            self.is_call and self.src == 0 and self.imm == BPF_FUNC_TAIL_CALL)

    def call_target(self, *, xlated: bool = True) -> int | None:
        """Index of the subprogram a bpf-to-bpf call enters.  Before loading, imm is the
        relative target; in the kernel's xlated dump imm is the subprogram's number and off
        the relative target (kernel/bpf/verifier.c, jit_subprogs)."""
        if not (self.is_call and self.src == BPF_PSEUDO_CALL):
            return None
        return self.index + (self.off if xlated else self.imm) + 1

    def jump_target(self) -> int | None:
        """Index a jump lands on (JMP/JMP32 classes other than call and exit)."""
        if self.cls not in (BPF_JMP, BPF_JMP32) or self.is_call or self.is_exit:
            return None
        if self.cls == BPF_JMP32 and self.code & 0xF0 == BPF_JA:
            return self.index + self.imm + 1  # gotol: 32-bit offset in imm
        return self.index + self.off + 1


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def decode(buf, *, base_index: int = 0, file: str | None = None,
           offset: int = 0) -> list[Insn]:
    """Every instruction of `buf` (xlated_prog_insns, or a program before loading)."""
    if len(buf) % INSN_SIZE:
        raise FormatError(f"{len(buf)} bytes is not a whole number of 8-byte instructions",
                          file=file, offset=offset, field="bpf_insn")
    out = []
    n = len(buf) // INSN_SIZE
    k = 0
    while k < n:
        code, regs, off, imm = INSN.unpack_from(buf, k * INSN_SIZE)
        imm64 = None
        if code == LD_IMM64:
            if k + 1 >= n:
                raise FormatError("ld_imm64 is missing its second half", file=file,
                                  offset=offset + k * INSN_SIZE, field="bpf_insn.code")
            hi = INSN.unpack_from(buf, (k + 1) * INSN_SIZE)[3]
            imm64 = (imm & 0xFFFFFFFF) | (hi & 0xFFFFFFFF) << 32
        out.append(Insn(base_index + k, code, regs & 0x0F, regs >> 4, off, imm, imm64))
        k += 2 if imm64 is not None else 1
    return out


@lru_cache(maxsize=1)
def _capstone():
    import capstone
    return capstone.Cs(capstone.CS_ARCH_BPF, capstone.CS_MODE_BPF_EXTENDED)


def render(insn: Insn) -> str:
    """The instruction as text: capstone's "mnemonic operands", or the same style from
    here for the forms capstone 5 does not know or prints wrongly."""
    own = _own_text(insn)
    if own is not None:
        return own
    got = list(_capstone().disasm(insn.pack(), insn.index * INSN_SIZE, 1))
    if not got:
        return _raw_text(insn)
    text = f"{got[0].mnemonic} {got[0].op_str}".strip()
    # capstone prints off and imm as unsigned; the kernel's are signed
    if insn.off < 0 and insn.cls in (BPF_LDX, BPF_ST, BPF_STX):
        text = text.replace(f"+{insn.off & 0xFFFF:#x}]", f"-{-insn.off:#x}]")
    # (in ALU classes BPF_X says the source is a register; in BPF_ST that bit is size)
    if insn.imm < 0 and insn.imm64 is None and (
            insn.cls == BPF_ST or insn.cls in (BPF_ALU, BPF_ALU64) and not insn.code & BPF_X):
        text = text.replace(f"{insn.imm & 0xFFFFFFFF:#x}", f"-{-insn.imm:#x}")
    return text + _comment(insn)


def disassemble(insns: list[Insn]) -> list[tuple[Insn, str]]:
    """Each instruction with its text (render())."""
    return [(i, render(i)) for i in insns]


def _comment(insn: Insn) -> str:
    if insn.is_call and insn.src == BPF_PSEUDO_CALL:
        return f"  ; subprog at insn {insn.call_target()}"
    if insn.is_call and insn.src == BPF_PSEUDO_KFUNC_CALL:
        return f"  ; kfunc btf_id {insn.imm}"
    if insn.imm64 is not None and insn.src in PSEUDO_LD:
        return f"  ; {PSEUDO_LD[insn.src]}"
    return ""


def _rel(v: int) -> str:
    return f"+{v:#x}" if v >= 0 else f"-{-v:#x}"


def _src(insn: Insn) -> str:
    return f"r{insn.src}" if insn.code & BPF_X else f"{insn.imm:#x}" if insn.imm >= 0 \
        else f"-{-insn.imm:#x}"


def _mem(reg: int, off: int) -> str:
    return f"[r{reg}{_rel(off)}]" if off else f"[r{reg}]"


def _own_text(insn: Insn) -> str | None:
    """Text for what capstone 5 cannot be trusted with; None for the rest."""
    cls, op = insn.cls, insn.code & 0xF0
    if cls in (BPF_JMP, BPF_JMP32) and not insn.is_call and not insn.is_exit:
        if cls == BPF_JMP32 and op == BPF_JA:
            return f"gotol {_rel(insn.imm)}"
        if cls == BPF_JMP and insn.off >= 0:
            return None
        name = _JMP_OPS.get(op)
        if name is None:
            return _raw_text(insn)
        if op == BPF_JA:
            return f"{name} {_rel(insn.off)}"
        return f"{name}{'32' if cls == BPF_JMP32 else ''} r{insn.dst}, {_src(insn)}, " \
               f"{_rel(insn.off)}"
    if cls in (BPF_ALU, BPF_ALU64):
        suffix = "64" if cls == BPF_ALU64 else ""
        if op in (0x30, 0x90) and insn.off == 1:  # BPF_DIV / BPF_MOD with off 1: signed
            return f"{'sdiv' if op == 0x30 else 'smod'}{suffix} r{insn.dst}, {_src(insn)}"
        if op == 0xB0 and insn.off in (8, 16, 32):  # BPF_MOV with off: sign-extending
            return f"movsx{suffix} r{insn.dst}, (s{insn.off})r{insn.src}"
        if op == 0xD0 and cls == BPF_ALU64:  # BPF_END in ALU64: unconditional byte swap
            return f"bswap{insn.imm} r{insn.dst}"
        if insn.off:
            return _raw_text(insn)
        return None
    if cls == BPF_LDX and insn.code & 0xE0 == BPF_MEMSX:
        return f"ldxs{_SIZE_SUFFIX[insn.code & 0x18]} r{insn.dst}, {_mem(insn.src, insn.off)}"
    if cls == BPF_STX and insn.code & 0xE0 == BPF_ATOMIC:
        size = _SIZE_SUFFIX[insn.code & 0x18]
        width = "64" if size == "dw" else "32" if size == "w" else None
        if width is None:
            return _raw_text(insn)
        mem = _mem(insn.dst, insn.off)
        if insn.imm == BPF_XCHG:
            return f"xchg{width} {mem}, r{insn.src}"
        if insn.imm == BPF_CMPXCHG:
            return f"cmpxchg{width} {mem}, r{insn.src}"
        name = _ATOMIC_OPS.get(insn.imm & ~BPF_FETCH)
        if name is None:
            return _raw_text(insn)
        if insn.imm == 0x00 and insn.off >= 0:
            return None  # plain atomic add: capstone's xadd is right
        fetch = "fetch_" if insn.imm & BPF_FETCH else ""
        return f"atomic_{fetch}{name}{width} {mem}, r{insn.src}"
    return None


def _raw_text(insn: Insn) -> str:
    return (f".insn code={insn.code:#04x} dst=r{insn.dst} src=r{insn.src} off={insn.off} "
            f"imm={insn.imm}")

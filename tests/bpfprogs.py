"""Real BPF programs for tests, loaded with the bpf syscall from raw instructions."""

from __future__ import annotations

import struct

from textrace.bpf.syscall import prog_load


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, src << 4 | dst, off, imm)


EXIT = insn(0x95)


def mov_r0(value: int) -> bytes:
    return insn(0xb7, imm=value)


def call_pseudo(rel: int) -> bytes:
    """A bpf-to-bpf call to the instruction rel+1 ahead (src_reg BPF_PSEUDO_CALL)."""
    return insn(0x85, src=1, imm=rel)


def load_trivial(name: str = "tr_trivial", value: int = 0) -> int:
    return prog_load(mov_r0(value) + EXIT, name=name)


def load_with_subprograms(n_sub: int, name: str = "tr_subprogs") -> int:
    """A main program calling `n_sub` subprograms in turn; each one is its own JIT'd
    function (jited_ksyms has n_sub + 1 entries)."""
    # main: n_sub calls, then exit; each call lands on its subprogram after main's exit
    main_len = n_sub + 1
    body = b""
    for k in range(n_sub):
        target = main_len + 2 * k  # subprogram k starts here (2 insns each)
        body += call_pseudo(target - (k + 1))
    body += EXIT
    for k in range(n_sub):
        body += mov_r0(k + 1) + EXIT
    return prog_load(body, name=name)


def jlt_imm(dst: int, imm: int, off: int) -> bytes:
    return insn(0xa5, dst=dst, off=off, imm=imm)  # BPF_JMP | BPF_JLT | BPF_K


def load_spinner(iterations: int, ret: int, name: str) -> int:
    """A socket filter that counts to `iterations` and returns `ret`: run it with
    BPF_PROG_TEST_RUN to keep the CPU inside its JIT image.  Programs that differ only in
    `ret` have the same JIT size (and so can take each other's bpf_prog_pack slot)."""
    body = insn(0xb7, dst=1, imm=0)             # r1 = 0
    body += insn(0x07, dst=1, imm=1)            # loop: r1 += 1
    body += jlt_imm(1, iterations, -2)          # if r1 < N goto loop
    body += mov_r0(ret) + EXIT
    return prog_load(body, name=name)

"""The one x86-64 disassembler: capstone's, built once per process.

Details are on: the views ask each instruction's groups (call, jump) to name targets, and
`disasm_lite` (offsets only, for linear sweeps of JIT images) ignores them at no cost.
"""

from __future__ import annotations

from functools import cache


@cache
def x86_64():
    """A capstone Cs for x86-64 with instruction details."""
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md

"""`textrace callsites PROG`: every call in a program's JIT image, from the recording alone.

For each x86 call: its address, the return address the call pushes, the target and the
symbol there at the program's time (helper, kfunc, subprogram), the BPF instruction it was
compiled from and that instruction's source line.  BPF calls and x86 calls are paired in
order within each function (the x86 JIT emits one call per BPF call that is not inlined);
where the counts differ the instruction comes from the JIT line table instead.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..bpf.btf import Btf
from ..bpf.insn import decode
from ..bpf.prog_info import ProgInfo
from ..history.x86 import x86_64
from ..load import btf_of, find_program
from ..perf.reader import PerfData


@dataclass
class CallSite:
    """A call in a program's JIT code: its address, return address and target (kernel
    virtual addresses; target 0 for an indirect call), with the BPF call it was JIT'd from."""

    ip: int
    ret: int
    target: int
    symbol: str | None
    insn: int | None           # xlated BPF instruction index
    source: str | None         # "file:line" from line_info and BTF
    line: str | None           # the source text

    def to_dict(self) -> dict:
        """The site as a JSON object (--json), field for field."""
        return dict(self.__dict__)


def callsites(data: PerfData, spec: str) -> list[CallSite]:
    """Every call instruction of program `spec` (id, tag or name), targets named as of its
    load: what a callchain's return addresses inside the program point back to."""
    import capstone
    info, (history, prog) = find_program(data, spec)
    t = prog.loaded_ns if prog.loaded_ns is not None else 0
    btf = btf_of(data, info)
    insns = decode(info.xlated_insns) if info.xlated_insns else []
    # the BPF instruction range of each function: subprograms start at call targets
    starts = sorted({0, *(i.call_target() for i in insns if i.call_target() is not None)})
    md = x86_64()
    jlines = list(info.jited_line_info)
    out: list[CallSite] = []
    for k, (addr, _n, code) in enumerate(info.funcs()):
        lo = starts[k] if k < len(starts) else None
        hi = starts[k + 1] if k + 1 < len(starts) else None
        bpf_calls = [i.index for i in insns if i.is_call and lo is not None
                     and i.index >= lo and (hi is None or i.index < hi)]
        x86 = [i for i in md.disasm(code, addr) if i.group(capstone.CS_GRP_CALL)]
        paired = len(bpf_calls) == len(x86)
        for n, ins in enumerate(x86):
            try:
                target = int(ins.op_str, 16)
            except ValueError:
                target = 0  # an indirect call
            sym = history.symbol(target, t) if target else None
            insn = bpf_calls[n] if paired else _insn_by_line(info, jlines, ins.address)
            source, text = _source(info, btf, insn)
            out.append(CallSite(ins.address, ins.address + ins.size, target,
                                str(sym) if sym else None, insn, source, text))
    return out


def _insn_by_line(info: ProgInfo, jlines: list[int], ip: int) -> int | None:
    k = bisect.bisect_right(jlines, ip) - 1
    return info.line_info[k].insn_off if 0 <= k < len(info.line_info) else None


def _source(info: ProgInfo, btf: Btf | None, insn: int | None):
    """The line_info entry covering BPF instruction `insn`: ("file:line", source text)."""
    if insn is None or btf is None or not info.line_info:
        return None, None
    offs = [li.insn_off for li in info.line_info]
    k = bisect.bisect_right(offs, insn) - 1
    if k < 0:
        return None, None
    li = info.line_info[k]
    return f"{btf.string_at(li.file_name_off)}:{li.line}", btf.string_at(li.line_off).strip()

"""`textrace annotate PROG`: a BPF program's JIT code with the BPF instructions and source
lines it came from, and where the recording's samples fell, from the recording alone.

The kernel keeps, per line_info entry, the JIT address where that source line's code begins
(jited_line_info), so each x86 instruction belongs to the last line that starts at or
before it, and to that line's BPF instructions.  Samples count when their ip lies in the
program while it was alive (the code history's epochs), so another program later loaded at
the same address does not inflate it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..bpf.insn import decode, disassemble
from ..history.x86 import x86_64
from ..perf.bulk import sample_arrays
from ..load import btf_of, find_program
from ..perf.reader import PerfData

@dataclass
class AsmRow:
    """One x86-64 instruction of a JIT image (kernel virtual address, bytes in hex), the
    samples whose ip fell on it, and the BPF instructions and source line it came from."""

    func: int                 # function index: 0 main program, then subprograms
    addr: int
    bytes: str
    asm: str
    samples: int = 0
    percent: float = 0.0
    target: str | None = None  # the symbol a call or jump reaches, as of the program's time
    insns: list[str] = field(default_factory=list)  # BPF instructions starting here
    source: str | None = None  # "file:line" of a source line starting here
    line: str | None = None
    marks: list[str] = field(default_factory=list)  # "tail_call", "poke"

    def to_dict(self) -> dict:
        """The row as a JSON object (--json), field for field."""
        return dict(self.__dict__)


def annotate(data: PerfData, spec: str, live=None) -> tuple[list[AsmRow], int]:
    """The rows, and the number of samples that fell in the program.  `live`: a
    KallsymsReader started earlier."""
    import capstone
    info, (history, prog) = find_program(data, spec, live)
    t = prog.loaded_ns if prog.loaded_ns is not None else 0
    btf = btf_of(data, info)
    insns = decode(info.xlated_insns) if info.xlated_insns else []
    rendered = {insn.index: text for insn, text in disassemble(insns)}
    jlines = list(info.jited_line_info)
    line_starts = {a: k for k, a in enumerate(jlines)}
    insn_offs = [li.insn_off for li in info.line_info]
    tail_insns = {i.index for i in insns if i.is_tail_call}
    pokes = history.pokes  # every TEXT_POKE of the recording, as the history read them
    hits = _samples_in(data, history, prog.id)
    total = sum(hits.values())
    md = x86_64()
    rows: list[AsmRow] = []
    for fi, (addr, n, code) in enumerate(info.funcs()):
        for ins in md.disasm(code, addr):
            row = AsmRow(fi, ins.address, ins.bytes.hex(), f"{ins.mnemonic} {ins.op_str}".strip(),
                         samples=hits.get(ins.address, 0))
            if ins.group(capstone.CS_GRP_CALL) or ins.group(capstone.CS_GRP_JUMP):
                try:
                    dest = int(ins.op_str, 16)
                except ValueError:
                    dest = None  # indirect
                if dest is not None and not addr <= dest < addr + n:  # leaves the function
                    sym = history.symbol(dest, t)
                    row.target = str(sym) if sym is not None else None
            k = line_starts.get(ins.address)
            if k is not None:
                lo = insn_offs[k]
                hi = insn_offs[k + 1] if k + 1 < len(insn_offs) else len(info.xlated_insns) // 8
                row.insns = [f"{i}: {rendered[i]}" for i in range(lo, hi) if i in rendered]
                if btf is not None:
                    li = info.line_info[k]
                    row.source = f"{btf.string_at(li.file_name_off)}:{li.line}"
                    row.line = btf.string_at(li.line_off).strip()
                if tail_insns & set(range(lo, hi)):
                    row.marks.append("tail_call")
            if any(p.addr < ins.address + ins.size and ins.address < p.addr + len(p.new)
                   for p in pokes):
                row.marks.append("poke")
            rows.append(row)
    for row in rows:
        row.percent = round(100.0 * row.samples / total, 2) if total else 0.0
    return rows, total


def _samples_in(data: PerfData, history, prog_id: int) -> Counter:
    """Sample counts by ip, for samples that hit this program while it was alive.  Only
    the ips (no callchains) are read, and only the samples inside the program's address
    ranges are resolved by time (a few of a recording's million)."""
    regions = history.table.regions
    mine = [i for i, r in enumerate(regions) if r.prog_id == prog_id]
    if not mine:
        return Counter()
    s = sample_arrays(data, callchains=False, fields=frozenset({"ip", "time"}))
    inside = np.zeros(len(s), dtype=bool)
    for i in mine:
        inside |= (s.ip >= np.uint64(regions[i].start)) & (s.ip < np.uint64(regions[i].end))
    at = np.flatnonzero(inside)
    if not len(at):
        return Counter()
    ips = s.ip[at]
    ids, _names = history.symbolize(ips, s.time[at].astype(np.int64))
    ips, counts = np.unique(ips[np.isin(ids, mine)], return_counts=True)
    return Counter(dict(zip(ips.tolist(), counts.tolist())))


def line_totals(rows: list[AsmRow]) -> list[tuple[str, str, int]]:
    """Samples per source line: (file:line, text, samples), in program order."""
    out: list[list] = []
    for row in rows:
        if row.source is not None:
            out.append([row.source, row.line, 0])
        if out:
            out[-1][2] += row.samples
    merged: dict[tuple[str, str], int] = {}
    for src, text, n in out:
        merged[(src, text)] = merged.get((src, text), 0) + n
    return [(src, text, n) for (src, text), n in merged.items()]

"""`textrace show ADDR [--at TIME]`: what was at a kernel address, at a time and over time.

Every version of the address (each program or symbol that held it, with its lifetime) is
listed with its bytes and x86-64 disassembly, read from the captured images and moved to
the chosen instant through the recording's TEXT_POKE records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..history.build import build_history
from ..history.code_history import CodeHistory, Image, UnknownCode
from ..perf.abi import RecordType
from ..perf.reader import PerfData
from .progs import capture_outcomes, captured_programs
from .report import kernel_symbols_for

CODE_RECORDS = frozenset({RecordType.KSYMBOL, RecordType.BPF_EVENT, RecordType.TEXT_POKE})


@dataclass
class Version:
    name: str
    kind: str
    start: int
    end: int
    born_ns: int | None
    died_ns: int | None
    prog_id: int | None
    at_ns: int | None          # the instant the bytes below describe
    bytes: str | None          # hex, or None when no image covers it
    insns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def program_images(data: PerfData, programs) -> list[Image]:
    """An image per captured function, stamped with the time its bytes were read (the
    capture's time; the load time for a capture taken at load)."""
    infos = captured_programs(data)
    outcomes = capture_outcomes(data) or {}
    images = []
    for prog in programs:
        info = infos.get(prog.id)
        if info is None:
            continue
        when = outcomes.get(prog.id, {}).get("time") or prog.loaded_ns or 0
        if prog.loaded_ns is not None and when < prog.loaded_ns:
            when = prog.loaded_ns
        for addr, _n, code in info.funcs():
            images.append(Image(addr, code, when, f"bpf:{prog.id}"))
    return images


def load_history(data: PerfData) -> tuple[CodeHistory, list]:
    history, programs = build_history(data.records_by_time(CODE_RECORDS),
                                      kernel=kernel_symbols_for(data))
    history.add_images(program_images(data, programs))
    return history, programs


def _line(history: CodeHistory, insn, t: int) -> str:
    """One instruction; a call or jump to a known symbol says which, as of time t."""
    text = f"{insn.address:#x}: {insn.mnemonic} {insn.op_str}".rstrip()
    if insn.group(1) or insn.group(2):  # CS_GRP_JUMP, CS_GRP_CALL
        try:
            target = int(insn.op_str, 16)
        except ValueError:
            return text
        sym = history.symbol(target, t)
        if sym is not None:
            text += f"  <{sym}>"
    return text


def show(data: PerfData, addr: int, at: int | None = None, length: int = 32) -> list[Version]:
    history, _programs = load_history(data)
    regions = history.versions(addr)
    if at is not None:
        regions = [r for r in regions if r.alive_at(at)]
    out = []
    for r in regions:
        t = at if at is not None else (r.born if r.born is not None else 0)
        n = min(length, r.end - addr)
        try:
            code = history.read(addr, n, t)
            insns = [_line(history, i, t) for i in history.at(t).disassemble(addr, n)]
        except UnknownCode:
            code, insns = None, []
        out.append(Version(r.name, r.kind, r.start, r.end, r.born, r.died, r.prog_id, t,
                           code.hex() if code is not None else None, insns))
    if not out:
        sym = history.symbol(addr, at if at is not None else 0)
        if sym is not None:
            out.append(Version(sym.name, sym.kind, addr - sym.offset, addr - sym.offset, None,
                               None, None, at, None, []))
    return out

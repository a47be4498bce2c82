"""`textrace show ADDR [--at TIME]`: what was at a kernel address, at a time and over time.

Every version of the address (each program or symbol that held it, with its lifetime) is
listed with its bytes and x86-64 disassembly, read from the captured images and moved to
the chosen instant through the recording's TEXT_POKE records.  Poked kernel text with no
region of its own has a version per state between its pokes, read from the pokes' bytes.
A version whose instant falls in a poke's INT3 window is flagged `ambiguous`: the kernel
was mid-way through that poke, and the bytes shown are only the records' order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..history.code_history import INT3_WINDOW_NS, CodeHistory, UnknownCode
from ..load import load_history
from ..perf.reader import PerfData


@dataclass
class Version:
    """One occupant of the address over the recording (a program, out-of-line code, a
    state of poked text): its extent, lifetime (ns) and bytes at `at_ns`."""

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
    ambiguous: bool = False    # at_ns is inside the INT3 window of a poke of these bytes
    pokes: list[dict] = field(default_factory=list)  # those pokes: time, addr, old, new,
                                                     # window [start, end]
    # a free bpf_prog_pack chunk: the change textrace inferred (no record reports it):
    # {"change": "invalidated", "freed": name, "after": ns, "by": ns or None} after a
    # program's free, {"change": "fill"} where nothing was placed yet
    inferred: dict | None = None

    def to_dict(self) -> dict:
        """The version as a JSON object (--json), field for field."""
        return dict(self.__dict__)


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


def _read(history: CodeHistory, addr: int, n: int, t: int, window_ns: int):
    """(hex bytes or None, instruction lines, ambiguous, the pokes making it so).  With no
    image of all n bytes, those a poke of the address carries."""
    poked = [p.end - addr for p in history.pokes_at(addr)]
    for k in [n, *sorted((m for m in poked if m < n), reverse=True)]:
        try:
            got = history.read_exact(addr, k, t, window_ns)
            insns = [_line(history, i, t) for i in history.at(t).disassemble(addr, k)]
            break
        except UnknownCode:
            continue
    else:
        return None, [], False, []
    n = k
    pokes = [{"time": p.time, "addr": p.addr, "old": p.old.hex(), "new": p.new.hex(),
              "window": [w.start, w.end]}
             for w in got.windows for p in w.pokes if p.addr < addr + n and addr < p.end]
    return got.data.hex(), insns, got.ambiguous, pokes


def show(data: PerfData, addr: int, at: int | None = None, length: int = 32,
         window_ns: int = INT3_WINDOW_NS, live=None) -> list[Version]:
    """Every version of `addr` (kernel virtual address), or those alive at `at` (ns, the
    recording's clock).  `live`: a KallsymsReader started earlier."""
    history, _programs = load_history(data, live=live, at=addr)
    regions = history.versions(addr)
    if at is not None:
        regions = [r for r in regions if r.alive_at(at)]
    out = []
    for r in regions:
        t = at if at is not None else (r.born if r.born is not None else 0)
        n = min(length, r.end - addr)
        code, insns, ambiguous, pokes = _read(history, addr, n, t, window_ns)
        out.append(Version(r.name, r.kind, r.start, r.end, r.born, r.died, r.prog_id, t,
                           code, insns, ambiguous, pokes))
    out += _fill_versions(history, addr, at, length, regions)
    out.sort(key=lambda v: -1 if v.born_ns is None else v.born_ns)
    if not out:
        out = _static_versions(history, addr, at, length, window_ns)
    return out


def _fill_versions(history: CodeHistory, addr: int, at: int | None, length: int,
                   regions) -> list[Version]:
    """Free bpf_prog_pack chunks at addr with --at: the fill then, if no region held it
    (without --at the versions are the code that was there, as before)."""
    if at is None or regions:
        return []
    layout = history.pack_layout()
    if layout is None or layout.pack_of(addr) is None:
        return []
    times = [at]
    out, seen = [], set()
    for t in times:
        f = layout.fill_at(addr, t)
        if f is None or (f.since, f.until) in seen:
            continue
        seen.add((f.since, f.until))
        n = min(length, f.end - addr)
        insns = [f"{addr + k:#x}: int3" for k in range(n)]
        if f.freed is not None:
            inferred = {"change": "invalidated", "freed": f.freed.name,
                        "after": f.interval[0], "by": f.interval[1]}
        else:
            inferred = {"change": "fill"}
        out.append(Version("[bpf_prog_pack free]", "pack_free", f.start, f.end, f.since,
                           f.until, f.freed.prog_id if f.freed else None, t,
                           (b"\xcc" * n).hex(), insns, inferred=inferred))
    return out


def _static_versions(history: CodeHistory, addr: int, at: int | None, length: int,
                     window_ns: int) -> list[Version]:
    """Kernel or module text (no region of its own): with --at, the bytes then; without,
    one version per state its pokes left, each shown at an instant outside every INT3
    window (the bytes are known there whatever the kernel's timing)."""
    sym = history.symbol(addr, at if at is not None else 0)
    if sym is None:
        return []
    start = addr - sym.offset
    n = length
    pokes = history.pokes_at(addr)
    if at is not None:
        code, insns, ambiguous, hits = _read(history, addr, n, at, window_ns)
        return [Version(sym.name, sym.kind, start, start, None, None, None, at, code, insns,
                        ambiguous, hits)]
    if not pokes:
        return [Version(sym.name, sym.kind, start, start, None, None, None, None, None, [])]
    out = []
    times = [p.time for p in pokes]
    bounds = [None, *times, None]
    for i, (born, died) in enumerate(zip(bounds, bounds[1:])):
        if i == 0:
            t = history.window_of(pokes[0], window_ns).start - 1
        else:
            w = history.window_of(pokes[i - 1], window_ns)
            t = w.end + 1
            if died is not None:
                t = min(t, died - 1)
        code, insns, ambiguous, hits = _read(history, addr, n, t, window_ns)
        out.append(Version(sym.name, sym.kind, start, start, born, died, None, t, code, insns,
                           ambiguous, hits))
    return out

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

from ..errors import FormatError
from ..history.build import build_history, kernel_code_images, unreported_windows
from ..perf.private import Kind
from ..recorded import recorded
from ..history.code_history import INT3_WINDOW_NS, CodeHistory, Image, UnknownCode
from ..history.packs import build_layout
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
    ambiguous: bool = False    # at_ns is inside the INT3 window of a poke of these bytes
    pokes: list[dict] = field(default_factory=list)  # those pokes: time, addr, old, new,
                                                     # window [start, end]
    # a free bpf_prog_pack chunk: the change textrace inferred (no record reports it):
    # {"change": "invalidated", "freed": name, "after": ns, "by": ns or None} after a
    # program's free, {"change": "fill"} where nothing was placed yet
    inferred: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def program_images(data: PerfData, programs, infos: dict | None = None) -> list[Image]:
    """An image per captured function, stamped with the time its bytes were read (the
    capture's time; the load time for a capture taken at load).  `infos`: the
    captured_programs() already read, if any."""
    infos = captured_programs(data) if infos is None else infos
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


def code_records(data: PerfData):
    """The KSYMBOL, BPF_EVENT and TEXT_POKE records in time order.  From a file whose
    records are located in bulk, the program records (10k for 5000 programs) are read as
    perf.bulk.CodeEvents without the record classes, and merged by time with the TEXT_POKE
    records; else every one is decoded (compressed, pipe-mode or salvaged data)."""
    from ..perf.bulk import code_events, located
    found = located(data) if not data.salvage else None
    if found is None:
        return data.records_by_time(CODE_RECORDS)
    import heapq

    import numpy as np
    offsets, kinds = found
    wanted = np.isin(kinds, [RecordType.KSYMBOL, RecordType.BPF_EVENT])
    programs = code_events(data, offsets[wanted])
    pokes = data.records_by_time(frozenset({RecordType.TEXT_POKE}))
    return heapq.merge(programs, pokes, key=lambda r: r.time or 0)


def load_history(data: PerfData, *, infos: dict | None = None,
                 live=None) -> tuple[CodeHistory, list]:
    """The recording's code history: its records, the captured programs' images, the
    kernel code the recorder read, and its inferred changes with their intervals.
    `infos`: captured_programs() if already read; `live`: a KallsymsReader started
    earlier (kernel_symbols_for())."""
    rec = recorded(data)
    kernel = kernel_symbols_for(data, live) if live is not None else kernel_symbols_for(data)
    history, programs = build_history(code_records(data), kernel=kernel,
                                      inferred=unreported_windows(rec.unreported))
    history.add_images(program_images(data, programs, infos)
                       + kernel_code_images(rec.kernel_code))
    history.packs = pack_layout(data, history)
    return history, programs


def pack_layout(data: PerfData, history: CodeHistory):
    """The bpf_prog_pack layout of a recording textrace made (None for others: without
    the recorder's reads no pack extent is known)."""
    entries = [e for lines in recorded(data).decoded(Kind.PACKS) for e in lines]
    if not entries:
        return None
    images: dict[int, list] = {}
    for im in history.images:
        if im.source.startswith("bpf:"):
            images.setdefault(int(im.source[4:]), []).append((im.addr, im.data))
    try:
        return build_layout(history.table.regions, entries, images)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FormatError(f"textrace's bpf_prog_pack entries are malformed ({type(e).__name__}: "
                          f"{e})", file=data.path, field="textrace.packs") from None


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
    history, _programs = load_history(data, live=live)
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
    layout = history.packs
    if layout is None or at is None or regions or layout.pack_of(addr) is None:
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

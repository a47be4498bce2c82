"""BPF programs over time, from the KSYMBOL and BPF_EVENT records of a recording.

The kernel announces a program load as one KSYMBOL per JIT'd function (main program, then
subprograms) followed by BPF_EVENT(PROG_LOAD) with the id and tag, all from the loading task
on one CPU; an unload is the same sequence with KSYMBOL's UNREGISTER flag and PROG_UNLOAD
(kernel/events/core.c, perf_event_bpf_event).  So a program's functions are the KSYMBOLs
that its BPF_EVENT closes, on the same CPU and thread.  BPF trampolines and dispatchers are
announced as BPF KSYMBOLs too, with no BPF_EVENT: they are out-of-line code, not programs
(their names are bpf_trampoline_<key> and bpf_dispatcher_<name>; a program's always start
with bpf_prog_).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from ..perf.abi import BpfEventType, KsymbolType, RecordType
from .regions import Region

if TYPE_CHECKING:  # records arrive decoded; the module is not needed to handle them
    from ..perf.records import KsymbolRecord, Record


@dataclass
class JitFunc:
    """One JIT'd function of a program: kernel virtual address, length, ksym name."""

    addr: int
    len: int
    name: str


@dataclass
class Program:
    """A BPF program as the recording saw it.  Times are ns on the recording's clock;
    `loaded_ns` is None for programs loaded before the recording started (synthesized)."""

    id: int
    tag: bytes
    funcs: list[JitFunc] = field(default_factory=list)
    loaded_ns: int | None = None
    unloaded_ns: int | None = None
    synthesized: bool = False

    @property
    def name(self) -> str:
        """The program's name as the kernel gave its ksym: bpf_prog_<tag>_<name>."""
        if not self.funcs:
            return ""
        ksym = self.funcs[0].name
        prefix = f"bpf_prog_{self.tag.hex()}"
        if ksym == prefix:
            return ""  # loaded without a name
        return ksym[len(prefix) + 1:] if ksym.startswith(prefix + "_") else ksym

    def alive_at(self, t: int) -> bool:
        """Whether the program was loaded at t (ns): from its load up to its unload."""
        return (self.loaded_ns is None or self.loaded_ns <= t) and \
            (self.unloaded_ns is None or t < self.unloaded_ns)


@dataclass
class OolSymbol:
    """Out-of-line kernel code announced by KSYMBOL: trampolines, dispatchers, ..."""

    addr: int
    len: int
    name: str
    registered_ns: int | None
    unregistered_ns: int | None = None


def programs_from_records(records: Iterable[Record]) -> tuple[list[Program], list[OolSymbol]]:
    """Programs in load order (an id reused by the kernel starts a new Program), and the
    out-of-line symbols, from records in time order (KSYMBOL and BPF_EVENT records, or
    perf.bulk.CodeEvents; others are passed over)."""
    pending: dict[tuple, list[KsymbolRecord]] = {}
    live: dict[int, Program] = {}
    programs: list[Program] = []
    ool: dict[tuple[int, str], OolSymbol] = {}
    ools: list[OolSymbol] = []
    for rec in records:
        if rec.type == RecordType.KSYMBOL:
            if rec.ksym_type == KsymbolType.BPF and rec.name.startswith("bpf_prog_"):
                pending.setdefault((rec.cpu, rec.tid), []).append(rec)
            else:
                key = (rec.addr, rec.name)
                if rec.unregister:
                    if key in ool:
                        ool.pop(key).unregistered_ns = rec.time
                else:
                    sym = OolSymbol(rec.addr, rec.len, rec.name, rec.time)
                    ool[key] = sym
                    ools.append(sym)
        elif rec.type == RecordType.BPF_EVENT:
            ksyms = pending.pop((rec.cpu, rec.tid), [])
            if rec.event_type == BpfEventType.PROG_LOAD:
                earlier = live.get(rec.prog_id)
                if earlier is not None and earlier.synthesized and rec.time:
                    # enumerated at start and announced live too (a load racing the
                    # recorder's start): one program, loaded at the live record's time
                    earlier.loaded_ns, earlier.synthesized = rec.time, False
                    continue
                prog = Program(rec.prog_id, rec.tag,
                               [JitFunc(k.addr, k.len, k.name) for k in ksyms
                                if not k.unregister],
                               loaded_ns=rec.time)
                # perf synthesizes records for programs loaded before it started; they
                # carry the time 0 (no sample_id) or precede FINISHED_INIT
                prog.synthesized = rec.time in (None, 0)
                if prog.synthesized:
                    prog.loaded_ns = None
                live[rec.prog_id] = prog
                programs.append(prog)
            elif rec.event_type == BpfEventType.PROG_UNLOAD:
                prog = live.pop(rec.prog_id, None)
                if prog is None:  # loaded before the recording and never synthesized
                    prog = Program(rec.prog_id, rec.tag,
                                   [JitFunc(k.addr, k.len, k.name) for k in ksyms])
                    programs.append(prog)
                prog.unloaded_ns = rec.time
    return programs, ools


def regions_of(programs: list[Program], ool: list[OolSymbol]) -> list[Region]:
    """The code regions of programs' functions and out-of-line symbols, with their
    lifetimes."""
    regions = [Region(f.addr, f.addr + f.len, f.name, "bpf", p.loaded_ns, p.unloaded_ns, p.id)
               for p in programs for f in p.funcs]
    regions += [Region(s.addr, s.addr + s.len, s.name, "ool", s.registered_ns,
                       s.unregistered_ns) for s in ool]
    return regions

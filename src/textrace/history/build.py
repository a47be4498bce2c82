"""Build the CodeHistory of a recording: one pass over its records in time order."""

from __future__ import annotations

from ..perf.abi import RecordType
from .code_history import CodeHistory, Image, Poke
from .kallsyms import KernelSymbols
from .programs import OolSymbol, Program, programs_from_records
from .regions import Region, RegionTable


def regions_of(programs: list[Program], ool: list[OolSymbol]) -> list[Region]:
    regions = [Region(f.addr, f.addr + f.len, f.name, "bpf", p.loaded_ns, p.unloaded_ns, p.id)
               for p in programs for f in p.funcs]
    regions += [Region(s.addr, s.addr + s.len, s.name, "ool", s.registered_ns,
                       s.unregistered_ns) for s in ool]
    return regions


def build_history(records, *, kernel: KernelSymbols | None = None,
                  images: list[Image] | None = None) -> tuple[CodeHistory, list[Program]]:
    """`records` in time order (PerfData.records_by_time()).  Returns the history and the
    programs it saw, in load order."""
    pokes: list[Poke] = []

    def tap(recs):
        for r in recs:
            if r.type == RecordType.TEXT_POKE:
                pokes.append(Poke(r.time or 0, r.addr, r.old_bytes, r.new_bytes))
            yield r

    programs, ool = programs_from_records(tap(records))
    history = CodeHistory(RegionTable(regions_of(programs, ool)), kernel, list(images or []),
                          pokes)
    return history, programs

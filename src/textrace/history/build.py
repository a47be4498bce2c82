"""Build the CodeHistory of a recording: one pass over its records in time order."""

from __future__ import annotations

from ..perf.abi import RecordType
from .code_history import CodeHistory, Image, Poke
from .kallsyms import KernelSymbols
from .programs import Program, programs_from_records, regions_of
from .regions import RegionTable


def build_history(records, *, kernel: KernelSymbols | None = None,
                  images: list[Image] | None = None,
                  inferred: dict[tuple[int, int], tuple[int, int]] | None = None,
                  ) -> tuple[CodeHistory, list[Program]]:
    """`records` in time order (PerfData.records_by_time()).  Returns the history and the
    programs it saw, in load order.  `inferred`: the TEXT_POKE records textrace wrote for
    changes the kernel did not report, by (addr, time), with the interval each change
    happened in (unreported_windows)."""
    pokes: list[Poke] = []
    inferred = inferred or {}

    def tap(recs):
        for r in recs:
            if r.type == RecordType.TEXT_POKE:
                t = r.time or 0
                pokes.append(Poke(t, r.addr, r.old_bytes, r.new_bytes,
                                  window=inferred.get((r.addr, t))))
            yield r

    programs, ool = programs_from_records(tap(records))
    history = CodeHistory(RegionTable(regions_of(programs, ool)), kernel, list(images or []),
                          pokes)
    return history, programs


def kernel_code_images(reads) -> list[Image]:
    """The kernel code the recorder read (kcore or the capture program), (addr, time,
    bytes) each, as images as they were at their read time: the base the history replays
    TEXT_POKE records from."""
    return [Image(addr, data, time, "kernel") for addr, time, data in reads]


def unreported_windows(changes) -> dict[tuple[int, int], tuple[int, int]]:
    """(addr, time) of each TEXT_POKE textrace wrote for a change no kernel record reported
    (UNREPORTED entries, dicts) -> (after, seen): the change happened after the old bytes
    were last known and by the record's time."""
    return {(d["addr"], d["seen"]): (d["after"], d["seen"]) for d in changes}

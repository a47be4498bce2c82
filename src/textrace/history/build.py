"""Build the CodeHistory of a recording: one pass over its records in time order."""

from __future__ import annotations

import json

from ..perf.abi import RecordType
from ..perf.private import Kind, PrivateSection, unpack_kernel_code
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


def kernel_code_images(section: PrivateSection | None) -> list[Image]:
    """The kernel code the recorder read (kcore or the capture program), each image as it
    was at its read time: the base the history replays TEXT_POKE records from."""
    if section is None:
        return []
    images = []
    for blob in section.get(Kind.KERNEL_CODE):
        addr, time, data = unpack_kernel_code(blob)
        images.append(Image(addr, data, time, "kernel"))
    return images


def unreported_windows(section: PrivateSection | None) -> dict[tuple[int, int], tuple[int, int]]:
    """(addr, time) of each TEXT_POKE textrace wrote for a change no kernel record reported
    -> (after, seen): the change happened after the old bytes were last known and by the
    record's time."""
    out = {}
    for blob in section.get(Kind.UNREPORTED) if section is not None else ():
        for line in blob.splitlines():
            d = json.loads(line)
            out[(d["addr"], d["seen"])] = (d["after"], d["seen"])
    return out

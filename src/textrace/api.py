"""The scripting entry point: `textrace.open(path)` -> Recording.

    rec = textrace.open("probe.data")
    for r in rec.records():            # every record, in time order
        ...
    rec.samples()                      # numpy arrays, one row per sample
    rec.programs                       # BPF programs seen, with lifetimes and captures
    rec.history.at(t).disassemble(addr, 32)
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterator

from .perf.reader import Attr, PerfData

if TYPE_CHECKING:
    from .history.code_history import CodeHistory
    from .perf.bulk import SampleArrays
    from .perf.records import Record
    from .views.progs import ProgRow


class Recording:
    """A perf.data recording: its events (attrs), features, records, samples, the BPF
    programs it saw and the history of kernel code it describes."""

    def __init__(self, data: PerfData) -> None:
        self.data = data

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, salvage: bool = False) -> Recording:
        """Map a perf.data file (either mode; '-' reads a pipe-mode stream from stdin).
        `salvage`: read up to the damage of a truncated or damaged file, with warnings,
        instead of raising FormatError."""
        return cls(PerfData.open(path, salvage=salvage))

    @property
    def path(self) -> str:
        """The file the recording was read from ("<stdin>" for a pipe)."""
        return self.data.path

    @property
    def attrs(self) -> list[Attr]:
        """The recording's events: each perf_event_attr, the sample ids the kernel gave
        it, and its name when the file has one."""
        return self.data.attrs

    def records(self, *, order: str = "time") -> Iterator[Record]:
        """Every record; `order="time"` as perf delivers them, `"file"` as stored."""
        return self.data.records_by_time() if order == "time" else self.data.records()

    def samples(self) -> SampleArrays:
        """Every SAMPLE as numpy arrays (ip, time, cpu, pid, tid, period, callchains...)."""
        from .perf.bulk import sample_arrays
        return sample_arrays(self.data)

    @cached_property
    def programs(self) -> list[ProgRow]:
        """Every BPF program seen: id, tag, name, type, load/unload times (ns), capture."""
        from .views.progs import prog_rows
        return prog_rows(self.data)

    @cached_property
    def history(self) -> CodeHistory:
        """The versioned kernel code address space: symbol(addr, t), read(addr, n, t),
        at(t).disassemble(addr, n), symbolize(addrs, times) on numpy arrays."""
        from .load import load_history
        return load_history(self.data)[0]

    def feature(self, feature_id: int) -> Any:
        """A header feature section (perf/abi.py's Feature) decoded by its class in
        perf/features.py, or None when the file has none of that kind."""
        return self.data.feature(feature_id)

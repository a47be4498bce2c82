"""The scripting entry point: `textrace.open(path)` -> Recording."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

from .perf.reader import Attr, PerfData

if TYPE_CHECKING:
    from .perf.bulk import SampleArrays
    from .perf.records import Record


class Recording:
    """A perf.data recording: its events (attrs), features and records."""

    def __init__(self, data: PerfData):
        self.data = data

    @classmethod
    def open(cls, path: str | os.PathLike, *, salvage: bool = False) -> "Recording":
        return cls(PerfData.open(path, salvage=salvage))

    @property
    def path(self) -> str:
        return self.data.path

    @property
    def attrs(self) -> list[Attr]:
        return self.data.attrs

    def records(self, *, order: str = "time") -> Iterator[Record]:
        """Every record; `order="time"` as perf delivers them, `"file"` as stored."""
        return self.data.records_by_time() if order == "time" else self.data.records()

    def samples(self) -> "SampleArrays":
        """Every SAMPLE as numpy arrays (ip, time, cpu, pid, tid, period, callchains...)."""
        from .perf.bulk import sample_arrays
        return sample_arrays(self.data)

    def feature(self, feature_id: int):
        return self.data.feature(feature_id)

"""What `textrace record` is asked for (RecordOptions) and what it reports (RecordSummary),
with the clocks and sampling events it knows by name."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..perf import live

CLOCKS = {"realtime": 0, "monotonic": 1, "monotonic_raw": 4, "boottime": 7, "tai": 11}
EVENTS = {"cpu-clock": (live.PERF_TYPE_SOFTWARE, live.SW_CPU_CLOCK),
          "task-clock": (live.PERF_TYPE_SOFTWARE, live.SW_TASK_CLOCK),
          "cycles": (live.PERF_TYPE_HARDWARE, 0), "instructions": (live.PERF_TYPE_HARDWARE, 1)}


@dataclass
class RecordOptions:
    """What `textrace record` was asked (the CLI's flags)."""

    output: str = "perf.data"
    system_wide: bool = False
    duration: float | None = None
    event: str | None = None
    freq: int = 999
    callgraph: bool = False
    clockid: int = CLOCKS["monotonic"]
    command: list[str] = field(default_factory=list)
    ring_pages: int = 1024   # 4 MiB per CPU: a storm of thousands of loads in 0.1 s fits
    round_ms: float = 100.0
    capture: str = "auto"   # "kernel", "user", or "auto": kernel when it loads, else user
    kernel_text: bool = False  # snapshot _text.._etext at the start


@dataclass
class RecordSummary:
    """What a recording saw and kept: records, losses, programs seen and captured, code reads; the
    summary line and RECORD_INFO."""

    output: str
    records: int = 0
    lost: int = 0
    programs_seen: int = 0
    programs_captured: int = 0
    programs_failed: int = 0
    exit_code: int | None = None
    capture: str = "user"            # how programs were captured in this recording
    capture_note: str | None = None  # why auto fell back to user space
    code: dict = field(default_factory=dict)  # CodeReads.summary()
    unreported: int = 0              # code changes no TEXT_POKE reported
    kernel_lost: int = 0             # capture chunks the kernel's ring could not take
    packs: dict = field(default_factory=dict)  # PackWatch.summary()


def clock_ns(clockid: int) -> int:
    """Now on `clockid` (ns), the clock the recording's events use."""
    return time.clock_gettime_ns(clockid)

"""RECORD_INFO at the start and at the end of a recording: what the file's header features
are made from (finish.py builds them from the stream alone)."""

from __future__ import annotations

import os
import platform
import socket
import sys
import time

from ..perf import live
from ..perf.reader import Attr
from ..version import __version__
from .options import RecordOptions, RecordSummary


def start_info(opts: RecordOptions, summary: RecordSummary, attrs: list[Attr],
               wall: int, t0: int) -> dict:
    """RECORD_INFO at the start: what the file's header features are made from."""
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return {
        "capture": summary.capture, "clockid": opts.clockid,
        "hostname": socket.gethostname(), "os_release": platform.release(),
        "version": f"textrace {__version__}", "arch": platform.machine(),
        # perf's "avail" is the highest present cpu + 1
        "nr_cpus_available": os.cpu_count() or 1,
        "nr_cpus_online": len(live.online_cpus()), "total_mem_kb": kib,
        "cmdline": list(sys.argv), "event_names": [a.name or "" for a in attrs],
        "clockid_res_ns": max(1, round(time.clock_getres(opts.clockid) * 1e9)),
        "tod_ns": wall, "clockid_ns": t0}


def end_info(s: RecordSummary) -> dict:
    """RECORD_INFO at the end: the summary's counts."""
    return {
        "packs": s.packs,
        "capture_note": s.capture_note,
        "lost_records": s.lost, "capture_lost_chunks": s.kernel_lost,
        "kernel_code": s.code, "unreported_changes": s.unreported,
        "programs_seen": s.programs_seen, "programs_captured": s.programs_captured,
        "programs_failed": s.programs_failed}

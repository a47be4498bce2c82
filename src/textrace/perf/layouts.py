"""The bodies of the kernel records every reader shares, each declared once.

records.py's classes parse and pack by these; the bulk reader (bulk.py) and the live loops
(the recorder, the daemon) read by them straight from a record's bytes, without a record
object per record and without importing the record classes (a report never needs them,
and their import costs more than reading a report's sideband).  Each is (layout, the name
of each value), in the kernel's order (include/uapi/linux/perf_event.h); a variable tail
(a name, the poked bytes) follows the fixed part where noted.
"""

from __future__ import annotations

import struct

from .header import RECORD_HEADER

Layout = tuple[struct.Struct, tuple[str, ...]]


def layout(fmt: str, names: str) -> Layout:
    """A little-endian body layout and its value names (one per format character)."""
    return struct.Struct("<" + fmt), tuple(names.split())


BODY_AT = RECORD_HEADER.size   # a body starts after its perf_event_header

MMAP = layout("iiQQQ", "pid tid addr len pgoff")                      # then filename[]
LOST = layout("QQ", "id lost")
COMM = layout("ii", "pid tid")                                        # then comm[]
TASK = layout("iiiiQ", "pid ppid tid ptid event_time")                # FORK and EXIT
# maj/min/ino/ino_generation, or a build id (MISC_MMAP_BUILD_ID), in the 24-byte union
MMAP2 = layout("iiQQQ24sII", "pid tid addr len pgoff _union prot flags")  # then filename[]
KSYMBOL = layout("QIHH", "addr len ksym_type flags")                  # then name[]
BPF_EVENT = layout("HHI8s", "event_type flags prog_id tag")
TEXT_POKE = layout("QHH", "addr old_len new_len")                     # then old, new bytes
# perf's own: the reader steps over their payloads by them
COMPRESSED2 = layout("Q", "data_size")              # then zstd bytes, padded to 8
TRACING_DATA = layout("I", "size")                  # `size` bytes follow, outside header.size
AUXTRACE = layout("QQQIiiI", "size aux_offset reference idx tid cpu reserved")  # as well


def first_value(declared: Layout) -> struct.Struct:
    """The layout of a body's first value alone (a payload's `size`, say)."""
    return struct.Struct("<" + declared[0].format.lstrip("<")[0])

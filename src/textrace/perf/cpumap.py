"""perf_record_cpu_map_data, the payload of CPU_MAP records and EVENT_UPDATE(cpus).

A packed u16 encoding type, then: 0 a cpu list {u16 nr; u16 cpu[nr]}, 1 a bitmap of
32-bit or 64-bit words (perf >= 6.0 pads the 64-bit form to 8 bytes), 2 a range.
"""

from __future__ import annotations

import struct

CPUS, MASK, RANGE = 0, 1, 2


def decode_cpu_map(data: bytes) -> list[int] | None:
    """The cpus the map lists, or None when the encoding is unknown or cut short."""
    try:
        (kind,) = struct.unpack_from("<H", data, 0)
        if kind == CPUS:
            (nr,) = struct.unpack_from("<H", data, 2)
            return list(struct.unpack_from(f"<{nr}H", data, 4))
        if kind == MASK:
            nr, long_size = struct.unpack_from("<HH", data, 2)
            if long_size == 4:
                words, bits = struct.unpack_from(f"<{nr}I", data, 6), 32
            elif long_size == 8:
                words, bits = struct.unpack_from(f"<{nr}Q", data, 10), 64
            else:
                return None
            return [i * bits + b for i, w in enumerate(words) for b in range(bits) if w >> b & 1]
        if kind == RANGE:
            any_cpu, _pad, start, end = struct.unpack_from("<BBHH", data, 2)
            return ([-1] if any_cpu else []) + list(range(start, end + 1))
    except struct.error:
        return None
    return None

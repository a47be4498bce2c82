"""struct perf_event_attr: one declared layout for reading and writing.

The struct grew over kernel versions (PERF_ATTR_SIZE_VER0 = 64 ... VER8 = 136 bytes); a file
records the size it was written with, and we keep it so a rewrite is byte-identical.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from ..errors import FormatError
from .abi import ReadFormat, SampleType

# Every field up to VER8 (136 bytes), in order.  Names follow include/uapi/linux/perf_event.h;
# unions are named after their first member plus their common alias.
_LAYOUT = struct.Struct("<IIQQQQQIIQQQQIiQIHHIIQQ")
_NAMES = (
    "type", "size", "config", "sample_period", "sample_type", "read_format", "flags",
    "wakeup_events", "bp_type", "config1", "config2", "branch_sample_type",
    "sample_regs_user", "sample_stack_user", "clockid", "sample_regs_intr",
    "aux_watermark", "sample_max_stack", "reserved_2", "aux_sample_size", "reserved_3",
    "sig_data", "config3",
)
ATTR_SIZE_MAX = _LAYOUT.size  # 136
ATTR_SIZE_VER0 = 64

# Bits of the flags word (the bitfield after read_format).
_FLAG_BITS = {
    "disabled": 0, "inherit": 1, "pinned": 2, "exclusive": 3, "exclude_user": 4,
    "exclude_kernel": 5, "exclude_hv": 6, "exclude_idle": 7, "mmap": 8, "comm": 9,
    "freq": 10, "inherit_stat": 11, "enable_on_exec": 12, "task": 13, "watermark": 14,
    "mmap_data": 17, "sample_id_all": 18, "exclude_host": 19, "exclude_guest": 20,
    "exclude_callchain_kernel": 21, "exclude_callchain_user": 22, "mmap2": 23,
    "comm_exec": 24, "use_clockid": 25, "context_switch": 26, "write_backward": 27,
    "namespaces": 28, "ksymbol": 29, "bpf_event": 30, "aux_output": 31, "cgroup": 32,
    "text_poke": 33, "build_id": 34, "inherit_thread": 35, "remove_on_exec": 36,
    "sigtrap": 37,
}
PRECISE_IP_SHIFT = 15


def flag_mask(*names: str) -> int:
    """The flags word with the named bits set, e.g. flag_mask("sample_id_all", "ksymbol")."""
    mask = 0
    for name in names:
        mask |= 1 << _FLAG_BITS[name]
    return mask


@dataclass(frozen=True, kw_only=True)
class EventAttr:
    """A perf_event_attr.  `size` is the struct size as written in the file."""

    type: int = 0
    size: int = 128
    config: int = 0
    sample_period: int = 0  # or sample_freq when the freq flag is set
    sample_type: int = 0
    read_format: int = 0
    flags: int = 0
    wakeup_events: int = 0  # or wakeup_watermark
    bp_type: int = 0
    config1: int = 0  # or bp_addr, kprobe_func, uprobe_path
    config2: int = 0  # or bp_len, kprobe_addr, probe_offset
    branch_sample_type: int = 0
    sample_regs_user: int = 0
    sample_stack_user: int = 0
    clockid: int = 0
    sample_regs_intr: int = 0
    aux_watermark: int = 0
    sample_max_stack: int = 0
    reserved_2: int = 0
    aux_sample_size: int = 0
    reserved_3: int = 0
    sig_data: int = 0
    config3: int = 0

    def flag(self, name: str) -> bool:
        """One of the attr's bitfield flags by its kernel name ("disabled", "mmap",
        "ksymbol", "text_poke", ...); KeyError for a name the layout does not have."""
        return bool(self.flags >> _FLAG_BITS[name] & 1)

    @property
    def precise_ip(self) -> int:
        """The skid constraint, 0 (arbitrary skid) to 3 (must have 0 skid): perf's :p modifiers."""
        return self.flags >> PRECISE_IP_SHIFT & 3

    @property
    def sample_id_all(self) -> bool:
        """Whether non-SAMPLE records carry the sample_id trailer (perf/sampleid.py)."""
        return self.flag("sample_id_all")

    @property
    def sample_types(self) -> SampleType:
        """sample_type as flags: which fields a SAMPLE body holds, in the kernel's order."""
        return SampleType(self.sample_type)

    @property
    def read_formats(self) -> ReadFormat:
        """read_format as flags: the layout of READ records and PERF_SAMPLE_READ values."""
        return ReadFormat(self.read_format)

    def flag_names(self) -> list[str]:
        """The names of the flag bits set, in bit order."""
        return [n for n, bit in _FLAG_BITS.items() if self.flags >> bit & 1]

    @classmethod
    def parse(cls, buf, offset: int = 0, *, file: str | None = None) -> "EventAttr":
        """Read an attr whose own `size` field says how long it is (>= VER0)."""
        if offset + 8 > len(buf):
            raise FormatError("perf_event_attr cut short", file=file, offset=offset,
                              field="attr.size")
        size = struct.unpack_from("<I", buf, offset + 4)[0]
        if size < ATTR_SIZE_VER0 or size > 4096:
            raise FormatError(f"perf_event_attr size {size} is not a known attr size",
                              file=file, offset=offset + 4, field="attr.size")
        if offset + size > len(buf):
            raise FormatError(f"perf_event_attr of {size} bytes runs past the end",
                              file=file, offset=offset, field="attr")
        raw = bytes(buf[offset:offset + min(size, ATTR_SIZE_MAX)])
        raw = raw.ljust(ATTR_SIZE_MAX, b"\0")
        return cls(**dict(zip(_NAMES, _LAYOUT.unpack(raw))))

    def pack(self) -> bytes:
        """The attr as `size` bytes: truncated or zero-padded from the full layout."""
        full = _LAYOUT.pack(*(getattr(self, n) for n in _NAMES))
        return full[:self.size].ljust(self.size, b"\0")

    def replace(self, **changes) -> "EventAttr":
        """A copy with the given fields changed (the attr is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field but the reserved ones, plus `flag_names`: for JSON output."""
        d = {n: getattr(self, n) for n in _NAMES if not n.startswith("reserved")}
        d["flag_names"] = self.flag_names()
        return d

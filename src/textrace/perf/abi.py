"""Numbers from perf's ABI: record types, sample_type bits, read_format bits, feature ids.

Sources of truth: include/uapi/linux/perf_event.h (kernel records) and
tools/perf/util/event.h, tools/lib/perf/include/perf/event.h, tools/perf/util/header.h
(perf's own records and header features).
"""

from __future__ import annotations

import enum

PERF_MAGIC = b"PERFILE2"


class RecordType(enum.IntEnum):
    """PERF_RECORD_*: the kernel's (1..63) and perf's user-space ones (64..)."""

    MMAP = 1
    LOST = 2
    COMM = 3
    EXIT = 4
    THROTTLE = 5
    UNTHROTTLE = 6
    FORK = 7
    READ = 8
    SAMPLE = 9
    MMAP2 = 10
    AUX = 11
    ITRACE_START = 12
    LOST_SAMPLES = 13
    SWITCH = 14
    SWITCH_CPU_WIDE = 15
    NAMESPACES = 16
    KSYMBOL = 17
    BPF_EVENT = 18
    CGROUP = 19
    TEXT_POKE = 20
    AUX_OUTPUT_HW_ID = 21
    # perf's synthesized records, never produced by the kernel
    HEADER_ATTR = 64
    HEADER_EVENT_TYPE = 65
    HEADER_TRACING_DATA = 66
    HEADER_BUILD_ID = 67
    FINISHED_ROUND = 68
    ID_INDEX = 69
    AUXTRACE_INFO = 70
    AUXTRACE = 71
    AUXTRACE_ERROR = 72
    THREAD_MAP = 73
    CPU_MAP = 74
    STAT_CONFIG = 75
    STAT = 76
    STAT_ROUND = 77
    EVENT_UPDATE = 78
    TIME_CONV = 79
    HEADER_FEATURE = 80
    COMPRESSED = 81
    FINISHED_INIT = 82
    COMPRESSED2 = 83       # perf 6.16: COMPRESSED with the compressed length (data_size)
    BPF_METADATA = 84      # perf 6.16: a program's bpf_metadata_* variables, as strings
    SCHEDSTAT_CPU = 85     # perf 6.19 (perf sched stats): /proc/schedstat per CPU
    SCHEDSTAT_DOMAIN = 86  # ... and per scheduling domain


USER_RECORD_START = 64


class SampleType(enum.IntFlag):
    """PERF_SAMPLE_*: which fields a SAMPLE record (and the sample_id trailer) carries."""

    IP = 1 << 0
    TID = 1 << 1
    TIME = 1 << 2
    ADDR = 1 << 3
    READ = 1 << 4
    CALLCHAIN = 1 << 5
    ID = 1 << 6
    CPU = 1 << 7
    PERIOD = 1 << 8
    STREAM_ID = 1 << 9
    RAW = 1 << 10
    BRANCH_STACK = 1 << 11
    REGS_USER = 1 << 12
    STACK_USER = 1 << 13
    WEIGHT = 1 << 14
    DATA_SRC = 1 << 15
    IDENTIFIER = 1 << 16
    TRANSACTION = 1 << 17
    REGS_INTR = 1 << 18
    PHYS_ADDR = 1 << 19
    AUX = 1 << 20
    CGROUP = 1 << 21
    DATA_PAGE_SIZE = 1 << 22
    CODE_PAGE_SIZE = 1 << 23
    WEIGHT_STRUCT = 1 << 24


class ReadFormat(enum.IntFlag):
    """PERF_FORMAT_* bits of attr.read_format: what a read() or PERF_SAMPLE_READ holds."""

    TOTAL_TIME_ENABLED = 1 << 0
    TOTAL_TIME_RUNNING = 1 << 1
    ID = 1 << 2
    GROUP = 1 << 3
    LOST = 1 << 4


# attr.branch_sample_type bit that adds hw_idx to a sample's branch stack
BRANCH_SAMPLE_HW_INDEX = 1 << 17

# header.misc bits
MISC_CPUMODE_MASK = 0x7
MISC_KERNEL = 1
MISC_USER = 2
MISC_HYPERVISOR = 3
MISC_GUEST_KERNEL = 4
MISC_GUEST_USER = 5
MISC_COMM_EXEC = 1 << 13       # COMM
MISC_SWITCH_OUT = 1 << 13      # SWITCH / SWITCH_CPU_WIDE
MISC_SWITCH_OUT_PREEMPT = 1 << 14
MISC_MMAP_BUILD_ID = 1 << 14   # MMAP2 carries a build id instead of maj/min/ino
MISC_EXACT_IP = 1 << 14        # SAMPLE


class KsymbolType(enum.IntEnum):
    """PERF_RECORD_KSYMBOL_TYPE_*: what a KSYMBOL record announces (OOL since 5.9, with TEXT_POKE)."""

    UNKNOWN = 0
    BPF = 1
    OOL = 2  # out-of-line code: trampolines, dispatchers, ftrace/kprobe insns


KSYMBOL_FLAG_UNREGISTER = 1 << 0


class BpfEventType(enum.IntEnum):
    """PERF_BPF_EVENT_*: the type of a BPF_EVENT record (since 5.1)."""

    UNKNOWN = 0
    PROG_LOAD = 1
    PROG_UNLOAD = 2


class Feature(enum.IntEnum):
    """HEADER_* feature bits of perf.data (tools/perf/util/header.h)."""

    RESERVED = 0
    TRACING_DATA = 1
    BUILD_ID = 2
    HOSTNAME = 3
    OSRELEASE = 4
    VERSION = 5
    ARCH = 6
    NRCPUS = 7
    CPUDESC = 8
    CPUID = 9
    TOTAL_MEM = 10
    CMDLINE = 11
    EVENT_DESC = 12
    CPU_TOPOLOGY = 13
    NUMA_TOPOLOGY = 14
    BRANCH_STACK = 15
    PMU_MAPPINGS = 16
    GROUP_DESC = 17
    AUXTRACE = 18
    STAT = 19
    CACHE = 20
    SAMPLE_TIME = 21
    MEM_TOPOLOGY = 22
    CLOCKID = 23
    DIR_FORMAT = 24
    BPF_PROG_INFO = 25
    BPF_BTF = 26
    COMPRESSED = 27
    CPU_PMU_CAPS = 28
    CLOCK_DATA = 29
    HYBRID_TOPOLOGY = 30
    PMU_CAPS = 31
    CPU_DOMAIN_INFO = 32  # perf 7.x (perf sched stats): scheduling domains per CPU
    E_MACHINE = 33        # perf 7.x: the ELF e_machine and e_flags of the recorded machine
    CLN_SIZE = 34         # perf 7.x: the cache line size in bytes


FEATURE_BITS = 256  # adds_features is a 256-bit bitmap in the file header


def record_type_name(rtype: int) -> str:
    """perf's name without the PERF_RECORD_ prefix; unknown kinds as UNKNOWN_<n>."""
    try:
        return RecordType(rtype).name
    except ValueError:
        return f"UNKNOWN_{rtype}"

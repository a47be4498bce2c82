"""The events the recorder opens: per CPU, one dummy software event carrying the sideband
(KSYMBOL, BPF_EVENT, TEXT_POKE, MMAP2, COMM, FORK/EXIT) into its ring, and an optional
sampling event sharing that ring."""

from __future__ import annotations

from typing import Callable

from ..errors import TextraceError
from ..perf import live, rawrecord
from ..perf.abi import RecordType, SampleType as S
from ..perf.attr import EventAttr, flag_mask
from ..perf.reader import Attr
from ..perf.rawrecord import record_type
from ..perf.sampleid import id_trailer_size
from .options import EVENTS, RecordOptions

SIDEBAND_TYPE = S.TID | S.TIME | S.CPU | S.IDENTIFIER
TRIMMED = (RecordType.KSYMBOL, RecordType.BPF_EVENT, RecordType.TEXT_POKE)
SAMPLE_TYPE = S.IDENTIFIER | S.IP | S.TID | S.TIME | S.CPU | S.PERIOD
# a sample's ip and time at their fixed places in SAMPLE_TYPE's layout (a callchain, when
# asked for, comes after them)
sample_ip = rawrecord.sample_u64_reader(SAMPLE_TYPE, S.IP)
_sample_time = rawrecord.sample_u64_reader(SAMPLE_TYPE, S.TIME)
KERNEL_SPACE = 0xffff800000000000


def sideband_attr(opts: RecordOptions) -> EventAttr:
    """The per-CPU dummy event for code changes: KSYMBOL, BPF_EVENT, TEXT_POKE, MMAP2, COMM, task,
    with sample_id_all."""
    return EventAttr(
        type=live.PERF_TYPE_SOFTWARE, size=128, config=live.SW_DUMMY, sample_period=1,
        # wake the reader when a quarter of the ring is used; captures do not wait on
        # it (the id scanner races the loader), and a wakeup per record costs a CPU
        sample_type=SIDEBAND_TYPE, wakeup_events=opts.ring_pages * 1024,
        clockid=opts.clockid,
        flags=flag_mask("disabled", "mmap", "comm", "task", "mmap2", "comm_exec",
                        "ksymbol", "bpf_event", "text_poke", "sample_id_all",
                        "use_clockid", "watermark", "exclude_guest"))


def sample_attr(opts: RecordOptions) -> EventAttr | None:
    """The sampling event the user asked for (-e, -F, -g), or None."""
    if not opts.event:
        return None
    if opts.event not in EVENTS:
        raise TextraceError(f"unknown event {opts.event!r}; known: "
                            f"{', '.join(EVENTS)}", field="-e")
    etype, config = EVENTS[opts.event]
    st = SAMPLE_TYPE | (S.CALLCHAIN if opts.callgraph else 0)
    return EventAttr(type=etype, size=128, config=config, sample_period=opts.freq,
                     sample_type=st, clockid=opts.clockid, sample_max_stack=127,
                     flags=flag_mask("disabled", "freq", "sample_id_all", "use_clockid",
                                     "exclude_guest"))


def open_events(opts: RecordOptions, fds: list[int], rings: list[live.Ring]
                ) -> tuple[list[Attr], int]:
    """Open the events on every online CPU, disabled; their fds and rings are appended to
    `fds` and `rings` as they open.  Returns the attrs (the side-band one first) and the
    size of the side-band records' sample_id trailer."""
    sb = sideband_attr(opts)
    sa = sample_attr(opts)
    sb_ids, sa_ids = [], []
    for cpu in live.online_cpus():
        fd = live.perf_event_open(sb, -1, cpu)
        fds.append(fd)
        ring = live.Ring(fd, cpu, opts.ring_pages)
        rings.append(ring)
        sb_ids.append(live.event_id(fd))
        if sa is not None:
            sfd = live.perf_event_open(sa, -1, cpu)
            fds.append(sfd)
            live.set_output(sfd, fd)
            sa_ids.append(live.event_id(sfd))
    attrs = [Attr(sb, tuple(sb_ids), "dummy")]
    if sa is not None:
        attrs.append(Attr(sa, tuple(sa_ids), opts.event))
    return attrs, id_trailer_size(sb)


def time_reader(opts: RecordOptions) -> Callable[[bytes], int]:
    """A record's time: a sample's own (only the sample attr samples), else its sample_id
    trailer's (the side-band attr's)."""
    sideband_time = rawrecord.trailer_time_reader(sideband_attr(opts))

    def time_of(raw: bytes) -> int:
        if record_type(raw) == RecordType.SAMPLE:
            return _sample_time(raw)
        return sideband_time(raw)
    return time_of

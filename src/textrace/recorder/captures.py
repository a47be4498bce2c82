"""Programs captured while recording: the capture program loaded (kernel), or programs read
through the fds user space took on them (user)."""

from __future__ import annotations

import os
import time

from ..bpf.btf import read_btf
from ..bpf.prog_info import ALL_ARRAYS, read_prog_info
from ..capture import ProgCapture
from ..errors import TextraceError
from .image_watch import ImageWatch
from .options import RecordSummary, clock_ns
from .stream import CaptureLedger


def start_kernel_capture(mode: str, summary: RecordSummary):
    """The capture program, loaded (kernel or auto mode), else None; auto falls back to
    user space and says why in `summary`."""
    if mode == "user":
        return None
    from ..bpf.capture.loader import CaptureProgram
    try:
        kernel = CaptureProgram()
        summary.capture = "kernel"
        summary.capture_note = f"kernel capture: {kernel.variant_note}"
        return kernel
    except (TextraceError, OSError) as e:
        why = e.message + (f" ({e.file})" if e.file else "") \
            if isinstance(e, TextraceError) else str(e)
        if mode == "kernel":
            raise TextraceError(f"kernel capture unavailable: {why}",
                                field="--capture kernel") from None
        summary.capture_note = (
            f"kernel capture unavailable: {why}; capturing from user space instead, "
            f"which misses programs that live microseconds (--capture user: no warning)")
        return None


def read_held(held_fds: dict[int, int], ledger: CaptureLedger, watch: ImageWatch,
              clockid: int) -> None:
    """Read the programs whose fds we hold, then let them go."""
    for prog_id, fd in list(held_fds.items()):
        cap = ledger.open(prog_id, b"", time.monotonic())
        try:
            cap.info = read_prog_info(fd, ALL_ARRAYS)
            cap.tag = cap.info.tag
            cap.method, cap.reason = "user", None
            cap.time = clock_ns(clockid)
            watch.watch(cap.info, cap.time)
            if cap.info.info["btf_id"]:
                try:
                    cap.btf = read_btf(cap.info.info["btf_id"])
                except TextraceError:
                    pass
            ledger.captured(cap)
        except TextraceError as e:
            ledger.failed(cap, str(e))
        finally:
            os.close(fd)
            del held_fds[prog_id]


def take_kernel_capture(kc, ledger: CaptureLedger, watch: ImageWatch) -> None:
    """A program the capture program copied at its load."""
    info = kc.prog_info()
    cap = ProgCapture(kc.prog_id, info.tag, info, "kernel", None, kc.time, kc.btf)
    watch.watch(info, kc.time)
    ledger.captured(cap)

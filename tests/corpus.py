"""Real recordings made with this machine's perf at test time, each built once per session.

Every entry is named and keeps the exact perf command that made it, so a failing comparison
can be reproduced by hand (`Recording.shell` is that command as one shell line).  Entries
are built lazily: a test that needs one file pays for that file only.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

BUSY = "import time\nt = time.time()\nwhile time.time() - t < {s}: sum(range(500))\n"

# A recording that takes longer than this is a hung perf, not a slow machine.
RECORD_TIMEOUT_S = 60


def busy(seconds: float) -> list[str]:
    """A CPU-bound Python workload; sys.executable is the real interpreter, not a shim."""
    return [sys.executable, "-c", BUSY.format(s=seconds)]


PROBE = ["bpftool", "feature", "probe", "kernel"]

# name -> (perf record options, workload).  "-q -o FILE" is added; pipe mode writes to stdout.
# Each stays under ~2 s of wall time on the 2-CPU CI machine.
RECIPES: dict[str, tuple[list[str], list[str]]] = {
    # per-task sampling: COMM/MMAP2/FORK/EXIT of one process tree, SAMPLE with ip/tid/time
    "cpu-clock": (["-e", "cpu-clock", "-F", "999"], busy(0.3)),
    # no samples at all: the sideband of every task on every CPU (dummy event)
    "sideband": (["-e", "dummy", "-a"], ["sleep", "0.1"]),
    # the rarer sideband kinds: SWITCH_CPU_WIDE, NAMESPACES, CGROUP
    "sideband-switch": (["-e", "dummy", "-a", "--switch-events", "--namespaces",
                         "--all-cgroups"], ["sleep", "0.1"]),
    # system-wide: SAMPLE carries CPU, synthesized records for every existing task
    "system-wide": (["-a", "-e", "cpu-clock", "-F", "999"], busy(0.3)),
    # frame-pointer callchains (PERF_SAMPLE_CALLCHAIN with context markers)
    "callchain": (["-e", "cpu-clock", "-F", "999", "-g"], busy(0.3)),
    # user regs and a 4 KiB user stack copy per sample: big records, ADDR and DATA_SRC too
    "dwarf": (["-e", "cpu-clock", "-F", "299", "--call-graph", "dwarf,4096"], busy(0.2)),
    # zstd COMPRESSED records (perf 6.1 compresses everything after the synthesized records)
    "compressed": (["-z", "-a", "-e", "cpu-clock", "-F", "999"], busy(0.3)),
    # CLOCK_MONOTONIC sample times and the CLOCKID/CLOCK_DATA features
    "clockid": (["--clockid", "monotonic", "-e", "cpu-clock", "-F", "999"], busy(0.3)),
    # pipe mode: HEADER_ATTR/FEATURE records instead of a file header
    "pipe": (["-e", "cpu-clock", "-F", "999"], busy(0.3)),
    # BPF programs loaded and freed by the hundred: KSYMBOL, BPF_EVENT, BPF_PROG_INFO, BPF_BTF
    "bpf-probe": (["-a", "-e", "cpu-clock", "-F", "99"], PROBE),
    # the same workload with sideband only
    "bpf-sideband": (["-a", "-e", "dummy"], PROBE),
    # two sampling events: SAMPLE records need PERF_SAMPLE_ID to find their attr
    "multi-event": (["-e", "cpu-clock,task-clock", "-F", "999"], busy(0.3)),
}

PIPE_MODE = {"pipe"}


@dataclass(frozen=True)
class Recording:
    """One corpus file: where it is and the perf command that wrote it."""
    name: str
    path: Path
    command: tuple[str, ...]   # argv of perf record
    pipe: bool                 # written by `perf record -o -` to stdout, redirected to path

    @property
    def shell(self) -> str:
        line = shlex.join(self.command)
        return f"{line} > {shlex.quote(str(self.path))}" if self.pipe else line


def perf_env() -> dict[str, str]:
    """perf without a pager, in the C locale, whatever the caller's environment holds."""
    return dict(os.environ, PAGER="cat", PERF_PAGER="cat", LC_ALL="C")


class Corpus:
    """The session's recordings under `root`; `entry(name)` makes a file the first time."""

    names = tuple(RECIPES)

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self._made: dict[str, Recording] = {}

    def entry(self, name: str) -> Recording:
        """The recording `name`, made now if this session has not made it yet."""
        if name not in RECIPES:
            raise KeyError(f"no corpus entry {name!r}; known: {', '.join(RECIPES)}")
        with self._lock:
            if name not in self._made:
                self._made[name] = self._make(name)
            return self._made[name]

    __getitem__ = entry

    def path(self, name: str) -> Path:
        return self.entry(name).path

    @property
    def commands(self) -> dict[str, tuple[str, ...]]:
        """perf commands of the entries made so far."""
        return {name: rec.command for name, rec in self._made.items()}

    def _make(self, name: str) -> Recording:
        opts, workload = RECIPES[name]
        out = self.root / f"{name}.data"
        pipe = name in PIPE_MODE
        cmd = ("perf", "record", "-q", "-o", "-" if pipe else str(out), *opts, "--",
               *workload)
        # The file holds kernel addresses: 0600 from the start, for pipe mode too.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            r = subprocess.run(cmd, stdout=fd if pipe else subprocess.DEVNULL,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               env=perf_env(), timeout=RECORD_TIMEOUT_S)
        finally:
            os.close(fd)
        if r.returncode != 0:
            raise RuntimeError(f"corpus entry {name!r}: `{shlex.join(cmd)}` exited "
                               f"{r.returncode}:\n{r.stderr.decode(errors='replace')[-2000:]}")
        os.chmod(out, 0o600)
        if out.stat().st_size == 0:
            raise RuntimeError(f"corpus entry {name!r}: `{shlex.join(cmd)}` wrote nothing")
        return Recording(name=name, path=out, command=cmd, pipe=pipe)

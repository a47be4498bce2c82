"""Real recordings made with this machine's perf at test time, built once per session.

Each entry is named and records the perf command that made it, so a failing comparison
can be reproduced by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BUSY = "import time\nt = time.time()\nwhile time.time() - t < {s}: sum(range(500))\n"


def busy(seconds: float) -> list[str]:
    return [sys.executable, "-c", BUSY.format(s=seconds)]


# name -> (perf record options, workload); "-o FILE" is added, pipe mode writes to stdout
RECIPES: dict[str, tuple[list[str], list[str]]] = {
    "cpu-clock": (["-e", "cpu-clock", "-F", "999"], busy(0.3)),
    "sideband": (["-e", "dummy", "-a"], ["sleep", "0.1"]),
    "system-wide": (["-a", "-e", "cpu-clock", "-F", "999"], busy(0.3)),
    "callchain": (["-e", "cpu-clock", "-F", "999", "-g"], busy(0.3)),
    "dwarf": (["-e", "cpu-clock", "-F", "299", "--call-graph", "dwarf,4096"], busy(0.2)),
    "compressed": (["-z", "-a", "-e", "cpu-clock", "-F", "999"], busy(0.3)),
    "clockid": (["--clockid", "monotonic", "-e", "cpu-clock", "-F", "999"], busy(0.3)),
    "pipe": (["-e", "cpu-clock", "-F", "999"], busy(0.3)),
    "bpf-probe": (["-a", "-e", "cpu-clock", "-F", "99"], ["bpftool", "feature", "probe",
                                                          "kernel"]),
    "multi-event": (["-e", "cpu-clock,task-clock", "-F", "999"], busy(0.3)),
}


class Corpus:
    def __init__(self, root: Path):
        self.root = root
        self.commands: dict[str, list[str]] = {}
        self._made: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        """The recording `name`, made now if this session has not made it yet."""
        if name not in self._made:
            self._made[name] = self._make(name)
        return self._made[name]

    def _make(self, name: str) -> Path:
        opts, workload = RECIPES[name]
        out = self.root / f"{name}.data"
        env = dict(os.environ, PAGER="cat")
        if name == "pipe":
            cmd = ["perf", "record", "-q", "-o", "-", *opts, "--", *workload]
            with open(out, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                r = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, env=env)
        else:
            cmd = ["perf", "record", "-q", "-o", str(out), *opts, "--", *workload]
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=env)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): "
                               f"{r.stderr.decode(errors='replace')[-2000:]}")
        self.commands[name] = cmd
        return out
